"""How the pyslurm scheduler reads status: pyslurm's job records as the rows the CLI parsers give.

pyslurm's records become the rows the CLI backend parses (:class:`~hpc.scheduler.parse.SacctRow`
from ``pyslurm.db.Jobs``, :class:`~hpc.scheduler.parse.SqueueRow` from ``pyslurm.Jobs``), so both
backends share one status merge (:func:`hpc.scheduler.status.query_source`) and give the same
:class:`~hpc.scheduler.status.JobStatus` values.

A record is first read into plain fields (:func:`fields_of`: the attributes :data:`DB_FIELDS` or
:data:`LIVE_FIELDS`, GPU counts as a TRES dict), then turned into a row by pure functions, which the
unit tests feed with fields recorded on the cluster (tests/fixtures/scheduler/slurm-25.11/pyslurm/).
Nothing here imports pyslurm.
"""

from __future__ import annotations

import pwd
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hpc.scheduler import commands
from hpc.scheduler.fields import ExitCode, JobId, parse_job_id
from hpc.scheduler.parse import SacctRow, SqueueRow
from hpc.scheduler.reasons import parse_reason
from hpc.scheduler.states import JobState


class RecordSource:
    """The two reads :func:`~hpc.scheduler.status.query_source` needs, from pyslurm's records as fields
    (:func:`fields_of`): ``accounting(ids)`` (db.Jobs) and ``live()`` (every job the controller holds)."""

    def __init__(self, accounting: Callable[[Sequence[str]], list[dict[str, Any]]],
                 live: Callable[[], list[dict[str, Any]]]) -> None:
        self.accounting_records = accounting
        self.live_records = live

    def accounting(self, job_ids: Sequence[str]) -> list[SacctRow]:
        return [sacct_row(f) for f in self.accounting_records(job_ids)]

    def live(self, job_ids: Sequence[str]) -> list[SqueueRow]:
        """squeue's rows of these jobs (their tasks and components too) that have not ended."""
        wanted = {parse_job_id(i) for i in job_ids}
        bases = {w.base for w in wanted}
        rows = [squeue_row(f) for f in self.live_records()]
        return [row for row in rows if row.state.is_active
                and (row.job_id.base in bases or row.raw_id in bases or row.job_id in wanted)]


_ID_FIELDS = ("id", "array_id", "array_task_id", "array_tasks_waiting", "array_tasks_parallel",
              "heterogeneous_id", "heterogeneous_offset", "state", "state_reason", "time_limit", "num_nodes",
              "partition", "account")
DB_FIELDS = (*_ID_FIELDS, "cancelled_by", "exit_code", "exit_code_signal", "derived_exit_code",
             "derived_exit_code_signal", "elapsed_time", "nodelist", "submit_time", "start_time", "end_time")
LIVE_FIELDS = (*_ID_FIELDS, "requeue_count", "allocated_nodes", "run_time")


def fields_of(job: Any, names: Sequence[str]) -> dict[str, Any]:
    """The attributes ``names`` of a pyslurm record, plus its GPUs (allocated and requested) as TRES
    dicts and the nodes it asked for."""
    found = {name: getattr(job, name) for name in names}
    found["allocated_gpus"] = _gpu_tres(job.allocated_tres)
    found["requested_gpus"] = _gpu_tres(job.requested_tres)
    node = getattr(job.requested_tres, "node", None) if job.requested_tres else None
    found["requested_nodes"] = int(node.count) if node is not None else None
    return found


def _gpu_tres(tres: Any) -> dict[str, str]:
    """A pyslurm TrackableResources as the GPU entries of a TRES list (``gres/gpu=4``, ``gres/gpu:a100=2``)."""
    if not tres:
        return {}
    return {f"gres/{name}": str(int(gres.count)) for name, gres in tres.gres.items()
            if name == "gpu" or str(name).startswith("gpu:")}


def _array_range(waiting: str | None) -> str | None:
    """A pending array range: ``4-9`` (slurmdbd keeps it as a hex bitmap, ``0x3F0``)."""
    if not waiting:
        return None
    if waiting.lower().startswith("0x"):
        mask = int(waiting, 16)
        ids = [bit for bit in range(mask.bit_length()) if mask >> bit & 1]
        return commands.array_spec(ids) if ids else None
    return waiting


