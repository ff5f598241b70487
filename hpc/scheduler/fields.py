"""Single values as Slurm's tools print them: job ids, exit codes, durations, TRES lists.

Every function takes the text of one field, exactly as ``sacct --parsable2``, ``squeue`` or
``scontrol`` print it, and returns a typed value. Bad input raises :class:`SchedulerOutputError`
(the tools printed something this module does not know), never a bare ``ValueError``.

Job ids, by example::

    35              a job
    12_3            task 3 of array job 12
    12_[4-9%2]      array 12's tasks 4..9, still pending as one record, at most 2 running at once
    30+1            component 1 of heterogeneous job 30
    12_3.batch      a step of a job (sacct without -X); ``.extern``, ``.0``, ``.interactive`` …
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from hpc.errors import SchedulerOutputError

_JOB_ID = re.compile(
    r"(?P<base>\d+)"
    r"(?:_(?P<task>\d+|\[[^\]]*\])|\+(?P<het>\d+))?"
    r"(?:\.(?P<step>[\w-]+))?"
)


@dataclass(frozen=True)
class JobId:
    """A parsed job id. ``str(job_id)`` gives the text back unchanged."""

    base: str
    array_task: str | None = None  # "3", or "[4-9%2]" for a pending range
    het_offset: int | None = None
    step: str | None = None  # "batch", "extern", "0", …

    @property
    def job(self) -> str:
        """The id without a step: what ``sacct -j``, ``squeue -j`` and ``scancel`` accept."""
        if self.array_task is not None:
            return f"{self.base}_{self.array_task}"
        if self.het_offset is not None:
            return f"{self.base}+{self.het_offset}"
        return self.base

    @property
    def is_task_range(self) -> bool:
        return self.array_task is not None and self.array_task.startswith("[")

    def __str__(self) -> str:
        return self.job if self.step is None else f"{self.job}.{self.step}"


def parse_job_id(text: str) -> JobId:
    match = _JOB_ID.fullmatch(text.strip())
    if match is None:
        raise SchedulerOutputError(
            f"'{text}' is not a Slurm job id (expected e.g. 35, 12_3, 12_[4-9%2], 30+1)"
        )
    het = match["het"]
    return JobId(match["base"], match["task"], int(het) if het is not None else None, match["step"])


def is_job_id(text: str) -> bool:
    """True for ids a user may ask about (no step, no pending range): ``35``, ``12_3``, ``30+1``."""
    match = _JOB_ID.fullmatch(text)
    return match is not None and match["step"] is None and not (match["task"] or "").startswith("[")


@dataclass(frozen=True)
class ArrayTasks:
    """The task ids inside ``[4-9%2]`` or ``[1,3,5-7]``, and the ``%N`` throttle if any."""

    ids: tuple[int, ...]
    throttle: int | None = None


def parse_array_tasks(spec: str) -> ArrayTasks:
    """Expand an array task spec: ``3``, ``[4-9%2]``, ``[1,3,5-7]``, ``[0-10:2]`` (step)."""
    body = spec.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    body, _, throttle = body.partition("%")
    ids: list[int] = []
    try:
        for part in filter(None, body.split(",")):
            first, _, rest = part.partition("-")
            if not rest:
                ids.append(int(first))
                continue
            last, _, step = rest.partition(":")
            ids.extend(range(int(first), int(last) + 1, int(step) if step else 1))
        return ArrayTasks(tuple(ids), int(throttle) if throttle else None)
    except ValueError:
        raise SchedulerOutputError(f"'{spec}' is not a Slurm array task list") from None


@dataclass(frozen=True)
class ExitCode:
    """``sacct``'s ``ExitCode`` ``status:signal``: ``1:0`` exited 1; ``0:15`` killed by SIGTERM."""

    status: int
    signal: int = 0

    @property
    def shell_code(self) -> int:
        """The code a shell would report for this process: the status, or 128 + signal."""
        return 128 + self.signal if self.signal else self.status

    def __str__(self) -> str:
        return f"{self.status}:{self.signal}"


def parse_exit_code(text: str) -> ExitCode | None:
    """``3:0`` → ExitCode(3, 0); empty (a pending job) → None."""
    text = text.strip()
    if not text:
        return None
    status, _, signal = text.partition(":")
    try:
        return ExitCode(int(status), int(signal or 0))
    except ValueError:
        raise SchedulerOutputError(f"'{text}' is not a Slurm exit code (expected status:signal)") from None


# Words Slurm prints instead of a duration. None means "no limit of its own": an explicit
# UNLIMITED, or Partition_Limit (the job inherits its partition's MaxTime, which sacct doesn't say).
_NO_DURATION = {"", "unlimited", "partition_limit", "invalid", "not_set", "n/a", "none", "unknown"}
_CLOCK = re.compile(r"(?:(?P<d>\d+)-)?(?:(?:(?P<h>\d+):)?(?P<m>\d+):)?(?P<s>\d+)(?:\.\d+)?")


def parse_duration_s(text: str) -> int | None:
    """Seconds in a duration as Slurm's tools *print* it.

    ``1-02:03:04``, ``02:03:04``, ``3:04`` (M:SS, squeue), ``00:01.234`` (fractions dropped);
    ``UNLIMITED`` / ``Partition_Limit`` / ``INVALID`` / empty → None. Unlike a user-written
    ``--time``, a bare number here is seconds: the tools never print bare minutes.
    """
    text = text.strip()
    if text.lower() in _NO_DURATION:
        return None
    match = _CLOCK.fullmatch(text)
    if match is None:
        raise SchedulerOutputError(f"'{text}' is not a Slurm duration (expected e.g. 1-02:03:04)")
    days, hours, minutes = (int(match[g] or 0) for g in ("d", "h", "m"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + int(match["s"])


def parse_tres(text: str) -> dict[str, str]:
    """``billing=1,cpu=1,gres/gpu=4,mem=1000M,node=1`` → {"cpu": "1", "gres/gpu": "4", …}; empty → {}."""
    tres: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SchedulerOutputError(f"'{text}' is not a Slurm TRES list (expected name=value,…)")
        tres[name] = value
    return tres


def gpu_count(tres: Mapping[str, str]) -> int:
    """GPUs in a TRES dict: ``gres/gpu`` (the total), else the sum of typed ``gres/gpu:a100`` entries."""
    if "gres/gpu" in tres:
        return _count(tres["gres/gpu"])
    return sum(_count(value) for name, value in tres.items() if name.startswith("gres/gpu:"))


def _count(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SchedulerOutputError(f"'{value}' is not a GPU count") from None


def parse_state(text: str) -> tuple[str, str | None]:
    """``CANCELLED by 1000`` → ("CANCELLED", "1000"); ``RUNNING`` → ("RUNNING", None).

    Returns the state word and, for a cancellation, the uid that cancelled it.
    """
    word, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    by = rest[3:].strip() if rest.startswith("by ") else None
    return word.rstrip("+"), by
