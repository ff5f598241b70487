"""argv lists for Slurm's tools: pure functions, no I/O. The only place that spells Slurm flags.

Every query is batched: many job ids go into one call (``--jobs=1,2,3``), never one call per job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hpc.errors import HpcTfError, SchedulerOutputError
from hpc.scheduler.fields import parse_job_id

# sacct: explicit fields, none of them user-controlled free text (a job name may contain "|",
# the --parsable2 separator, and sacct does not escape it).
SACCT_FIELDS: tuple[str, ...] = (
    "JobID",
    "JobIDRaw",
    "State",
    "ExitCode",
    "DerivedExitCode",
    "Elapsed",
    "Timelimit",
    "NNodes",
    "NodeList",
    "AllocTRES",
    "ReqTRES",
    "Reason",
    "Partition",
    "Account",
    "Submit",
    "Start",
    "End",
)

# squeue --Format: width 0 (no padding) and "|" after each field. The reason goes last: it is
# the only one that may hold free text ("ReqNodeNotAvail, UnavailableNodes:node1").
SQUEUE_FIELDS: tuple[str, ...] = (
    "JobArrayID",  # as displayed: 35, 12_3, 12_[4-9%2], 30+1
    "JobID",  # raw
    "State",
    "tres-alloc",  # allocated TRES, or the requested ones while pending
    "RestartCnt",
    "NumNodes",
    "NodeList",
    "TimeUsed",
    "TimeLimit",
    "Partition",
    "Account",
    "Reason",
)
SQUEUE_SEPARATOR = "|"


def checked_job_ids(job_ids: Sequence[str]) -> list[str]:
    """Ids as the tools accept them, de-duplicated in order; anything else is refused.

    Refusing here keeps user text (``12;rm -rf``, ``--all``) out of every argv.
    """
    seen: dict[str, None] = {}
    for raw in job_ids:
        text = raw.strip()
        try:
            job_id = parse_job_id(text)
        except SchedulerOutputError:
            job_id = None
        if job_id is None or job_id.step is not None or job_id.is_task_range:
            raise HpcTfError(f"'{raw}' is not a Slurm job id", hint="job ids look like 123, 123_4 or 123+1")
        seen.setdefault(text, None)
    return list(seen)


def _check_args(args: Sequence[str]) -> list[str]:
    for arg in args:
        if "\n" in arg or "\0" in arg:
            raise HpcTfError(f"sbatch argument {arg!r} contains a newline or NUL")
    return list(args)


def sbatch(script: Path | str, extra_args: Sequence[str] = ()) -> list[str]:
    """Submit a script; prints ``35`` (or ``36;cluster``). ``extra_args`` e.g. ``--array=0-9%2``,
    ``--dependency=afterok:35``; they go before the script so sbatch reads them as options."""
    return ["sbatch", "--parsable", *_check_args(extra_args), str(script)]


def sacct(job_ids: Sequence[str], *, steps: bool = False, fields: Sequence[str] = SACCT_FIELDS) -> list[str]:
    """One accounting query for many jobs.

    ``--duplicates`` keeps the records of earlier runs of a requeued job (their count is the
    restart count); without ``steps`` only allocations (``-X``), not ``.batch``/``.0`` steps.
    ``-j`` without ``-S`` searches from the epoch, so old jobs are found too.
    """
    argv = [
        "sacct",
        "--parsable2",
        "--noheader",
        "--duplicates",
        f"--format={','.join(fields)}",
        f"--jobs={','.join(checked_job_ids(job_ids))}",
    ]
    if not steps:
        argv.insert(1, "--allocations")
    return argv


def squeue(job_ids: Sequence[str]) -> list[str]:
    """Live state, pending reason and resources of many jobs in one call (array tasks included).

    squeue shows only jobs that have not ended, even with --jobs; ids it no longer knows at all
    make it exit 1 with ``Invalid job id specified``.
    """
    fields = ",".join(f"{name}:0{SQUEUE_SEPARATOR}" for name in SQUEUE_FIELDS[:-1])
    return [
        "squeue",
        "--noheader",
        f"--Format={fields},{SQUEUE_FIELDS[-1]}:0",
        f"--jobs={','.join(checked_job_ids(job_ids))}",
    ]


def scancel(job_ids: Sequence[str]) -> list[str]:
    return ["scancel", *checked_job_ids(job_ids)]


def scontrol_show_job(job_id: str | None = None) -> list[str]:
    """One line per job (``-o``); all jobs the caller may see when ``job_id`` is None."""
    return ["scontrol", "--oneliner", "show", "job", *([] if job_id is None else checked_job_ids([job_id]))]


def scontrol_show_config() -> list[str]:
    return ["scontrol", "show", "config"]


def sdiag() -> list[str]:
    return ["sdiag"]
