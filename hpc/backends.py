"""Which scheduler runs a job: Slurm, or the local launcher's emulation (``launcher: local`` sites)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hpc.local.jobs import STATE_DIR_NAME
from hpc.local.scheduler import LocalScheduler
from hpc.runs import Run
from hpc.scheduler import JobStatus, PollBackoff, Scheduler, SlurmScheduler


def scheduler_for(launcher: str, runs_root: Path) -> Scheduler:
    """The scheduler of a launcher; the local launcher keeps its job records in the runs directory."""
    if launcher == "local":
        return LocalScheduler(runs_root / STATE_DIR_NAME)
    return SlurmScheduler()


def poll_backoff(scheduler: Scheduler) -> PollBackoff:
    """How often to ask: a local job's status is a file read; Slurm's controller is shared, so back off."""
    return PollBackoff(first_s=0.5, max_s=2.0) if scheduler.name == "local" else PollBackoff()


def run_launcher(run: Run, default: str) -> str:
    """The launcher that started a run (recorded at submission), or ``default`` for a bare job id."""
    return run.submission.launcher if run.submission is not None else default


def _ids_by_launcher(runs: Sequence[Run], default_launcher: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for run in runs:
        grouped.setdefault(run_launcher(run, default_launcher), []).append(run.job_id)
    return grouped


def query_runs(runs: Sequence[Run], default_launcher: str, runs_root: Path) -> Mapping[str, JobStatus]:
    """Status of every run: one batched query per launcher."""
    statuses: dict[str, JobStatus] = {}
    for launcher, ids in _ids_by_launcher(runs, default_launcher).items():
        statuses.update(scheduler_for(launcher, runs_root).query(ids))
    return statuses


def cancel_runs(runs: Sequence[Run], default_launcher: str, runs_root: Path) -> None:
    for launcher, ids in _ids_by_launcher(runs, default_launcher).items():
        scheduler_for(launcher, runs_root).cancel(ids)
