"""Run as the cluster user by bench/launch.py (copied into the benchmark's work directory).

    python _launch_helpers.py submitit FOLDER COMMAND...   submit COMMAND through submitit's SlurmExecutor
    python _launch_helpers.py stages SPEC SITE RUNS_DIR N  time hpc-tf's launch stages in one process
    python _launch_helpers.py modules SPEC SITE RUNS_DIR   plan + preflight + submit; list heavy modules loaded

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("tensorflow", "keras", "tritonclient", "numpy", "torch", "jax")


def submitit_submit(folder: str, command: list[str]) -> dict[str, object]:
    import submitit

    executor = submitit.SlurmExecutor(folder=folder)
    # the same resources as the benchmark's job.yaml (1 node, 1 task, 1 GPU, 10 minutes, account lab)
    executor.update_parameters(partition="gpu", account="lab", nodes=1, ntasks_per_node=1, gpus_per_node=1,
                               time=10, job_name="bench-submitit", additional_parameters={"hold": True})
    job = executor.submit(subprocess.check_call, command)
    return {"job_id": job.job_id}


def stages(spec: str, site: str, runs_dir: str, reps: int) -> dict[str, object]:
    t0 = time.perf_counter()
    from hpc.backends import Backend, backend_for
    from hpc.launch import plan_launch, submit_plan
    from hpc.quota import StoredAnswers, check_launch, current_user

    timings: dict[str, list[float]] = {"import": [(time.perf_counter() - t0) * 1000], "validate+resolve+render": [],
                                       "quota preflight, slurmdbd asked": [],
                                       "quota preflight, slurmdbd's answers remembered": [],
                                       "write run dir+sbatch": []}
    slurm = backend_for("slurm", Path(runs_dir))
    job_ids = []
    for _ in range(reps):
        t = time.perf_counter()
        plan = plan_launch(Path(spec), site, [f"runs_dir={runs_dir}"])
        timings["validate+resolve+render"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        check_launch(plan.job, stored=StoredAnswers.for_user(current_user(), reuse=False))  # forget the answers
        timings["quota preflight, slurmdbd asked"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        slurm.check_quota(plan.job)  # as hpc-tf launch checks it
        timings["quota preflight, slurmdbd's answers remembered"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        launched = submit_plan(plan, Backend(slurm.scheduler))  # the preflight is timed above
        timings["write run dir+sbatch"].append((time.perf_counter() - t) * 1000)
        job_ids.append(launched.job_id)
    return {"timings_ms": timings, "job_ids": job_ids}


def modules(spec: str, site: str, runs_dir: str) -> dict[str, object]:
    from hpc.backends import backend_for
    from hpc.cli.app import app  # noqa: F401  (what `hpc-tf` imports)
    from hpc.launch import plan_launch, submit_plan

    plan = plan_launch(Path(spec), site, [f"runs_dir={runs_dir}"])
    launched = submit_plan(plan, backend_for("slurm", Path(runs_dir)))  # preflight, run dir, sbatch
    heavy = sorted(name for name in sys.modules if name.split(".")[0] in HEAVY)
    return {"job_ids": [launched.job_id], "heavy_modules": heavy, "modules_loaded": len(sys.modules)}


def main() -> None:
    what, *rest = sys.argv[1:]
    if what == "submitit":
        out = submitit_submit(rest[0], rest[1:])
    elif what == "stages":
        out = stages(rest[0], rest[1], rest[2], int(rest[3]))
    elif what == "modules":
        out = modules(rest[0], rest[1], rest[2])
    else:
        raise SystemExit(f"unknown helper {what}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
