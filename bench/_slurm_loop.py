"""Run as the cluster user by bench/campaign.py: the per-job baseline a campaign is compared with.

    python _slurm_loop.py submit SCRIPT N     N × ``sbatch --parsable SCRIPT``     → {"wall_ms", "job_ids"}
    python _slurm_loop.py query ID...         one hpc-tf status query per job id  → {"wall_ms", "states"}

The queries use hpc-tf's own batched query (hpc.scheduler.SlurmScheduler.query), one id at a time,
so the comparison is batching against not batching, nothing else.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def submit(script: str, count: int) -> dict[str, object]:
    ids = []
    t0 = time.perf_counter()
    for _ in range(count):
        out = subprocess.run(["sbatch", "--parsable", script], capture_output=True, text=True, check=True, timeout=60)
        ids.append(out.stdout.strip().split(";")[0])
    return {"wall_ms": (time.perf_counter() - t0) * 1000, "job_ids": ids}


def query(job_ids: list[str]) -> dict[str, object]:
    from hpc.scheduler import SlurmScheduler

    scheduler = SlurmScheduler()
    states: dict[str, int] = {}
    t0 = time.perf_counter()
    for job_id in job_ids:
        for status in scheduler.query([job_id]).values():
            states[str(status.state)] = states.get(str(status.state), 0) + 1
    return {"wall_ms": (time.perf_counter() - t0) * 1000, "states": states}


def main() -> None:
    what, *rest = sys.argv[1:]
    print(json.dumps(submit(rest[0], int(rest[1])) if what == "submit" else query(rest)))


if __name__ == "__main__":
    main()
