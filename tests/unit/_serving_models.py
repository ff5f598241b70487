"""Tiny real Keras 3 SavedModels for the serving tests (made with model.export, like a training script)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def export_mlp(path: Path, seed: int, features: int = 16, outputs: int = 4) -> Path:
    """A 16 -> 8 -> 4 MLP with input name ``features``, exported with signatures serve/serving_default."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(shape=(features,), name="features"),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(outputs),
    ])
    model.export(str(path), verbose=False)
    return path


def predict(savedmodel: Path, x: object) -> object:
    """The SavedModel's own answer (the trained model's outputs), computed with TF in this process."""
    import tensorflow as tf

    sig = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    return sig(features=tf.constant(x))["output_0"].numpy()
