"""perf_analyzer, the C++ load generator Triton ships, for bench/serving.py: a closed loop whose client costs
the server's two cores far less than a Python one.

Obtained the way a user would: ``pip download`` of the tritonclient 2.51.0 wheel from PyPI into the user's
cache (``$XDG_CACHE_HOME/hpc-tf/bench``), the binary alone unzipped from it (never installed: the venv keeps
its own tritonclient). 2.51.0 is the newest wheel that carries the binary and runs on glibc 2.36 (the later
perf_analyzer wheels need 2.38). It links ``libcudart.so.12``, which the nvidia-pytriton wheel has under a
hashed name: a symlink of the plain name, in a directory on LD_LIBRARY_PATH, is all it needs (no GPU is used).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = "2.51.0"
_MEMBER = f"tritonclient-{VERSION}.data/data/bin/perf_analyzer"
# perf_analyzer reports a measurement once the last 3 windows agree within -s percent; so wide a bound makes the
# first 3 windows the measurement, i.e. a fixed time like the other variants' windows
_WINDOWS = 3
_STABILITY_PERCENT = "1000"


@dataclass(frozen=True)
class PerfAnalyzer:
    binary: Path
    libdir: Path  # holds the libcudart.so.12 symlink

    def env(self) -> dict[str, str]:
        return {**os.environ, "LD_LIBRARY_PATH": str(self.libdir)}


def perf_analyzer(work: Path) -> PerfAnalyzer:
    """The cached binary (downloaded on first use) and a libcudart symlink directory under ``work``."""
    from hpc.resources import user_cache_dir
    from hpc.serving.server import Bundle

    binary = _cached_binary(user_cache_dir() / "bench" / f"perf_analyzer-{VERSION}")
    cudart = sorted(Bundle.find().libs_dir.glob("libcudart-*.so.12*"))
    if not cudart:
        raise RuntimeError(f"no libcudart-*.so.12* in {Bundle.find().libs_dir}: perf_analyzer cannot start")
    libdir = work / "perf_analyzer-lib"
    libdir.mkdir(exist_ok=True)
    link = libdir / "libcudart.so.12"
    link.unlink(missing_ok=True)
    link.symlink_to(cudart[0])
    pa = PerfAnalyzer(binary, libdir)
    check = subprocess.run([str(binary), "--version"], env=pa.env(), capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        raise RuntimeError(f"{binary} does not run here: {(check.stderr or check.stdout).strip()[:300]}")
    return pa


def _cached_binary(cache: Path) -> Path:
    """``cache/perf_analyzer``, fetched into a temp directory beside it and renamed into place whole."""
    binary = cache / "perf_analyzer"
    if binary.is_file():
        return binary
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent, prefix=f".{cache.name}-") as tmp:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, f"tritonclient=={VERSION}"], check=True, capture_output=True, timeout=600)
        wheel = next(Path(tmp).glob(f"tritonclient-{VERSION}-*.whl"))
        with zipfile.ZipFile(wheel) as archive, archive.open(_MEMBER) as src, \
                open(staging / "perf_analyzer", "wb") as dst:
            shutil.copyfileobj(src, dst)
        (staging / "perf_analyzer").chmod(0o755)
        try:
            staging.rename(cache)
        except OSError:
            if not binary.is_file():  # not another run that got there first
                raise
    return binary


def input_data(path: Path, inputs: Mapping[str, Any], batched: bool) -> Path:
    """``inputs`` (numpy arrays of one request) as perf_analyzer's ``--input-data`` JSON; a batching model's
    shapes leave out the batch dimension, which perf_analyzer's ``-b 1`` adds."""
    request = {name: {"content": array.reshape(-1).tolist(), "shape": list(array.shape[1:] if batched else
                                                                            array.shape)}
               for name, array in inputs.items()}
    path.write_text(json.dumps({"data": [request]}), encoding="utf-8")
    return path


def measure(pa: PerfAnalyzer, url: str, model: str, data: Path, concurrency: int, seconds: float,
            headers: Mapping[str, str], work: Path) -> dict[str, float]:
    """One closed-loop measurement of ``seconds`` at ``concurrency`` (gRPC, batch 1, synchronous calls, one
    thread per client): throughput and latency percentiles, and the server's share of the average request
    (µs, from Triton's statistics). ``headers`` go with every call (the owner's key: perf_analyzer reads the
    model's config and statistics, which the node restricts); they are on its command line, as they are on a
    local tritonserver's, so only for the bench's own throw-away node."""
    report = work / f"pa-{model}-c{concurrency}.csv"
    argv = [str(pa.binary), "-m", model, "-u", url, "-i", "grpc", "-b", "1", "--input-data", str(data),
            "--concurrency-range", f"{concurrency}:{concurrency}",
            "--measurement-interval", str(max(1, round(seconds * 1000 / _WINDOWS))), "-s", _STABILITY_PERCENT,
            "-f", str(report), "--verbose-csv"]
    for name, value in headers.items():
        argv += ["-H", f"{name}:{value}"]
    out = subprocess.run(argv, env=pa.env(), capture_output=True, text=True, timeout=120 + 10 * seconds)
    if out.returncode != 0:
        lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        raise RuntimeError(f"perf_analyzer failed on {model} at c={concurrency}: {' | '.join(lines[-3:])}")
    return parse_csv(report.read_text(encoding="utf-8"))


def parse_csv(text: str) -> dict[str, float]:
    """perf_analyzer's ``-f`` report (one concurrency, ``--verbose-csv``) in the shape of bench/_serving's
    closed loop: ``throughput`` (req/s at batch 1), ``p50_ms``/``p90_ms``/``p99_ms``, and the server's
    average queue, compute and network times in µs."""
    row = next(csv.DictReader(io.StringIO(text)))
    us = {key: float(value) for key, value in row.items() if key != "Concurrency"}
    return {"throughput": us["Inferences/Second"],
            **{f"p{p}_ms": us[f"p{p} latency"] / 1000 for p in (50, 90, 99)},
            "avg_ms": us["Avg latency"] / 1000,
            "network_us": us["Network+Server Send/Recv"], "queue_us": us["Server Queue"],
            "compute_us": us["Server Compute Input"] + us["Server Compute Infer"] + us["Server Compute Output"]}
