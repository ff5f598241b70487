"""Child process: ``python -m hpc.serving.reference SAVEDMODEL SIGNATURE OUT.npz [ROWS]``.

Imports TensorFlow (that is why it is a separate process), feeds seeded random inputs to the
signature and stores inputs and outputs as parity samples (see :mod:`hpc.serving.samples`).
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    savedmodel, key, out = Path(argv[0]), argv[1], Path(argv[2])
    rows = int(argv[3]) if len(argv) > 3 else 8
    import numpy as np
    import tensorflow as tf

    from hpc.serving.samples import save_samples

    sig = tf.saved_model.load(str(savedmodel)).signatures[key]
    rng = np.random.default_rng(0)
    inputs = {}
    for name, spec in sig.structured_input_signature[1].items():
        shape = [rows if d is None else d for d in spec.shape.as_list()]
        dtype = spec.dtype.as_numpy_dtype
        if np.issubdtype(dtype, np.floating):
            inputs[name] = rng.normal(size=shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            inputs[name] = rng.integers(0, 10, size=shape).astype(dtype)
        elif dtype == np.bool_:
            inputs[name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            print(f"cannot make sample inputs of dtype {spec.dtype.name} for '{name}'", file=sys.stderr)
            return 2
    outputs = {k: v.numpy() for k, v in sig(**{k: tf.constant(v) for k, v in inputs.items()}).items()}
    save_samples(out, inputs, outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
