"""Figure 6, serving: throughput and p50/p99 latency of the handed-off quickstart model, batch 1, at
concurrency 1 and 8: the generated config (dynamic batching) vs the same config without dynamic
batching vs the SavedModel called in-process by TensorFlow.

Both Triton models are put into service by the hand-off itself (``ServingOptions(dynamic_batching=False)``
for the second), on one local serving node (bundled tritonserver, python backend). The client is a
closed loop over tritonclient's asyncio gRPC client: each of the N concurrent clients sends its next
request when the previous one answered (perf_analyzer is not available: the tritonclient wheel ships
only a placeholder for it). In-process TensorFlow runs in its own process (bench/_inproc.py) with N
threads. Windows of the variants are interleaved; the client, the server and its python-backend stub
share the machine's two cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench._serving import REPO, closed_loop, request, serving_node
from bench._stats import Figure, Result

NAME = "serving"
CONCURRENCY = (1, 8)
VARIANTS = ("generated", "no dynamic batching", "in-process TF")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serving-reps", type=int, help="windows per variant and concurrency (default 3, quick 1)")
    parser.add_argument("--serving-seconds", type=float, help="seconds per window (default 5, quick 1)")


def run(args: argparse.Namespace, quick: bool) -> Result:
    from hpc.serving.config import ServingOptions
    from hpc.serving.handoff import handoff

    reps = args.serving_reps or (1 if quick else 3)
    seconds = args.serving_seconds or (1.0 if quick else 5.0)
    result = Result(NAME, quick)
    result.facts["perf_analyzer"] = shutil.which("perf_analyzer") or "not available"
    with serving_node("serving") as node:
        handoff(node.savedmodel, "generated", node.repo, "python", grpc_url=node.grpc_url)
        handoff(node.savedmodel, "nodb", node.repo, "python", grpc_url=node.grpc_url,
                options=ServingOptions(dynamic_batching=False))
        result.facts["generated_config"] = " ".join(node.repo.config_file("generated").read_text().split())
        inputs = request(node.savedmodel)
        runs: dict[tuple[str, int], list[dict[str, float]]] = {(v, c): [] for v in VARIANTS for c in CONCURRENCY}
        for rep in range(reps):
            order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                if variant == "in-process TF":
                    for line in _inproc(node.savedmodel, seconds):
                        runs[(variant, int(line["concurrency"]))].append(line)
                    continue
                model = "generated" if variant == "generated" else "nodb"
                for concurrency in CONCURRENCY:
                    runs[(variant, concurrency)].append(closed_loop(node.grpc_url, model, inputs, concurrency,
                                                                    seconds))
    for concurrency in CONCURRENCY:
        for metric, unit in (("throughput", "req/s"), ("p50_ms", "ms"), ("p99_ms", "ms")):
            subject = [r[metric] for r in runs[("generated", concurrency)]]
            for baseline in VARIANTS[1:]:
                result.add(Figure(f"c={concurrency} {metric.removesuffix('_ms')}", unit, "generated config", subject,
                                  baseline, [r[metric] for r in runs[(baseline, concurrency)]]))
    result.facts["window_s"] = seconds
    result.notes.append("batch 1, gRPC; in-process TF = the SavedModel's serving signature called from N threads")
    return result


def _inproc(savedmodel: Path, seconds: float) -> list[dict[str, float]]:
    out = subprocess.run([sys.executable, "-m", "bench._inproc", str(savedmodel), str(seconds),
                          *map(str, CONCURRENCY)], cwd=REPO, capture_output=True, text=True, check=True,
                         timeout=600)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
