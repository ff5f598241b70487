"""Figure 1, launch overhead: ``hpc-tf launch`` vs a bare ``sbatch`` of the same rendered script vs submitit.

Each repetition, as the cluster user (runuser, clean environment), interleaved:

* ``hpc-tf launch job.yaml`` — a new process: validate, resolve, quota preflight, render, write the
  run directory, ``sbatch``. The preflight asks the controller (``scontrol show assoc_mgr``) and
  reuses slurmdbd's answers (``sacctmgr``) from the launch before, as a researcher's next launch
  within 5 minutes does (:mod:`hpc.quota.stored`);
* the same with an empty cache (``XDG_CACHE_HOME`` a new directory each time): the first launch of
  the day, which waits for two ``sacctmgr`` answers;
* ``sbatch --parsable job.sbatch`` of a script hpc-tf rendered before (the floor any tool pays);
* a new Python process that submits the same command through ``submitit.SlurmExecutor``;
* ``true`` (runuser's own cost, included in all three).

All jobs are submitted held (``--hold``: ``sbatch_extra`` in job.yaml, so it is in the rendered script
too) so nothing runs, and cancelled at the end. Besides the
wall times: the per-stage split measured inside one process, the Slurm commands one launch runs, and
whether the CLI imports TensorFlow (``sys.modules`` after a launch; ``-X importtime``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from bench._cluster import Cluster, shim_counts, write_shims
from bench._stats import Figure, Result, interleave

NAME = "launch"
HERE = Path(__file__).resolve().parent
TARGET_MS = 300.0

JOB_YAML = """\
# the benchmark's job: the quickstart's shape on one node, submitted held: it never runs
name: bench-launch
command: python3 train.py --epochs 3
resources:
  nodes: 1
  tasks_per_node: 1
  gpus_per_node: 1
  time: "10:00"
sbatch_extra: ["--hold"]
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--launch-reps", type=int, help="repetitions (default 15, quick 2)")


def run(args: argparse.Namespace, quick: bool) -> Result:
    reps = args.launch_reps or (2 if quick else 15)
    result = Result(NAME, quick)
    with Cluster.session("launch") as (cluster, work):
        _measure(cluster, work, reps, result)
    return result


