"""The one submission path: a :class:`Backend` per launcher (Slurm's CLI, or the local launcher).

A job is resolved first (:func:`hpc.resolve.resolve`), then handed to its launcher's backend, which
owns the GPU quota preflight, the run directory (staged, renamed, removed again when the submission
fails), the submission with typed options (:class:`hpc.scheduler.SubmitOptions`), status and cancel.
``launch`` (and its hand-off job), ``submit_function``, campaigns (their directory staged the same
way, their arrays checked with :meth:`Backend.check_array_quota`) and the serving node go through
it. A new scheduler is one :class:`~hpc.scheduler.Scheduler`, one Backend and one line in
:func:`backend_for`. Slurm is reached through its tools or through pyslurm, as the site's
``scheduler:`` key says (:mod:`hpc.scheduler.choice`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpc.errors import HpcTfError
from hpc.local.jobs import STATE_DIR_NAME
from hpc.local.scheduler import LocalScheduler
from hpc.paths import RunPaths
from hpc.resolve import ResolvedJob
from hpc.rundir import discarded_on_failure, staged_directory, write_run_dir
from hpc.runs import Run, with_run_account
from hpc.scheduler import NO_OPTIONS, JobStatus, PollBackoff, Scheduler, SlurmCli, SlurmScheduler, SubmitOptions
from hpc.scheduler.choice import SchedulerKind, site_choice

if TYPE_CHECKING:
    from hpc.quota import QuotaVerdict


@dataclass(frozen=True)
class QuotaPolicy:
    """What to do with a job the GPU quota cannot take now (``hpc-tf launch --force / --no-queue``)."""

    force: bool = False  # submit even a job that can never fit (the verdict is still returned, to be shown)
    no_queue: bool = False  # refuse a job that would wait for quota


CHECK_QUOTA = QuotaPolicy()  # refuse a job that can never fit, let one that must wait queue


class Backend:
    """A launcher's way to run jobs; this base class has no quota (the local launcher's machine always fits)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    @property
    def name(self) -> str:
        return self.scheduler.name

    def check_quota(self, job: ResolvedJob, policy: QuotaPolicy = CHECK_QUOTA) -> QuotaVerdict | None:
        """Raise QuotaRefused for a job the quota refuses under ``policy``; else the verdict to show
        (None: this launcher has no quota to check)."""
        return None

    def check_array_quota(self, job: ResolvedJob, concurrent: int,
                          policy: QuotaPolicy = CHECK_QUOTA) -> QuotaVerdict | None:
        """The quota preflight of an array whose tasks are each ``job``, at most ``concurrent`` running at once.

        An array fits when one task fits: each task is its own job to Slurm, so per-job and per-node caps
        judge a task, and a task that can never start is refused as launch refuses it. What the throttle
        lets run together (one task times ``concurrent``) is then checked against what is free now: when
        that must wait, that verdict is returned, to be shown (refused under ``no_queue``). A throttle over
        what the account may ever hold is no refusal: the tasks over it queue behind the others.
        """
        verdict = self.check_quota(job, policy)
        if verdict is None or concurrent <= 1:
            return verdict
        from hpc.quota import VerdictKind  # only when this backend has a quota

        if verdict.kind is not VerdictKind.OK:
            return verdict
        together = self.check_quota(job.model_copy(update={"nodes": job.nodes * concurrent}),
                                    QuotaPolicy(force=True))
        if together is None or together.kind is not VerdictKind.MUST_WAIT:
            return verdict
        if policy.no_queue and not policy.force:
            raise together.refusal()
        return together

    def staged(self, final: Path, what: str) -> AbstractContextManager[Path]:
        """A directory written complete under a temporary name, renamed to ``final`` at the end."""
        return staged_directory(final, what)

    def create_run_dir(self, job: ResolvedJob, script: str | None = None,
                       handoff_script: str | None = None) -> RunPaths:
        """The job's run directory, complete (staged, then renamed); see :func:`hpc.rundir.write_run_dir`."""
        return write_run_dir(job, script, handoff_script)

    def submitting(self, written: RunPaths | Path) -> AbstractContextManager[None]:
        """Wrap the submission of a run (or of a job with no run directory, only its script): when it
        fails, the run directory (the script) is removed again."""
        return discarded_on_failure(written.root if isinstance(written, RunPaths) else written)

    def submit(self, script_path: Path | str, options: SubmitOptions = NO_OPTIONS) -> str:
        return self.scheduler.submit(script_path, options)

    def query(self, job_ids: Sequence[str]) -> Mapping[str, JobStatus]:
        return self.scheduler.query(job_ids)

    def cancel(self, job_ids: Sequence[str]) -> None:
        self.scheduler.cancel(job_ids)


