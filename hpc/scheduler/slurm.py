"""The Slurm command-line backend of :class:`hpc.scheduler.Scheduler`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from hpc.errors import SchedulerOutputError, SchedulerUnavailable
from hpc.scheduler import commands
from hpc.scheduler.job_usage import JobUsage, parse_job_usage
from hpc.scheduler.parse import parse_sbatch_parsable, parse_scontrol_config
from hpc.scheduler.run import CommandResult, SlurmCli, classify
from hpc.scheduler.status import SQUEUE_NO_SUCH_JOB, JobStatus, query
from hpc.scheduler.submission import NO_OPTIONS, SubmitOptions

# scancel's complaints about jobs that have already ended: cancelling them is already done.
_ALREADY_OVER = ("already completing or completed", SQUEUE_NO_SUCH_JOB)


class SlurmScheduler:
    """Talks to Slurm through sbatch, sacct, squeue, scancel and scontrol. Construction runs nothing."""

    name = "slurm"

    def __init__(self, cli: SlurmCli | None = None) -> None:
        self.cli = cli or SlurmCli()

    def submit(self, script_path: Path | str, options: SubmitOptions = NO_OPTIONS, *,
               sbatch_args: Sequence[str] = ()) -> str:
        """``sbatch --parsable [options] [sbatch_args] script`` → the job id. Retried only if sbatch never
        reached the controller, so a job is never submitted twice. ``sbatch_args``: further sbatch
        options, for callers that speak Slurm (the cluster tests)."""
        argv = commands.sbatch(script_path, [*commands.submit_args(options), *sbatch_args])
        try:
            result = self.cli.run(argv, repeatable=False)
        except SchedulerUnavailable as err:
            failure = classify(CommandResult(tuple(err.argv), err.returncode, err.stdout, err.stderr))
            if failure is not None and failure.request_sent:
                err = SchedulerUnavailable(
                    argv=err.argv,
                    returncode=err.returncode,
                    stdout=err.stdout,
                    stderr=err.stderr,
                    transient=True,
                    summary=f"{failure.summary}; the job may have been submitted anyway: "
                    "check hpc-tf status --all before submitting again",
                )
            raise err from None
        return parse_sbatch_parsable(result.stdout).job_id

    def query(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return query(self.cli, job_ids)

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Cancel jobs (or array tasks); jobs that already ended are not an error."""
        if job_ids:
            self.cli.run(commands.scancel(job_ids), tolerate=_ALREADY_OVER)

    def usage(self, job_ids: Sequence[str] = (), *, since: float | None = None,
              user: str | None = None) -> list[JobUsage]:
        """One ``sacct`` call (:func:`hpc.scheduler.commands.sacct_usage`): GPUs held × ElapsedRaw per allocation."""
        if not job_ids and since is None:
            return []
        start = None if job_ids else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since))
        argv = commands.sacct_usage(job_ids, since=start, user=None if job_ids else user)
        stdout = self.cli.run(argv).stdout
        try:
            return parse_job_usage(stdout, commands.USAGE_FIELDS)
        except SchedulerOutputError as err:
            raise SchedulerOutputError(f"{err.message} (command: {' '.join(argv)})") from err

    def show_config(self) -> dict[str, str]:
        """``scontrol show config`` as a dict (``MaxArraySize``, ``MinJobAge``, ``MessageTimeout`` …)."""
        return parse_scontrol_config(self.cli.run(commands.scontrol_show_config()).stdout)