def _measure(cluster: Cluster, work: Path, reps: int, result: Result) -> None:
    cluster.write(work / "job.yaml", JOB_YAML)
    shutil.copy(HERE / "_launch_helpers.py", work / "_launch_helpers.py")
    cluster.give(work)
    runs = work / "runs"
    env = cluster.env()
    launch_argv = ["hpc-tf", "launch", "job.yaml", "--site", "sandbox", "--set", f"runs_dir={runs}"]

    def submitted(stdout: str) -> str:
        job_id = stdout.strip().splitlines()[-1].strip()
        cluster.track([job_id])
        return job_id

    # one launch first: its rendered script is what the bare sbatch submits (and a warm-up)
    _, first = cluster.timed(launch_argv, cwd=work, env=env)
    submitted(first.stdout)
    (rendered,) = list(runs.glob("bench-launch-*/job.sbatch"))

    def hpc_tf(_: int) -> float:
        ms, out = cluster.timed(launch_argv, cwd=work, env=env)
        submitted(out.stdout)
        return ms

    def hpc_tf_cold(rep: int) -> float:
        ms, out = cluster.timed(launch_argv, cwd=work, env={**env, "XDG_CACHE_HOME": str(work / f"cold-cache-{rep}")})
        submitted(out.stdout)
        return ms

    def sbatch(_: int) -> float:
        ms, out = cluster.timed(["sbatch", "--parsable", str(rendered)], cwd=work, env=env)
        submitted(out.stdout.split(";")[0])
        return ms

    def submitit(_: int) -> float:
        argv = ["python3", "_launch_helpers.py", "submitit", str(work / "submitit" / "%j"), "python3", "train.py"]
        ms, out = cluster.timed(argv, cwd=work, env=env)
        cluster.track([json.loads(out.stdout)["job_id"]])
        return ms

    def floor(_: int) -> float:
        return cluster.timed(["true"], cwd=work, env=env)[0]

    variants = {"hpc-tf": hpc_tf, "hpc-tf cold": hpc_tf_cold, "sbatch": sbatch, "submitit": submitit, "true": floor}
    times = interleave(reps, variants, warmup=1)
    launch_ms = statistics.median(times["hpc-tf"])
    floor_ms = statistics.median(times["true"])
    result.add(Figure("launch vs bare sbatch", "ms", "hpc-tf launch", times["hpc-tf"], "sbatch", times["sbatch"],
                      target=f"< {TARGET_MS:.0f} ms", met=launch_ms < TARGET_MS,
                      note="wall time of a new process as the cluster user, runuser included; "
                           "slurmdbd's answers remembered from the launch before"))
    result.add(Figure("launch vs submitit", "ms", "hpc-tf launch", times["hpc-tf"], "submitit", times["submitit"]))
    result.add(Figure("first launch (empty cache) vs launch", "ms", "hpc-tf launch, cold", times["hpc-tf cold"],
                      "hpc-tf launch", times["hpc-tf"], note="two sacctmgr calls more"))
    result.add(Figure("runuser + true (in every figure)", "ms", "true", times["true"]))
    result.facts["launch_ms_minus_runuser"] = round(launch_ms - floor_ms, 1)

    # where the time goes, inside one process (no runuser, no interpreter start)
    stages = json.loads(cluster.run(["python3", "_launch_helpers.py", "stages", "job.yaml", "sandbox", str(runs),
                                     str(max(reps, 3))], cwd=work, env=env).stdout)
    cluster.track(stages["job_ids"])
    for stage, values in stages["timings_ms"].items():
        result.add(Figure(f"  stage: {stage}", "ms", "in-process", values))

    # which Slurm commands one launch runs, and which heavy modules it imports
    shims = work / "shims"
    log = work / "slurm-calls.log"
    write_shims(shims, log, cluster)
    out = cluster.run(launch_argv, cwd=work, env=cluster.env(path_first=shims))
    submitted(out.stdout)
    result.facts["slurm_commands_per_launch"] = shim_counts(log)
    mods = json.loads(cluster.run(["python3", "_launch_helpers.py", "modules", "job.yaml", "sandbox", str(runs)],
                                  cwd=work, env=env).stdout)
    cluster.track(mods["job_ids"])
    importtime = cluster.run(launch_argv, cwd=work, env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    submitted(importtime.stdout)
    imported = _importtime(importtime.stderr)
    heavy = sorted({name for name in imported if name.split(".")[0] in ("tensorflow", "keras")})
    result.facts["tensorflow_imported"] = bool(heavy or any(m.split(".")[0] in ("tensorflow", "keras")
                                                            for m in mods["heavy_modules"]))
    result.facts["heavy_modules_after_launch"] = mods["heavy_modules"]
    result.facts["modules_imported_by_cli"] = len(imported)
    result.facts["import_time_ms_cli"] = round(sum(own for own, _, _ in imported.values()) / 1000, 1)
    top = sorted(((cum, name) for name, (_, cum, first) in imported.items() if first), reverse=True)[:6]
    result.facts["slowest_top_level_imports_ms"] = {name: round(us / 1000, 1) for us, name in top}
    tf_imported = "YES" if result.facts["tensorflow_imported"] else "no"
    result.notes.append(f"TensorFlow imported by `hpc-tf launch`: {tf_imported}"
                        f" ({result.facts['modules_imported_by_cli']} modules, "
                        f"{result.facts['import_time_ms_cli']} ms of imports by -X importtime)")


def _importtime(stderr: str) -> dict[str, tuple[int, int, bool]]:
    """``-X importtime`` lines → {module: (self µs, cumulative µs, imported at top level)}."""
    found: dict[str, tuple[int, int, bool]] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            name = parts[2].rstrip()
            top = len(name) - len(name.lstrip()) <= 1
            found[name.strip()] = (int(parts[0]), int(parts[1]), top)
    return found
