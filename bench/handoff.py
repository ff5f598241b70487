"""Figure 5, hand-off: from the end of training to the new version serving, by stage, vs a bare Triton load.

On this machine: the quickstart model trained once (1 epoch), a local Triton serving node (bundled
tritonserver, python backend). Each repetition, interleaved:

* ``hpc.serving.handoff.handoff`` — what ``hpc-tf handoff RUN --model NAME`` runs: read the signature,
  compute parity samples (a TensorFlow child process: the export has none stored), publish version N+1,
  gRPC load and wait until it is ready, send the samples to version N+1 and compare; stages timed by
  the hand-off itself (HandoffRecord.timings_s);
* a bare load: version N+1 of a second model (the same files, copied outside the timing) made ready
  with tritonclient's gRPC ``load_model`` and a readiness wait — Triton's own cost, with nothing around it.
"""

from __future__ import annotations

import argparse
import shutil
import time

from bench._serving import Node, serving_node
from bench._stats import Figure, Result, interleave

NAME = "handoff"
MODEL = "quickstart"
BARE = "bare"
STAGES = {"export/convert": ("source", "signature", "samples"), "connect": ("connect",), "publish": ("publish",),
          "load": ("load",), "parity": ("verify",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--handoff-reps", type=int, help="repetitions (default 5, quick 1)")


def run(args: argparse.Namespace, quick: bool) -> Result:
    reps = args.handoff_reps or (1 if quick else 5)
    result = Result(NAME, quick)
    with serving_node("handoff") as node:
        result.facts["train_s"] = round(node.train_s, 1)
        _measure(node, reps, result)
    return result


def _measure(node: Node, reps: int, result: Result) -> None:
    import tritonclient.grpc as grpcclient

    from hpc.serving import secret as node_secret
    from hpc.serving.config import config_pbtxt
    from hpc.serving.control import ModelControl
    from hpc.serving.formats import build_version
    from hpc.serving.handoff import handoff
    from hpc.serving.signature import read_signature

    signature = read_signature(node.savedmodel)
    bare_dir = node.repo.model_dir(BARE)
    template = node.work / "bare-version"
    template.mkdir()
    build_version(template, node.savedmodel, signature, "python")
    bare_dir.mkdir(parents=True)
    (bare_dir / "config.pbtxt").write_text(config_pbtxt(BARE, signature, "python"))
    client = grpcclient.InferenceServerClient(node.grpc_url)
    secret = node_secret.load(node.repo.root)
    control = ModelControl(node.grpc_url, secret)
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    bare_version = [0]

    def hpc_tf(_: int) -> float:
        t0 = time.perf_counter()
        record = handoff(node.savedmodel, MODEL, node.repo, "python", grpc_url=node.grpc_url)
        total = (time.perf_counter() - t0) * 1000
        for name, parts in STAGES.items():
            stages[name].append(sum(record.timings_s.get(p, 0.0) for p in parts) * 1000)
        return total

    def bare(_: int) -> float:
        bare_version[0] += 1
        version = bare_version[0]
        shutil.copytree(template, bare_dir / str(version))
        t0 = time.perf_counter()
        client.load_model(BARE, headers=secret.grpc_headers())
        control.wait_ready(BARE, version, time.monotonic() + 120)
        return (time.perf_counter() - t0) * 1000

    try:
        times = interleave(reps, {"hand-off": hpc_tf, "bare load": bare})
    finally:
        client.close()
        control.close()
    result.add(Figure("training end -> serving", "ms", "hand-off (all stages)", times["hand-off"],
                      "bare gRPC load", times["bare load"]))
    for name, values in stages.items():
        if name == "load":
            result.add(Figure("  stage: load", "ms", "hand-off load", values, "bare gRPC load", times["bare load"]))
        else:
            result.add(Figure(f"  stage: {name}", "ms", "hand-off", values))
    result.notes.append("export/convert = find the SavedModel, read its signature, compute parity samples "
                        "(a TensorFlow child process); format python (the bundled tritonserver's only backend)")
