"""Figure 4, multi-worker training: per-step time of the quickstart model under ``hpc-tf launch`` vs the
same script with a hand-written TF_CONFIG, on 1 and 2 nodes (one TensorFlow worker per node, 1 GPU each).

The model is bench/_train_timed.py (the quickstart's data, model, optimizer and batch size plus a step
timer; examples/quickstart/train.py is unchanged). Steps are timed inside the worker, after the first
epoch: start-up, the TensorFlow import, the peers' rendezvous and tracing are excluded, so the figure
is what hpc-tf adds to the training loop itself. Per run, the value is rank 0's median step time.

Baseline jobs: an sbatch script whose srun tasks write TF_CONFIG from Slurm's variables
(bench/_hand_worker.sh). With 2 workers, Keras 3 ``model.fit`` fails in this TensorFlow without a fix
(keras-team/keras#20585), so the baseline applies the same fix by hand; with 1 worker it needs none.
The jobs run one at a time, hpc-tf and baseline alternating, so they never share the two CPUs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from bench._cluster import Cluster
from bench._stats import Figure, Result

NAME = "training"
HERE = Path(__file__).resolve().parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--training-reps", type=int, help="runs per variant and node count (default 5, quick 1)")
    parser.add_argument("--training-epochs", type=int, help="epochs per run (32 steps each; default 10, quick 3)")
    parser.add_argument("--training-nodes", default="1,2", help="node counts (default 1,2)")


def run(args: argparse.Namespace, quick: bool) -> Result:
    reps = args.training_reps or (1 if quick else 5)
    epochs = args.training_epochs or (3 if quick else 10)
    node_counts = [int(n) for n in args.training_nodes.split(",")]
    result = Result(NAME, quick)
    with Cluster.session("training") as (cluster, work):
        _measure(cluster, work, reps, epochs, node_counts, result)
    return result


def _spec(nodes: int, out: str, epochs: int) -> str:
    return (f"name: bench-train-{nodes}n\ncommand: [python3, _train_timed.py, --out, {out}, --epochs, \"{epochs}\"]\n"
            f"resources: {{nodes: {nodes}, tasks_per_node: 1, gpus_per_node: 1, time: \"15:00\"}}\n"
            "tf: {coordination_timeout: 120}\n")


def _hand_script(cluster: Cluster, work: Path, nodes: int, out: str, epochs: int) -> str:
    fix = f" {work / 'runtime'}" if nodes > 1 else ""
    return "\n".join([
        "#!/bin/bash", f"#SBATCH --job-name=bench-train-hand-{nodes}n", f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:1", f"#SBATCH --partition={cluster.gpu_partition}",
        f"#SBATCH --account={cluster.account}", "#SBATCH --time=15:00", f"#SBATCH --output={work}/hand-%j.out",
        f"cd {work}", f"srun --kill-on-bad-exit=1 ./_hand_worker.sh {out} {epochs}{fix}", ""])


def _measure(cluster: Cluster, work: Path, reps: int, epochs: int, node_counts: list[int], result: Result) -> None:
    from hpc.runtime.install import install_into

    for name in ("_train_timed.py", "_hand_worker.sh"):
        shutil.copy(HERE / name, work / name)
    install_into(work / "runtime")  # the baseline's hand-applied Keras fix comes from here
    cluster.give(work)
    hpc_set = ["--site", "sandbox", "--set", f"runs_dir={work / 'runs'}"]

    def one(variant: str, nodes: int, rep: int) -> float:
        out = f"out-{variant}-{nodes}n-{rep}"
        if variant == "hpc-tf":
            spec = cluster.write(work / f"job-{nodes}n-{rep}.yaml", _spec(nodes, out, epochs))
            job_id = cluster.run(["hpc-tf", "launch", spec.name, *hpc_set], cwd=work).stdout.strip().splitlines()[-1]
        else:
            script = cluster.write(work / f"hand-{nodes}n-{rep}.sbatch",
                                   _hand_script(cluster, work, nodes, out, epochs))
            job_id = cluster.run(["sbatch", "--parsable", str(script)], cwd=work).stdout.strip()
        cluster.track([job_id])
        state = cluster.wait([job_id], timeout=1200)[job_id]
        steps = work / out / "steps-0.json"
        if state != "COMPLETED" or not steps.is_file():
            raise RuntimeError(f"{variant} {nodes}-node job {job_id} ended {state} (see {work})")
        record = json.loads(steps.read_text())
        if record["workers"] != nodes:
            raise RuntimeError(f"{variant} job {job_id} trained with {record['workers']} worker(s), not {nodes}")
        pooled[(variant, nodes)].extend(record["step_ms"])
        return float(statistics.median(record["step_ms"]))

    pooled: dict[tuple[str, int], list[float]] = {(v, n): [] for v in ("hpc-tf", "hand") for n in node_counts}
    medians: dict[tuple[str, int], list[float]] = {key: [] for key in pooled}
    for rep in range(reps):
        for nodes in node_counts:
            for variant in ("hpc-tf", "hand") if (rep + nodes) % 2 == 0 else ("hand", "hpc-tf"):
                medians[(variant, nodes)].append(one(variant, nodes, rep))
    for nodes in node_counts:
        subject, baseline = medians[("hpc-tf", nodes)], medians[("hand", nodes)]
        ratio = statistics.median(subject) / statistics.median(baseline)
        result.add(Figure(f"step time, {nodes} node(s) x 1 worker", "ms", "hpc-tf launch", subject,
                          "hand TF_CONFIG", baseline, target="nothing measurable (ratio ~1)",
                          met=None if len(subject) < 2 else _indistinguishable(subject, baseline),
                          note=f"per-run medians; ratio {ratio:.3f}"))
        for variant in ("hpc-tf", "hand"):
            steps = sorted(pooled[(variant, nodes)])
            result.facts[f"steps_{variant}_{nodes}n"] = {
                "n": len(steps), "median": statistics.median(steps), "p90": steps[int(0.9 * (len(steps) - 1))]}
    result.notes.append(f"{epochs} epochs x 32 steps per run, first epoch excluded; global batch 256")


def _indistinguishable(subject: list[float], baseline: list[float]) -> bool:
    """The medians differ by less than the spread of the baseline runs (or by under 5 %)."""
    diff = abs(statistics.median(subject) - statistics.median(baseline))
    return diff <= max(max(baseline) - min(baseline), 0.05 * statistics.median(baseline))
