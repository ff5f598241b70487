"""What the serving benchmarks share: the quickstart model trained once on this machine, a local Triton
serving node (the tritonserver bundled in nvidia-pytriton, python backend) and a closed-loop gRPC client.
"""

from __future__ import annotations

import asyncio
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


def closed_loop(url: str, model: str, inputs: dict[str, np.ndarray], concurrency: int, seconds: float,
                warmup_s: float = 0.5, protocol: str = "grpc") -> dict[str, float]:
    """``concurrency`` clients, each sending its next request when the previous one answered (tritonclient's
    asyncio client of ``protocol``, grpc or http; binary tensors)."""
    return asyncio.run(_closed_loop(url, model, inputs, concurrency, seconds, warmup_s, protocol))


async def _closed_loop(url: str, model: str, inputs: dict[str, np.ndarray], concurrency: int, seconds: float,
                       warmup_s: float, protocol: str) -> dict[str, float]:
    import tritonclient.grpc.aio as grpcaio
    import tritonclient.http.aio as httpaio
    from tritonclient.utils import np_to_triton_dtype

    triton: Any = grpcaio if protocol == "grpc" else httpaio
    client = triton.InferenceServerClient(url) if protocol == "grpc" else \
        triton.InferenceServerClient(url, conn_limit=concurrency)
    tensors = []
    for name, array in inputs.items():
        tensor = triton.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop = measure_from + seconds

    async def worker() -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop:
                return
            await client.infer(model, tensors)
            if t0 >= measure_from:
                latencies.append((time.perf_counter() - t0) * 1000)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return latency_summary(latencies, time.perf_counter() - measure_from)


def latency_summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {"n": 0, "throughput": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    return {"n": len(ordered), "throughput": len(ordered) / seconds,
            "p50_ms": ordered[len(ordered) // 2], "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}
