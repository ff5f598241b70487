"""``--format auto``: the hand-off picks the format that serves a model fastest, and says why.

The runtime's own time per request decides: tf2onnx's conversion in ONNX Runtime when it converts, matches
the trained model's outputs within the ONNX tolerance and runs a request faster than TensorFlow does; else
``python`` (the SavedModel in TensorFlow, in the python backend), which is exact by construction. ONNX
Runtime serves as ``onnx`` (hpc-tf's backend inside tritonserver, no python stub: :mod:`hpc.serving.
native_backend`) where the service can load it, else as ``python-onnx`` (in the python backend, as TF is).
The two runtimes are timed side by side in one child process (:mod:`hpc.serving.runtime_timing`). The
choice and its reasons go into the hand-off record (``choice``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc.errors import HpcTfError, ServingError
from hpc.serving import native_backend
from hpc.serving.config import BACKEND, Format, ServingOptions
from hpc.serving.formats import convert_to_onnx, onnx_parity
from hpc.serving.samples import Samples
from hpc.serving.signature import Signature

if TYPE_CHECKING:
    from hpc.serving.server import Endpoint

TIMING_TIMEOUT_S = 300


@dataclass
class Choice:
    format: Format
    why: str
    onnx: Path | None = None  # the converted model, when an ONNX format was chosen (built once, not twice)
    request_us: dict[str, float] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"format": self.format, "why": self.why, "request_us": self.request_us,
                "onnxruntime_parity": self.parity}


def choose_format(savedmodel: Path, signature: Signature, samples: Samples, samples_file: Path, work: Path,
                  options: ServingOptions | None = None, python: str = sys.executable,
                  onnx_format: Format = "python-onnx") -> Choice:
    """Convert, check parity, time both runtimes; ``work`` (an existing directory) receives the ONNX file.
    ``onnx_format``: how ONNX Runtime would serve (onnx where the service has hpc-tf's backend)."""
    onnx = work / "model.onnx"
    try:
        convert_to_onnx(savedmodel, signature.key, onnx, python=python)
        parity = onnx_parity(onnx, samples)
    except HpcTfError as err:
        return Choice("python", f"{onnx_format} is not possible: {err.reason}")
    if not parity["ok"]:
        return Choice("python", f"{onnx_format} misses the parity tolerance ({parity['detail']})", parity=parity)
    threads = (options or ServingOptions()).tf_threads
    measured = time_runtimes(savedmodel, signature, onnx, samples_file, threads, python)
    times: dict[str, float] = {"python": measured["python"], onnx_format: measured["python-onnx"]}
    fast, slow = sorted(times, key=lambda f: times[f])
    why = (f"{fast} ran a request in {times[fast]:g} µs, {slow} in {times[slow]:g} µs "
           f"({times[slow] / max(times[fast], 1e-3):.1f}× slower); ONNX parity {parity['detail']}")
    chosen: Format = onnx_format if fast == onnx_format else "python"
    return Choice(chosen, why, onnx if chosen == onnx_format else None, times, parity)


def onnx_serving_format(node: Endpoint | None) -> Format:
    """How ONNX Runtime would serve: ``onnx`` where the serving node has the onnxruntime backend, or, with no
    node registered to ask (a router's replicas, --grpc-url), where this host can build hpc-tf's (replicas run
    this venv); else ``python-onnx``."""
    if node is not None and node.backends is not None:
        return "onnx" if BACKEND["onnx"] in node.backends else "python-onnx"
    try:
        native_backend.onnxruntime_backend()
    except ServingError:
        return "python-onnx"
    return "onnx"


def time_runtimes(savedmodel: Path, signature: Signature, onnx: Path, samples_file: Path, threads: int,
                  python: str = sys.executable) -> dict[str, float]:
    argv = [python, "-m", "hpc.serving.runtime_timing", str(savedmodel), signature.key, str(onnx), str(samples_file),
            str(threads), "1" if signature.batched else "0"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMING_TIMEOUT_S, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise ServingError(f"timing the model's runtimes took over {TIMING_TIMEOUT_S} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise ServingError(f"timing the model's runtimes failed (exit {done.returncode}):\n{tail}")
    return {str(k): float(v) for k, v in json.loads(lines[-1]).items()}
