"""The scheduler: the only part of hpc-tf that knows Slurm's command syntax.

Callers use the :class:`Scheduler` protocol; :class:`SlurmScheduler` implements it with Slurm's
command-line tools (argv builders in ``commands``, parsers of their output in ``parse``/``fields``/``accounting``,
state and reason maps in ``states``/``reasons``, batched status in ``status``, polling in
``follow``). Another backend (pyslurm, slurmrestd) would implement the same protocol.

Importing this package runs nothing and calls no Slurm tool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from hpc.scheduler.fields import ExitCode
from hpc.scheduler.follow import Follower, PollBackoff
from hpc.scheduler.job_usage import JobUsage
from hpc.scheduler.reasons import PendingReason, ReasonCategory, parse_reason
from hpc.scheduler.run import CommandResult, RetryPolicy, Runner, SlurmCli, subprocess_runner
from hpc.scheduler.slurm import SlurmScheduler
from hpc.scheduler.states import JobState
from hpc.scheduler.status import JobStatus
from hpc.scheduler.submission import NO_OPTIONS, ArrayRequest, SubmitOptions


class Scheduler(Protocol):
    name: str

    def submit(self, script_path: Path | str, options: SubmitOptions = NO_OPTIONS) -> str:
        """Submit a batch script; return the job id. A backend that cannot honour an option (the local
        launcher runs no arrays) refuses the submission."""
        ...

    def query(self, job_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        """Status of many jobs in one go; unknown ids map to JobState.UNKNOWN."""
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel jobs; ones that already ended are not an error."""
        ...

    def show_config(self) -> Mapping[str, str]:
        """The scheduler's configuration (Slurm: ``scontrol show config``)."""
        ...

    def usage(self, job_ids: Sequence[str] = (), *, since: float | None = None,
              user: str | None = None) -> list[JobUsage]:
        """GPU time held, in one go: of the jobs ``job_ids`` (an array id stands for its tasks), or of
        ``user``'s jobs that ran (or waited) after ``since`` (unix time) until now; one record per
        allocation, earlier runs of a requeued job included."""
        ...


__all__ = [
    "NO_OPTIONS",
    "ArrayRequest",
    "CommandResult",
    "ExitCode",
    "Follower",
    "JobState",
    "JobStatus",
    "JobUsage",
    "PendingReason",
    "PollBackoff",
    "ReasonCategory",
    "RetryPolicy",
    "Runner",
    "Scheduler",
    "SlurmCli",
    "SlurmScheduler",
    "SubmitOptions",
    "parse_reason",
    "subprocess_runner",
]
