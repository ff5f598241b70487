"""Figure 3, campaigns: a sweep of N trivial configurations as one ``hpc-tf campaign`` vs one job per config.

Submission, interleaved per repetition: ``hpc-tf campaign run sweep.yaml`` (expand, plan, quota,
write the campaign directory, one array per MaxArraySize chunk) vs a loop of N ``sbatch --parsable``
calls of a minimal script (the floor of any one-job-per-config tool: no script rendering at all).

Status, interleaved per repetition: ``hpc-tf campaign status DIR --refresh --json`` on the N-task
campaign vs N per-job queries (hpc-tf's own query, one id at a time) of the N loop-submitted jobs.
Each is measured in wall time, in Slurm commands run (PATH wrappers that log every call: exact), and in
controller RPCs (``sdiag`` deltas, by the cluster user: cluster-wide counters, so other users' and
other tests' calls as that user add noise; the smallest delta of the repetitions is the best estimate).
``sacct`` talks to slurmdbd, which ``sdiag`` does not count: the command counts show it.

Everything is submitted held (``--hold``): nothing runs, the queue holds the pending records,
and all of it is cancelled at the end (and after each repetition but the last).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench._cluster import Cluster, delta, shim_counts, write_shims
from bench._stats import Figure, Result

NAME = "campaign"
HERE = Path(__file__).resolve().parent

JOB_SCRIPT = """\
#!/bin/bash
#SBATCH --job-name=bench-loop
#SBATCH --partition=cpu
#SBATCH --account=lab
#SBATCH --nodes=1
#SBATCH --time=1
#SBATCH --output=/dev/null
#SBATCH --hold
true
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign-size", type=int, help="configurations in the sweep (default 1000, quick 20)")
    parser.add_argument("--campaign-reps", type=int, help="repetitions (default 3, quick 1)")


def sweep_yaml(size: int) -> str:
    values = ", ".join(str(i) for i in range(size))
    return ("name: bench-sweep\njob:\n  command: [\"true\"]\n"
            "  resources: {nodes: 1, gpus_per_node: 0, partition: cpu, time: \"1:00\"}\n  sbatch_extra: [\"--hold\"]\n"
            f"parameters:\n  grid: {{i: [{values}]}}\nargs: [\"--i\", \"{{i}}\"]\n")


def run(args: argparse.Namespace, quick: bool) -> Result:
    size = args.campaign_size or (20 if quick else 1000)
    reps = args.campaign_reps or (1 if quick else 3)
    result = Result(NAME, quick)
    with Cluster.session("campaign") as (cluster, work):
        _measure(cluster, work, size, reps, result)
    return result


def _measure(cluster: Cluster, work: Path, size: int, reps: int, result: Result) -> None:
    cluster.write(work / "sweep.yaml", sweep_yaml(size))
    cluster.write(work / "job.sbatch", JOB_SCRIPT, mode=0o755)
    shutil.copy(HERE / "_slurm_loop.py", work / "_slurm_loop.py")
    cluster.give(work)
    log = work / "slurm-calls.log"
    shims = write_shims(work / "shims", log, cluster)
    env = cluster.env(path_first=shims)
    hpc_set = ["--site", "sandbox", "--set", f"runs_dir={work / 'runs'}"]

    def counted(argv: list[str], timeout: float = 1800) -> tuple[float, str, dict[str, int], int]:
        """(wall ms, stdout, Slurm commands run, controller RPCs by the cluster user)."""
        log.write_text("")
        _, before = cluster.rpc_counts()
        ms, out = cluster.timed(argv, cwd=work, env=env, timeout=timeout)
        _, after = cluster.rpc_counts()
        return ms, out.stdout, shim_counts(log), delta(after, before).get(cluster.user, 0)

    submit: dict[str, list[float]] = {"campaign": [], "loop": []}
    calls: dict[str, list[dict[str, int]]] = {"campaign": [], "loop": []}
    campaign_dir = ""
    loop_ids: list[str] = []
    for rep in range(reps):
        if rep:  # keep the queue small: only the last repetition's jobs stay for the status figures
            cluster.cancel_all()
        for name in ("campaign", "loop") if rep % 2 == 0 else ("loop", "campaign"):
            if name == "campaign":
                ms, stdout, commands, rpcs = counted(["hpc-tf", "campaign", "run", "sweep.yaml", *hpc_set])
                campaign_dir = stdout.strip().splitlines()[-1]
                manifest = json.loads((Path(campaign_dir) / "manifest.json").read_text())
                cluster.track(s["job_id"] for s in manifest["submissions"])
            else:
                ms, stdout, commands, rpcs = counted(["python3", "_slurm_loop.py", "submit", "job.sbatch", str(size)])
                loop_ids = json.loads(stdout)["job_ids"]
                cluster.track(loop_ids)
            submit[name].append(ms)
            calls[name].append({**commands, "controller RPCs": rpcs})
    result.add(Figure(f"submit {size} configs", "ms", "campaign run", submit["campaign"],
                      f"{size}× sbatch", submit["loop"]))
    result.facts["submit_calls_campaign"] = calls["campaign"]
    result.facts["submit_calls_loop"] = calls["loop"][:1]
    result.facts["sbatch_calls"] = f"campaign {calls['campaign'][0].get('sbatch', 0)} vs loop {size}"

    status: dict[str, list[float]] = {"campaign": [], "loop": []}
    rpc: dict[str, list[float]] = {"campaign": [], "loop": []}
    scalls: dict[str, list[dict[str, int]]] = {"campaign": [], "loop": []}
    for rep in range(reps):
        for name in ("campaign", "loop") if rep % 2 == 0 else ("loop", "campaign"):
            if name == "campaign":
                ms, stdout, commands, rpcs = counted(["hpc-tf", "campaign", "status", campaign_dir, "--refresh",
                                                      "--json", *hpc_set])
                view = json.loads(stdout)
                result.facts["campaign_status_counts"] = view.get("counts")
            else:
                ms, stdout, commands, rpcs = counted(["python3", "_slurm_loop.py", "query", *loop_ids])
                result.facts["loop_status_states"] = json.loads(stdout)["states"]
            status[name].append(ms)
            rpc[name].append(float(rpcs))
            scalls[name].append(commands)
    result.add(Figure(f"status of {size} tasks", "ms", "campaign status", status["campaign"],
                      f"{size} per-job queries", status["loop"]))
    result.add(Figure(f"  controller RPCs (sdiag, user {cluster.user})", "RPCs", "campaign status", rpc["campaign"],
                      "per-job queries", rpc["loop"], note="min over repetitions is the estimate (shared counters)"))
    commands_per_status = [float(sum(c.values())) for c in scalls["campaign"]]
    result.add(Figure("  Slurm commands per status", "calls", "campaign status", commands_per_status,
                      "per-job queries", [float(sum(c.values())) for c in scalls["loop"]],
                      target="one batched query (sacct + squeue)", met=max(commands_per_status) <= 2))
    result.facts["status_commands_campaign"] = scalls["campaign"][0]
    result.facts["status_commands_loop"] = scalls["loop"][0]
    result.notes.append(f"campaign status ran {_fmt(scalls['campaign'][0])}; the per-job loop ran "
                        f"{_fmt(scalls['loop'][0])}")
    result.notes.append(f"campaign run ran {_fmt(calls['campaign'][0])}")
    result.facts["size"] = size
    result.facts["measured_at"] = time.strftime("%H:%M:%S")


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{n}× {k}" for k, n in sorted(counts.items())) or "nothing"