def _display_id(f: Mapping[str, Any], waiting: str | None) -> JobId:
    """The id as sacct and squeue display it: ``35``, ``12_3``, ``12_[4-9%2]``, ``30+1``.

    An array record is a task or the range of tasks still pending; pyslurm reads task id 0 as "not
    set" (None), so a task record without one is task 0.
    """
    if f["array_id"]:
        if f["array_task_id"] is None and waiting:
            throttle = f["array_tasks_parallel"]
            return JobId(str(f["array_id"]), f"[{waiting}{f'%{throttle}' if throttle else ''}]")
        return JobId(str(f["array_id"]), str(f["array_task_id"] or 0))
    if f["heterogeneous_id"]:
        return JobId(str(f["heterogeneous_id"]), het_offset=int(f["heterogeneous_offset"] or 0))
    return JobId(str(f["id"]))


def _seconds(minutes: Any) -> int | None:
    """A time limit in minutes (None or a word: no limit of its own) → seconds."""
    return int(minutes) * 60 if isinstance(minutes, int) else None


def _timestamp(epoch: Any) -> str:
    """A time as sacct prints it (``2026-11-24T21:48:54``, local time); ``Unknown`` when not set."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(int(epoch))) if epoch else "Unknown"


def _uid(user: Any) -> str | None:
    """sacct names the canceller by uid, pyslurm by user name."""
    if user is None or user == "":
        return None
    try:
        return str(pwd.getpwnam(str(user)).pw_uid)
    except KeyError:
        return str(user)


def sacct_row(f: Mapping[str, Any]) -> SacctRow:
    """A ``pyslurm.db.Job``'s fields (:data:`DB_FIELDS`) as the row sacct prints for it."""
    state = JobState.parse(str(f["state"]))
    cancelled_by = _uid(f["cancelled_by"]) if state is JobState.CANCELLED else None
    nodes = str(f["nodelist"] or "")
    return SacctRow(
        job_id=_display_id(f, _array_range(f["array_tasks_waiting"])),
        raw_id=str(f["id"]),
        state=state,
        state_text=f"{f['state']} by {cancelled_by}" if cancelled_by else str(f["state"]),
        cancelled_by=cancelled_by,
        exit_code=ExitCode(int(f["exit_code"] or 0), int(f["exit_code_signal"] or 0)),
        derived_exit_code=ExitCode(int(f["derived_exit_code"] or 0), int(f["derived_exit_code_signal"] or 0)),
        elapsed_s=int(f["elapsed_time"] or 0),
        time_limit_s=_seconds(f["time_limit"]),
        nodes=int(f["num_nodes"] or f["requested_nodes"] or 0),  # sacct: asked for, while none are held
        node_list="" if nodes.lower() in ("", "none assigned", "(null)") else nodes,
        alloc_tres=dict(f["allocated_gpus"]),
        req_tres=dict(f["requested_gpus"]),
        reason=parse_reason(str(f["state_reason"] or "")),
        partition=str(f["partition"] or ""),
        account=str(f["account"] or ""),
        submit=_timestamp(f["submit_time"]),
        start=_timestamp(f["start_time"]),
        end=_timestamp(f["end_time"]),
    )


def squeue_row(f: Mapping[str, Any]) -> SqueueRow:
    """A ``pyslurm.Job``'s fields (:data:`LIVE_FIELDS`) as the row squeue prints for it."""
    state = JobState.parse(str(f["state"]))
    running = state.is_active and not state.is_waiting
    reason = str(f["state_reason"] or "")
    return SqueueRow(
        job_id=_display_id(f, _array_range(f["array_tasks_waiting"])),
        raw_id=str(f["id"]),
        state=state,
        tres=dict(f["allocated_gpus"] if running else f["requested_gpus"]),
        restarts=int(f["requeue_count"] or 0),
        nodes=int(f["num_nodes"] or 0),
        node_list=str(f["allocated_nodes"] or "") if running else "",
        elapsed_s=int(f["run_time"] or 0),
        time_limit_s=_seconds(f["time_limit"]),
        partition=str(f["partition"] or ""),
        account=str(f["account"] or ""),
        reason=parse_reason(reason),
        reason_text=reason,
    )


__all__ = ["DB_FIELDS", "LIVE_FIELDS", "RecordSource", "fields_of", "sacct_row", "squeue_row"]
