"""What a version directory holds for each format, built into a staging directory.

- ``python``: ``model.py`` (:mod:`hpc.serving.triton_model`) + ``model.savedmodel/`` (Triton's python
  backend runs the SavedModel with TF from the serving node's venv; works on any Triton).
- ``savedmodel``: ``model.savedmodel/`` (platform tensorflow_savedmodel; Triton ≤ 25.02).
- ``python-onnx``: ``model.py`` (:mod:`hpc.serving.triton_onnx_model`) + ``model.onnx`` (the python backend
  runs tf2onnx's conversion with ONNX Runtime: no TF in the stub, far less per-call overhead).
- ``onnx``: ``model.onnx`` converted by tf2onnx in a child process (TF never enters this process).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpc.errors import ServingError
from hpc.serving.config import MODEL_FILE, PYTHON_ONNX, PYTHON_SAVEDMODEL, Format
from hpc.serving.samples import Samples, compare
from hpc.serving.signature import Signature

ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-5  # max abs difference accepted for onnx formats (tf2onnx+ORT was bit-identical in the lab)
CONVERT_TIMEOUT_S = 600


def triton_model_source(fmt: Format = "python") -> Path:
    """The model.py a python-backend format runs."""
    return Path(__file__).with_name("triton_onnx_model.py" if fmt == "python-onnx" else "triton_model.py")


def build_version(stage: Path, savedmodel: Path, signature: Signature, fmt: Format,
                  python: str = sys.executable, onnx: Path | None = None) -> None:
    """Fill ``stage`` (an empty directory) with the files format ``fmt`` serves; ``onnx``: a conversion already
    made (and checked) for this SavedModel, copied instead of converting again."""
    if fmt == "python":
        shutil.copy2(triton_model_source(), stage / MODEL_FILE["python"])
        shutil.copytree(savedmodel, stage / PYTHON_SAVEDMODEL)
    elif fmt == "savedmodel":
        shutil.copytree(savedmodel, stage / MODEL_FILE["savedmodel"])
    elif fmt in ("onnx", "python-onnx"):
        if onnx is not None:
            shutil.copy2(onnx, stage / PYTHON_ONNX)
        else:
            convert_to_onnx(savedmodel, signature.key, stage / PYTHON_ONNX, python=python)
        if fmt == "python-onnx":
            shutil.copy2(triton_model_source(fmt), stage / MODEL_FILE[fmt])
    else:
        raise ServingError(f"unknown serving format '{fmt}'")


def convert_to_onnx(savedmodel: Path, signature_key: str, output: Path, python: str = sys.executable) -> None:
    argv = [python, "-m", "tf2onnx.convert", "--saved-model", str(savedmodel), "--signature_def", signature_key,
            "--opset", str(ONNX_OPSET), "--output", str(output)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, check=False,
                              env=_quiet_tf_env())
    except subprocess.TimeoutExpired:
        raise ServingError(f"tf2onnx did not finish in {CONVERT_TIMEOUT_S} s: {' '.join(argv)}") from None
    if done.returncode != 0 or not output.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise ServingError(f"converting {savedmodel} to ONNX failed (exit {done.returncode}):\n{tail}",
                           hint="is tf2onnx installed (the serving extra)?")


def onnx_parity(onnx: Path, samples: Samples) -> dict[str, Any]:
    """Run a converted model with onnxruntime in this process on the parity samples: ok, max_abs_diff,
    tolerance, detail."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ServingError(f"onnxruntime is not importable ({err})", hint="install the serving extra") from None
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, samples.inputs), strict=True))
    ok, worst, detail = compare(samples.outputs, got, ONNX_TOLERANCE)
    return {"ok": ok, "max_abs_diff": worst, "tolerance": ONNX_TOLERANCE, "detail": detail}


def _quiet_tf_env() -> dict[str, str]:
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
