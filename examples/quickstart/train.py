"""A small Keras model trained on synthetic data with MultiWorkerMirroredStrategy.

Written the way a researcher writes it for one machine plus a strategy: no Slurm, no ports,
no GPU ids. hpc-tf's bootstrap provides TF_CONFIG and each worker's GPUs; this file is
unchanged whether it runs as 1 worker or as many workers across nodes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


def synthetic_regression(n: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    w = rng.normal(size=(features, 1)).astype("float32")
    y = np.tanh(x @ w) + 0.05 * rng.normal(size=(n, 1)).astype("float32")
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch size")
    parser.add_argument("--output", default=os.environ.get("HPC_TF_OUTPUT_DIR", "output"))
    args = parser.parse_args()

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    keras.utils.set_random_seed(42)
    x, y = synthetic_regression(8192, 16, seed=0)
    with strategy.scope():
        model = keras.Sequential([
            keras.Input(shape=(16,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1),
        ])
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=2)

    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    if task.get("index", 0) == 0:  # only the chief writes the model
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        model.export(str(out / "export"))
        (out / "history.json").write_text(json.dumps(history.history))
        print(f"final loss {history.history['loss'][-1]:.5f}; SavedModel in {out / 'export'}")


if __name__ == "__main__":
    main()
