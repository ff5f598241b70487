"""The larger model of bench/serving.py, exported in its own process (TensorFlow stays out of the benchmark's):

    python -m bench._cnn OUT    → a SavedModel at OUT

A small image CNN (28×28×1 → two 3×3 convolutions, 16 and 32 filters → global average pool → 10 classes),
seeded weights, not trained: serving cost depends on the graph, not on what the weights learned.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1), name="image"),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    model.export(sys.argv[1], verbose=False)


if __name__ == "__main__":
    main()
