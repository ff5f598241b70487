"""Figure 7, the Slurm scheduler: pyslurm (``scheduler: pyslurm``) against the tools (``scheduler: cli``).

Both run as the cluster user, each in one process of its own per repetition, every call timed on
its own inside it (Python start-up and imports are not in the figures), repetitions interleaved:

* submit: ``Scheduler.submit`` of a held one-line job (sbatch --parsable vs JobSubmitDescription.submit);
* status of an array of N finished tasks (default 1,000, each ``true``; about a minute to run them):
  ``Scheduler.query([array id])``, the array's summary and every task (sacct vs pyslurm.db.Jobs, then
  the same merge; a held array would be one pending record, not N).

pyslurm exists for Slurm 25.11 only: on another release the benchmark says so and measures nothing.
The single jobs are submitted held; everything is cancelled at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench._cluster import TERMINAL, Cluster
from bench._stats import Figure, Result

NAME = "scheduler"
HERE = Path(__file__).resolve().parent

JOB_SCRIPT = """\
#!/bin/bash
#SBATCH --job-name=bench-scheduler
#SBATCH --partition=cpu
#SBATCH --nodes=1
#SBATCH --time=1
#SBATCH --output=/dev/null
true
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scheduler-tasks", type=int, help="array tasks whose status is read (default 1000, quick 20)")
    parser.add_argument("--scheduler-reps", type=int, help="repetitions (default 5, quick 1)")


def run(args: argparse.Namespace, quick: bool) -> Result:
    tasks = args.scheduler_tasks or (20 if quick else 1000)
    reps = args.scheduler_reps or (1 if quick else 5)
    calls = 2 if quick else 10  # per process and repetition
    result = Result(NAME, quick)
    with Cluster.session(NAME) as (cluster, work):
        cluster.write(work / "job.sbatch", JOB_SCRIPT, mode=0o755)
        shutil.copy(HERE / "_scheduler_calls.py", work / "_scheduler_calls.py")
        cluster.give(work)

        def calls_of(kind: str, *argv: str) -> dict[str, object]:
            out = cluster.run(["python3", "_scheduler_calls.py", kind, *argv], cwd=work, timeout=1800)
            answer: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
            return answer

        chosen = cluster.run(["hpc-tf", "config", "show", "--site", "sandbox", "--set", "scheduler=auto", "--json"],
                             cwd=work)
        auto = json.loads(chosen.stdout)["scheduler (chosen)"]
        result.facts["auto_chooses"] = f"{auto['value']} ({auto['source']})"
        if auto["value"] != "pyslurm":  # e.g. the cluster runs Slurm 22.05, for which pyslurm does not exist
            result.notes.append(f"nothing measured: scheduler: auto chooses {result.facts['auto_chooses']}")
            return result
        array = str(calls_of("cli", "array", "job.sbatch", str(tasks))["job_id"])
        cluster.track([array])
        deadline = time.monotonic() + 30 + tasks * 0.5
        while not set(calls_of("cli", "query", "1", array)["states"]) <= TERMINAL:  # type: ignore[arg-type]
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {tasks} array tasks did not finish in time")
            time.sleep(2)
        submit: dict[str, list[float]] = {"pyslurm": [], "cli": []}
        status: dict[str, list[float]] = {"pyslurm": [], "cli": []}
        for rep in range(reps):
            for kind in ("pyslurm", "cli") if rep % 2 == 0 else ("cli", "pyslurm"):
                made = calls_of(kind, "submit", "job.sbatch", str(calls))
                cluster.track(made["job_ids"])  # type: ignore[arg-type]
                submit[kind] += made["ms"]  # type: ignore[operator]
                read = calls_of(kind, "query", str(calls), array)
                status[kind] += read["ms"]  # type: ignore[operator]
                result.facts[f"statuses_{kind}"] = read["statuses"]
        result.add(Figure("submit one job", "ms", "pyslurm", submit["pyslurm"], "cli (sbatch)", submit["cli"]))
        result.add(Figure(f"status of {tasks} array tasks", "ms", "pyslurm", status["pyslurm"],
                          "cli (sacct + squeue)", status["cli"]))
        result.facts.update(tasks=tasks, reps=reps, calls_per_process=calls)
        result.notes.append("each value is one call inside a warm process; statuses = the array's entries "
                            "(summary + tasks) each scheduler returned, all finished")
    return result
