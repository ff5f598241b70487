"""What the serving benchmarks share: the quickstart model trained once on this machine, a local Triton
serving node (the tritonserver bundled in nvidia-pytriton, python backend) and ``hpc-tf serve bench``'s
closed-loop client (hpc.serving.loadtest).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "examples" / "quickstart" / "train.py"
METRICS = ("throughput", "p50_ms", "p90_ms", "p99_ms")  # what a closed loop's window reports


@dataclass
class Node:
    repo: Any  # hpc.serving.repository.Repository
    grpc_url: str
    savedmodel: Path
    train_s: float
    work: Path


@contextmanager
def serving_node(prefix: str) -> Iterator[Node]:
    """Train the quickstart model (1 epoch, one worker, no TF_CONFIG), start a Triton node; stop it after."""
    from hpc.serving.repository import Repository
    from hpc.serving.server import start_local, stop_server

    with tempfile.TemporaryDirectory(prefix=f"hpc-tf-bench-{prefix}-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        env.pop("TF_CONFIG", None)
        subprocess.run([sys.executable, str(QUICKSTART), "--epochs", "1", "--output", str(work / "train")],
                       cwd=work, env=env, check=True, capture_output=True, timeout=600)
        train_s = time.monotonic() - t0
        repo = Repository.at(work / "repo")
        endpoint = start_local(repo)
        try:
            yield Node(repo, endpoint.grpc_url, work / "train" / "export", train_s, work)
        finally:
            stop_server(repo)


def request(savedmodel: Path, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the serving signature, ``batch`` rows."""
    from hpc.serving.signature import read_signature

    rng = np.random.default_rng(seed)
    return {t.name: rng.normal(size=(batch, *t.shape[1:])).astype(t.numpy_dtype)
            for t in read_signature(savedmodel).inputs}


def served_request(repo: Any, url: str, model: str) -> dict[str, Any]:
    """The batch-1 request ``hpc-tf serve bench`` sends ``model`` (hpc.serving.load_inputs: the hand-off's parity
    samples), for a client that needs it spelled out (perf_analyzer's input data)."""
    import tritonclient.grpc as grpcclient

    from hpc.serving.load_inputs import request_inputs

    client = grpcclient.InferenceServerClient(url)
    try:
        return request_inputs(client.get_model_metadata(model, as_json=True), repo, model, 1)[0]
    finally:
        client.close()


def closed_loop(repo: Any, url: str, model: str, concurrency: int, seconds: float,
                protocol: str = "grpc") -> dict[str, float]:
    """``hpc-tf serve bench``'s load test (hpc.serving.loadtest: tritonclient's asyncio client of ``protocol``,
    binary tensors, one warm-up request) at one concurrency for ``seconds``; a failed request stops the run."""
    from hpc.serving.loadtest import DEFAULT_MAX_REQUESTS, BenchSettings, run_bench

    settings = BenchSettings((concurrency,), seconds, protocol, 1, DEFAULT_MAX_REQUESTS)
    level = run_bench(repo, model, settings, url=url).levels[0].to_dict()
    if level["failed"]:
        raise RuntimeError(f"{level['failed']} request(s) to {model} at c={concurrency} failed: {level['errors']}")
    return {key: level[key] for key in METRICS}
