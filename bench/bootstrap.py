"""Figure 2, bootstrap overhead per task: ``srun`` of bootstrap + a trivial command vs ``srun`` of the command.

One batch job with the resources of a real hpc-tf run directory (made by ``hpc-tf launch``, submitted
held and cancelled at once) runs a driver that times job steps back to back inside that allocation, so
queue time never enters the figure. Two trivial commands: ``true`` (the bootstrap's own cost: a Python
start, reading resolved.json, GPU mapping, TF_CONFIG, exec) and ``python -c pass`` (that, plus the
start-up hook the bootstrap installs into the user's Python process through sitecustomize).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench._cluster import Cluster
from bench._stats import Figure, Result

NAME = "bootstrap"
HERE = Path(__file__).resolve().parent
TARGET_MS = 50.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-reps", type=int, help="repetitions (default 30, quick 2)")
    parser.add_argument("--bootstrap-gpus", type=int, default=1,
                        help="GPUs of the task (default 1, on the GPU partition; 0: the CPU partition)")


def spec(gpus: int) -> str:
    where = f"gpus_per_node: {gpus}" if gpus else "gpus_per_node: 0\n  partition: cpu"
    return f"name: bench-bootstrap\ncommand: [\"true\"]\nresources:\n  nodes: 1\n  tasks_per_node: 1\n  {where}\n" \
           f"  time: \"10:00\"\nsbatch_extra: [\"--hold\"]\n"


def run(args: argparse.Namespace, quick: bool) -> Result:
    reps = args.bootstrap_reps or (2 if quick else 30)
    result = Result(NAME, quick)
    with Cluster.session("bootstrap") as (cluster, work):
        _measure(cluster, work, reps, args.bootstrap_gpus, result)
    return result


def _measure(cluster: Cluster, work: Path, reps: int, gpus: int, result: Result) -> None:
    cluster.write(work / "job.yaml", spec(gpus))
    shutil.copy(HERE / "_bootstrap_driver.py", work / "_bootstrap_driver.py")
    cluster.give(work)
    env = cluster.env()
    held = cluster.run(["hpc-tf", "launch", "job.yaml", "--site", "sandbox", "--set", f"runs_dir={work / 'runs'}"],
                       cwd=work, env=env).stdout.strip().splitlines()[-1]
    cluster.track([held])
    cluster.cancel_all()  # only its run directory is wanted: runtime/bootstrap.py and resolved.json
    (run_dir,) = list((work / "runs").iterdir())
    ours = ("#SBATCH --output", "#SBATCH --job-name", "#SBATCH --hold")
    directives = [line for line in (run_dir / "job.sbatch").read_text().splitlines()
                  if line.startswith("#SBATCH") and not line.startswith(ours)]
    out = work / "times.json"
    python = json.loads((run_dir / "resolved.json").read_text())["python"]
    script = "\n".join([
        "#!/bin/bash", "#SBATCH --job-name=bench-bootstrap", f"#SBATCH --output={work / 'driver-%j.out'}",
        *directives,
        f"exec {python} {work / '_bootstrap_driver.py'} {run_dir / 'resolved.json'} "
        f"{run_dir / 'runtime' / 'bootstrap.py'} {reps} {out}", ""])
    cluster.write(work / "driver.sbatch", script)
    job_id = cluster.run(["sbatch", "--parsable", str(work / "driver.sbatch")], cwd=work).stdout.strip()
    cluster.track([job_id])
    state = cluster.wait([job_id], timeout=900)[job_id]
    if state != "COMPLETED" or not out.is_file():
        log = next(work.glob("driver-*.out"), None)
        raise RuntimeError(f"driver job {job_id} ended {state}: {log.read_text()[-2000:] if log else 'no log'}")
    times = json.loads(out.read_text())
    for command in ("true", "python -c pass"):
        subject, baseline = times[f"bootstrap {command}"], times[command]
        diffs = sorted(a - b for a, b in zip(subject, baseline, strict=True))
        added = diffs[len(diffs) // 2] if len(diffs) % 2 else sum(diffs[len(diffs) // 2 - 1:len(diffs) // 2 + 1]) / 2
        result.add(Figure(f"srun {command}", "ms", "via bootstrap", subject, "bare", baseline,
                          target=f"< {TARGET_MS:.0f} ms added", met=added < TARGET_MS))
    for command in ("true", "python -c pass"):
        result.add(Figure(f"in one step: {command}", "ms", "via bootstrap", times[f"in-step bootstrap {command}"],
                          "bare", times[f"in-step {command}"], note="child processes inside one srun step"))
    result.facts["partition"] = "gpu (1 GPU)" if gpus else "cpu"
    result.facts["record_line"] = _record(work)
    result.notes.append("added time = median of paired differences (same repetition, adjacent steps)")


def _record(work: Path) -> str:
    """The bootstrap's record line of the first step: what it set (to check it really ran)."""
    log = work / "step-bootstrap_true.out"
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("hpc-tf bootstrap: ")] if log.is_file() else []
    return lines[0][:160] if lines else "(none)"
