"""The quickstart model (examples/quickstart/train.py: same data, model, optimizer and batch size) with a
per-step timer, for bench/training.py. The example itself stays as it is.

    python _train_timed.py --out DIR [--epochs N] [--keras-fix RUNTIME_DIR]

Writes DIR/steps-<rank>.json: the time between consecutive ends of training batches, measured inside
the process (start-up, TensorFlow import and the first epoch, which traces the step, are excluded).
``--keras-fix`` applies hpc-tf's Keras 3 multi-worker fit fix by hand (keras-team/keras#20585): without
it a hand-written TF_CONFIG with 2 workers cannot run ``model.fit`` at all in this TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
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


class StepTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[list[float]] = []
        self.last = 0.0

    def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
        self.epochs.append([])
        self.last = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        now = time.perf_counter()
        self.epochs[-1].append((now - self.last) * 1000)
        self.last = now


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch size")
    parser.add_argument("--out", required=True)
    parser.add_argument("--keras-fix", help="a run directory's runtime/ (hpc_tf_runtime) to take the fix from")
    args = parser.parse_args()
    if args.keras_fix:
        sys.path.insert(0, args.keras_fix)
        from hpc_tf_runtime import keras_fix

        keras_fix.apply(importlib.import_module(keras_fix.TRAINER_MODULE))

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
    timer = StepTimer()
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0, callbacks=[timer])

    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    rank = int(task.get("index", 0))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = [ms for epoch in timer.epochs[1:] for ms in epoch]  # epoch 0 traces and warms up
    record = {"rank": rank, "workers": strategy.num_replicas_in_sync, "step_ms": steps,
              "first_epoch_ms": sum(timer.epochs[0]) if timer.epochs else None,
              "final_loss": float(history.history["loss"][-1]), "tf_config_set": "TF_CONFIG" in os.environ}
    (out / f"steps-{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