class LocalBackend(Backend):
    """The local launcher (:mod:`hpc.local`): this machine, no quota."""


class SlurmBackend(Backend):
    """Slurm through its command-line tools; the GPU quota is checked before sbatch (with ``quota_cli``,
    else the quota's own quick one)."""

    def __init__(self, scheduler: Scheduler, quota_cli: SlurmCli | None = None, user: str | None = None) -> None:
        super().__init__(scheduler)
        self.quota_cli = quota_cli
        self.user = user

    def check_quota(self, job: ResolvedJob, policy: QuotaPolicy = CHECK_QUOTA) -> QuotaVerdict | None:
        from hpc.quota import StoredAnswers, check_launch, current_user  # only when submitting to Slurm

        if self.quota_cli is not None:  # a given Slurm: ask it, nothing remembered
            return check_launch(job, force=policy.force, no_queue=policy.no_queue, cli=self.quota_cli, user=self.user)
        return check_launch(job, force=policy.force, no_queue=policy.no_queue,
                            stored=StoredAnswers.for_user(current_user()))


def backend_for(launcher: str, runs_root: Path, scheduler: SchedulerKind = "cli") -> Backend:
    """The backend of a launcher (``launcher:`` of the site); ``runs_root`` holds the local launcher's records;
    ``scheduler`` (the site's ``scheduler:``) how Slurm is reached."""
    chosen = scheduler_for(launcher, runs_root, scheduler)
    return LocalBackend(chosen) if launcher == "local" else SlurmBackend(chosen)


def scheduler_for(launcher: str, runs_root: Path, scheduler: SchedulerKind = "cli") -> Scheduler:
    """The scheduler of a launcher; the local launcher keeps its job records in the runs directory."""
    if launcher == "local":
        return LocalScheduler(runs_root / STATE_DIR_NAME)
    return slurm_scheduler(scheduler)


def slurm_scheduler(scheduler: SchedulerKind = "cli") -> Scheduler:
    """Slurm through its tools, or through pyslurm (imported only here, only when chosen)."""
    if site_choice(scheduler).chosen == "pyslurm":
        from hpc.scheduler.libslurm import PyslurmScheduler

        try:
            return PyslurmScheduler()
        except ImportError as err:  # installed for this Slurm, yet it cannot load its libslurm
            if scheduler == "pyslurm":
                raise HpcTfError(f"scheduler: pyslurm cannot be used: importing pyslurm failed: {err}",
                                 hint="reinstall pyslurm against this Slurm, or set scheduler: cli") from None
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


def query_runs(runs: Sequence[Run], default_launcher: str, runs_root: Path,
               scheduler: SchedulerKind = "cli") -> Mapping[str, JobStatus]:
    """Status of every run: one batched query per launcher; each with what its run directory adds
    (:func:`hpc.runs.with_run_account`)."""
    statuses: dict[str, JobStatus] = {}
    for launcher, ids in _ids_by_launcher(runs, default_launcher).items():
        statuses.update(scheduler_for(launcher, runs_root, scheduler).query(ids))
    for run in runs:
        if run.job_id in statuses:
            statuses[run.job_id] = with_run_account(run, statuses[run.job_id])
    return statuses


def cancel_runs(runs: Sequence[Run], default_launcher: str, runs_root: Path,
                scheduler: SchedulerKind = "cli") -> None:
    for launcher, ids in _ids_by_launcher(runs, default_launcher).items():
        scheduler_for(launcher, runs_root, scheduler).cancel(ids)
