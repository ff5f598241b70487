"""Run as the cluster user by bench/scheduler.py: one Slurm scheduler's calls, timed in-process.

    python _scheduler_calls.py KIND submit SCRIPT N    N × Scheduler.submit(SCRIPT)   → {"ms": [...], "job_ids"}
    python _scheduler_calls.py KIND query N ID...      N × Scheduler.query([ID...])   → {"ms": [...], "statuses"}
    python _scheduler_calls.py KIND array SCRIPT SIZE  one array of SIZE tasks        → {"job_id"}

KIND is the site's ``scheduler:`` (cli | pyslurm). Each call is timed on its own, inside one process,
so Python's start-up and the imports are not part of either figure (they are the same code).
"""

from __future__ import annotations

import json
import sys
import time

from hpc.backends import slurm_scheduler
from hpc.scheduler import ArrayRequest, SubmitOptions


def main(kind: str, what: str, rest: list[str]) -> dict[str, object]:
    scheduler = slurm_scheduler(kind)  # type: ignore[arg-type]
    assert scheduler.name == {"cli": "slurm", "pyslurm": "pyslurm"}[kind], scheduler.name
    if what == "array":
        options = SubmitOptions(array=ArrayRequest(tuple(range(int(rest[1])))))
        return {"job_id": scheduler.submit(rest[0], options)}
    times: list[float] = []
    out: dict[str, object] = {}
    for _ in range(int(rest[1] if what == "submit" else rest[0])):
        t0 = time.perf_counter()
        if what == "submit":
            job_id = scheduler.submit(rest[0], SubmitOptions(hold=True))
            out.setdefault("job_ids", []).append(job_id)  # type: ignore[union-attr]
        else:
            statuses = scheduler.query(rest[1:])
            out["statuses"] = len(statuses)
            out["states"] = sorted({str(s.state.value) for s in statuses.values()})
        times.append((time.perf_counter() - t0) * 1000)
    out["ms"] = times
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3:])))
