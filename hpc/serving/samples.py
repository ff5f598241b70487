"""Parity samples: inputs and the trained model's outputs for them, compared with what Triton answers.

Stored as ``.npz`` with keys ``in/<name>`` and ``out/<name>``. A training script may store them at
export time (:func:`save_samples`) inside the SavedModel, at ``assets.extra/hpc-tf-samples.npz``
(TF's place for extra files, copied with the model). When absent, :func:`compute_samples` runs the
SavedModel's signature with TensorFlow **in a child process** (``python -m hpc.serving.reference``)
on seeded random inputs: a Keras 3 export is bit-identical to ``model.predict``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.errors import ServingError

SAMPLES_IN_SAVEDMODEL = Path("assets.extra") / "hpc-tf-samples.npz"
REFERENCE_TIMEOUT_S = 300
SAMPLE_ROWS = 8


@dataclass(frozen=True)
class Samples:
    inputs: dict[str, Any]  # name -> numpy array
    outputs: dict[str, Any]


def save_samples(path: Path, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **{f"in/{k}": v for k, v in inputs.items()}, **{f"out/{k}": v for k, v in outputs.items()})
    os.replace(tmp, path)


def load_samples(path: Path) -> Samples:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = {k[3:]: data[k] for k in data.files if k.startswith("in/")}
            outputs = {k[4:]: data[k] for k in data.files if k.startswith("out/")}
    except (OSError, ValueError) as err:
        raise ServingError(f"cannot read parity samples {path}: {err}") from None
    if not inputs or not outputs:
        raise ServingError(f"parity samples {path} need in/<name> and out/<name> arrays")
    return Samples(inputs, outputs)


def compute_samples(savedmodel: Path, signature_key: str, output: Path, python: str = sys.executable,
                    rows: int = SAMPLE_ROWS) -> Samples:
    """Run the SavedModel on seeded random inputs in a TF child process; store and return the samples."""
    argv = [python, "-m", "hpc.serving.reference", str(savedmodel), signature_key, str(output), str(rows)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=REFERENCE_TIMEOUT_S, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise ServingError(f"computing reference outputs took over {REFERENCE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise ServingError(f"running the SavedModel for reference outputs failed (exit {done.returncode}):\n{tail}")
    return load_samples(output)


def compare(expected: dict[str, Any], got: dict[str, Any], tolerance: float) -> tuple[bool, float, str]:
    """(ok, max abs difference, detail). ``tolerance`` 0 means bit-identical values."""
    import numpy as np

    worst = 0.0
    for name, want in expected.items():
        if name not in got:
            return False, float("inf"), f"output '{name}' missing from the answer"
        have = np.asarray(got[name])
        if have.shape != want.shape:
            return False, float("inf"), f"output '{name}' has shape {have.shape}, expected {want.shape}"
        if want.size:
            diff = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64))))
            worst = max(worst, diff)
    ok = worst <= tolerance
    return ok, worst, f"max abs diff {worst:g} ({'<=' if ok else '>'} tolerance {tolerance:g})"
