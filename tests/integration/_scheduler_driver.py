"""One :class:`hpc.scheduler.Scheduler` call, as the cluster user: the conformance tests' way in.

    python _scheduler_driver.py KIND OP ARG_JSON

KIND is the site's ``scheduler:`` (``cli`` | ``pyslurm``), OP ``submit`` (ARG: {"script", "options"}),
``query`` / ``cancel`` (ARG: ids), ``show_config``, or (pyslurm) ``records`` (ARG: ids): the fields
pyslurm gave for those jobs, which the unit tests replay. Prints one JSON line: the scheduler's name and
the result (JobStatus values as dataclass dicts), or the error an HpcTfError carried (exit 1).
Runs in its own process because pyslurm talks to Slurm as the process's user, and tests run as root.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from hpc.backends import slurm_scheduler
from hpc.errors import HpcTfError
from hpc.scheduler import ArrayRequest, SubmitOptions


def _options(given: dict[str, Any]) -> SubmitOptions:
    array = given.get("array")
    return SubmitOptions(
        array=ArrayRequest(tuple(array["indices"]), array.get("throttle")) if array else None,
        after=tuple((kind, tuple(ids)) for kind, ids in given.get("after", ())),
        cancel_if_never_satisfied=given.get("cancel_if_never_satisfied", False),
        hold=given.get("hold", False),
    )


def _records(scheduler: Any, job_ids: list[str]) -> dict[str, Any]:
    """pyslurm's fields of these jobs, and the statuses the pyslurm scheduler makes of exactly those."""
    from hpc.scheduler.libslurm_rows import RecordSource
    from hpc.scheduler.status import query_source

    bases = {job_id.split("_")[0].split("+")[0] for job_id in job_ids}
    accounting = scheduler.accounting_records(job_ids)
    live = [f for f in scheduler.live_records() if str(f["array_id"] or f["heterogeneous_id"] or f["id"]) in bases]
    statuses = query_source(RecordSource(lambda _: accounting, lambda: live), job_ids)
    return {"accounting": accounting, "live": live,
            "statuses": {job_id: asdict(status) for job_id, status in statuses.items()}}


def main(kind: str, op: str, arg: Any) -> int:
    try:
        scheduler = slurm_scheduler(kind)  # type: ignore[arg-type]
        if op == "submit":
            result: Any = scheduler.submit(arg["script"], _options(arg.get("options", {})))
        elif op == "query":
            result = {job_id: asdict(status) for job_id, status in scheduler.query(arg).items()}
        elif op == "cancel":
            result = scheduler.cancel(arg)
        elif op == "show_config":
            result = dict(scheduler.show_config())
        elif op == "records":
            result = _records(scheduler, arg)
        else:
            raise SystemExit(f"unknown operation {op!r}")
    except HpcTfError as err:
        print(json.dumps({"error": err.message}))
        return 1
    print(json.dumps({"scheduler": scheduler.name, "result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
