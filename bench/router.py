"""Figure 7, the router: what the router (``hpc-tf serve router``, the Python data plane) adds to a request
(p50/p99 latency) and costs in throughput, against the same requests sent straight to Triton, side by
side in one run, gRPC and HTTP, batch 1, concurrency 1 and 8.

One local serving node (bundled tritonserver, python backend) serves the quickstart model handed off with
``--format auto`` and the generated config (the served path of bench/serving.py's *generated*);
the router runs in front of it as its own process with that node as its one replica. The client is the
closed loop of ``hpc-tf serve bench`` (tritonclient's asyncio gRPC and HTTP clients). Windows of direct and
routed traffic alternate; client, router, server and the python-backend stub share the machine's two
cores, so the router's CPU is taken from Triton's: the throughput ratio is what a router on the
serving node's own host costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench._serving import closed_loop, serving_node
from bench._stats import Figure, Result

NAME = "router"
CONCURRENCY = (1, 8)
PROTOCOLS = ("grpc", "http")
MODEL = "quickstart"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--router-reps", type=int, help="windows per path, protocol and concurrency "
                                                        "(default 3, quick 1)")
    parser.add_argument("--router-seconds", type=float, help="seconds per window (default 5, quick 1)")


def run(args: argparse.Namespace, quick: bool) -> Result:
    from hpc.serving.handoff import handoff
    from hpc.serving.server import read_endpoint

    reps = args.router_reps or (1 if quick else 3)
    seconds = args.router_seconds or (1.0 if quick else 5.0)
    result = Result(NAME, quick)
    with serving_node("router") as node:
        record = handoff(node.savedmodel, MODEL, node.repo, "auto", grpc_url=node.grpc_url)
        result.facts["format"] = record.format
        direct = read_endpoint(node.repo)
        router, endpoint = _start_router(node.repo.root, f"{direct.host}:{direct.http_port}:{direct.grpc_port}")
        try:
            urls = {("direct", "grpc"): direct.grpc_url, ("direct", "http"): f"{direct.host}:{direct.http_port}",
                    ("router", "grpc"): f"{endpoint['host']}:{endpoint['grpc_port']}",
                    ("router", "http"): f"{endpoint['host']}:{endpoint['http_port']}"}
            runs: dict[tuple[str, str, int], list[dict[str, float]]] = {
                (path, p, c): [] for path in ("direct", "router") for p in PROTOCOLS for c in CONCURRENCY}
            for rep in range(reps):
                for path in ("direct", "router") if rep % 2 == 0 else ("router", "direct"):
                    for protocol in PROTOCOLS:
                        for concurrency in CONCURRENCY:
                            runs[(path, protocol, concurrency)].append(closed_loop(
                                node.repo, urls[(path, protocol)], MODEL, concurrency, seconds, protocol))
        finally:
            router.terminate()
            router.wait(30)
    for protocol in PROTOCOLS:
        for concurrency in CONCURRENCY:
            for metric, unit in (("p50_ms", "ms"), ("p99_ms", "ms"), ("throughput", "req/s")):
                result.add(Figure(f"{protocol} c={concurrency} {metric.removesuffix('_ms')}", unit, "via router",
                                  [r[metric] for r in runs[("router", protocol, concurrency)]], "direct to Triton",
                                  [r[metric] for r in runs[("direct", protocol, concurrency)]]))
    result.facts["window_s"] = seconds
    result.notes.append("batch 1; added latency = router minus direct (paired windows); one replica")
    return result


def _start_router(repo: Path, replica: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen([sys.executable, "-m", "hpc.cli", "serve", "router", "--repository", str(repo),
                             "--replica", replica, "--site", "local"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("router ready"):
        proc.kill()
        raise RuntimeError(f"the router did not start: {line!r}")
    return proc, json.loads((repo / ".hpc-tf" / "router.json").read_text())
