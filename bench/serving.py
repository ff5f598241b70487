"""Figure 6, serving: throughput and p50/p99 latency at batch 1, concurrency 1, 4 and 8, of two models (the
quickstart MLP and a small CNN, bench/_cnn.py), six ways side by side:

- *generated*: the hand-off with ``--format auto`` and the generated config (it picks onnx — ONNX Runtime in
  hpc-tf's own Triton backend — or python-onnx where the node has no such backend, or python, by a short
  measurement and records why; dynamic batching with the default queue delay);
- *naive*: the same format without dynamic batching (``ServingOptions(dynamic_batching=False)``);
- *python-onnx*: ONNX Runtime in the python backend with the generated config — the served path before the onnx
  backend (the same as *generated* where auto chose python-onnx);
- *python (TF)*: format python (TensorFlow in the python backend) with the generated config — the served path
  before python-onnx;
- *in-process TF*: the SavedModel's serving signature called by TensorFlow from N threads (bench/_inproc.py,
  its own process).

Every Triton model is put into service by the hand-off itself, on one local serving node (bundled tritonserver,
its python backend and hpc-tf's onnxruntime backend). The served variants are measured with perf_analyzer, the
C++ load generator Triton ships for this (bench/_perf_analyzer.py: gRPC, batch 1, one synchronous client thread
per concurrency): a Python client spends about as much CPU per request as the server, on the same two cores.
One more variant shows what a Python client pays: *generated* again through ``hpc-tf serve bench``'s client
(hpc.serving.loadtest, tritonclient's asyncio gRPC client), as a baseline row, not a target. Windows of the
variants alternate; the client, the server and its python-backend stubs share the machine's two cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench import _perf_analyzer
from bench._serving import REPO, Node, closed_loop, served_request, serving_node
from bench._stats import Figure, Result

NAME = "serving"
CONCURRENCY = (1, 4, 8)
SERVED = ("generated", "naive", "python-onnx", "python (TF)")  # through perf_analyzer
PYCLIENT = "generated, Python client"
INPROC = "in-process TF"
BASELINES = ("naive", "python-onnx", "python (TF)", PYCLIENT, INPROC)  # what generated's throughput and p50 face
# the targets, generated against each baseline: (metric, concurrency or None for all, bound)
TARGETS = {("throughput", 8, INPROC): ("≥ 1.5×", lambda r: r >= 1.5),
           ("p50_ms", 1, INPROC): ("≤ 2×", lambda r: r <= 2.0),
           ("throughput", None, "naive"): ("≥ 1×", lambda r: r >= 1.0)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serving-reps", type=int, help="windows per variant and concurrency (default 3, quick 1)")
    parser.add_argument("--serving-seconds", type=float, help="seconds per window (default 3, quick 1)")


def run(args: argparse.Namespace, quick: bool) -> Result:
    reps = args.serving_reps or (1 if quick else 3)
    seconds = args.serving_seconds or (1.0 if quick else 3.0)
    result = Result(NAME, quick)
    with serving_node("serving") as node:
        pa = _perf_analyzer.perf_analyzer(node.work)
        result.facts["client"] = (f"perf_analyzer {_perf_analyzer.VERSION} (C++, Triton's; tritonclient wheel from "
                                  f"PyPI) for {', '.join(SERVED)}; '{PYCLIENT}': hpc-tf serve bench's tritonclient "
                                  "asyncio gRPC client")
        cnn = node.work / "cnn"
        subprocess.run([sys.executable, "-m", "bench._cnn", str(cnn)], cwd=REPO, check=True, capture_output=True,
                       timeout=600)
        for label, savedmodel in (("quickstart", node.savedmodel), ("cnn", cnn)):
            runs = _measure(node, pa, label, savedmodel, reps, seconds, result)
            same = node.repo.config_file(f"{label}_gen").read_text().replace(f"{label}_gen", "") == \
                node.repo.config_file(f"{label}_naive").read_text().replace(f"{label}_naive", "")
            result.facts[f"{label}_generated_is_naive"] = same
            _figures(result, label, runs, same)
    result.facts["window_s"] = seconds
    result.notes.append("batch 1, gRPC; in-process TF = the SavedModel's serving signature called from N threads; "
                        "the machine's 2 cores are shared by client and server (and whatever else runs)")
    return result


def _measure(node: Node, pa: _perf_analyzer.PerfAnalyzer, label: str, savedmodel: Path, reps: int,
             seconds: float, result: Result) -> dict[tuple[str, int], list[dict[str, float]]]:
    from hpc.serving import secret as node_secret
    from hpc.serving.config import ServingOptions, parse_config
    from hpc.serving.handoff import handoff

    url, repo = node.grpc_url, node.repo
    chosen = handoff(savedmodel, f"{label}_gen", repo, "auto", grpc_url=url)
    assert chosen.choice is not None
    result.facts[f"{label}_choice"] = f"{chosen.format}: {chosen.choice['why']}"
    handoff(savedmodel, f"{label}_naive", repo, chosen.format, grpc_url=url,  # type: ignore[arg-type]
            options=ServingOptions(dynamic_batching=False))  # record.format is a str
    handoff(savedmodel, f"{label}_pyonnx", repo, "python-onnx", grpc_url=url)
    handoff(savedmodel, f"{label}_tf", repo, "python", grpc_url=url)
    result.facts[f"{label}_generated_config"] = " ".join(repo.config_file(f"{label}_gen").read_text().split())
    models = {"generated": f"{label}_gen", "naive": f"{label}_naive", "python-onnx": f"{label}_pyonnx",
              "python (TF)": f"{label}_tf"}
    # perf_analyzer reads each model's config and statistics, which the node restricts to its owner's key
    headers = node_secret.load(repo.root).grpc_headers()
    data = {model: _perf_analyzer.input_data(node.work / f"{model}.json", served_request(repo, url, model),
                                             parse_config(repo.config_file(model).read_text()).max_batch_size > 0)
            for model in models.values()}
    variants = (*SERVED, PYCLIENT, INPROC)
    runs: dict[tuple[str, int], list[dict[str, float]]] = {(v, c): [] for v in variants for c in CONCURRENCY}
    for rep in range(reps):
        for variant in variants if rep % 2 == 0 else variants[::-1]:
            if variant == INPROC:
                for line in _inproc(savedmodel, seconds):
                    runs[(variant, int(line["concurrency"]))].append(line)
                continue
            for concurrency in CONCURRENCY:
                runs[(variant, concurrency)].append(
                    closed_loop(repo, url, models["generated"], concurrency, seconds) if variant == PYCLIENT else
                    _perf_analyzer.measure(pa, url, models[variant], data[models[variant]], concurrency, seconds,
                                           headers, node.work))
    for variant in ("generated", "naive"):  # where a request's time goes, as Triton counts it
        for concurrency in CONCURRENCY:
            last = runs[(variant, concurrency)][-1]
            result.facts[f"{label}_{variant}_c{concurrency}_server_us"] = (
                f"network+server send/recv {last['network_us']:.0f}, queue {last['queue_us']:.0f}, "
                f"compute {last['compute_us']:.0f} (last window's averages)")
    return runs


def _figures(result: Result, label: str, runs: dict[tuple[str, int], list[dict[str, float]]],
             generated_is_naive: bool) -> None:
    """``generated_is_naive``: the hand-off left dynamic batching off, so the two are one config and their
    ratio is the spread of the measurement: the target against naive is not decided on it."""
    for concurrency in CONCURRENCY:
        for metric, unit, baselines in (("throughput", "req/s", BASELINES), ("p50_ms", "ms", BASELINES),
                                        ("p99_ms", "ms", ("naive", INPROC))):
            subject = [r[metric] for r in runs[("generated", concurrency)]]
            for baseline in baselines:
                figure = Figure(f"{label} c={concurrency} {metric.removesuffix('_ms')}", unit, "generated", subject,
                                baseline, [r[metric] for r in runs[(baseline, concurrency)]])
                target = TARGETS.get((metric, concurrency, baseline)) or TARGETS.get((metric, None, baseline))
                if target is not None and figure.ratio is not None:
                    figure.target, figure.met = target[0], target[1](figure.ratio)
                    if baseline == "naive" and generated_is_naive:
                        figure.met, figure.note = None, "one config (the hand-off left batching off): spread only"
                result.add(figure)


def _inproc(savedmodel: Path, seconds: float) -> list[dict[str, float]]:
    out = subprocess.run([sys.executable, "-m", "bench._inproc", str(savedmodel), str(seconds),
                          *map(str, CONCURRENCY)], cwd=REPO, capture_output=True, text=True, check=True,
                         timeout=600)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
