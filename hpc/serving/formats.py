"""What a version directory holds for each format, built into a staging directory.

- ``python``: ``model.py`` (:mod:`hpc.serving.triton_model`) + ``model.savedmodel/`` (Triton's python
  backend runs the SavedModel with TF from the serving node's venv; works on any Triton).
- ``savedmodel``: ``model.savedmodel/`` (platform tensorflow_savedmodel; Triton ≤ 25.02).
- ``onnx``: ``model.onnx`` converted by tf2onnx in a child process (TF never enters this process).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from hpc.errors import ServingError
from hpc.serving.config import MODEL_FILE, PYTHON_SAVEDMODEL, Format
from hpc.serving.signature import Signature

ONNX_OPSET = 17
CONVERT_TIMEOUT_S = 600


def triton_model_source() -> Path:
    return Path(__file__).with_name("triton_model.py")


def build_version(stage: Path, savedmodel: Path, signature: Signature, fmt: Format,
                  python: str = sys.executable) -> None:
    """Fill ``stage`` (an empty directory) with the files format ``fmt`` serves."""
    if fmt == "python":
        shutil.copy2(triton_model_source(), stage / MODEL_FILE["python"])
        shutil.copytree(savedmodel, stage / PYTHON_SAVEDMODEL)
    elif fmt == "savedmodel":
        shutil.copytree(savedmodel, stage / MODEL_FILE["savedmodel"])
    elif fmt == "onnx":
        convert_to_onnx(savedmodel, signature.key, stage / MODEL_FILE["onnx"], python=python)
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


def _quiet_tf_env() -> dict[str, str]:
    import os

    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
