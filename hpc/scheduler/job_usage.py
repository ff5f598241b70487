"""What jobs cost, from accounting: GPUs allocated x elapsed, per allocation (``hpc-tf usage``, campaign
results' GPU-hours). Read from sacct (:func:`parse_job_usage`) or from pyslurm's records (:func:`usage_of`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hpc.errors import SchedulerOutputError
from hpc.scheduler.fields import gpu_count, parse_job_id, parse_state, parse_tres
from hpc.scheduler.parse import SacctRow, parsable_records
from hpc.scheduler.states import JobState


@dataclass(frozen=True)
class JobUsage:
    """One allocation's GPU time: a job, an array task, or one earlier run of a requeued job."""

    job_id: str  # as displayed: 35, 12_3 (a pending range 12_[4-9] holds nothing yet)
    raw_id: str
    state: JobState
    account: str
    gpus: int  # allocated (AllocTRES); 0 while pending, or for a job without GPUs
    elapsed_s: int  # ElapsedRaw: start to end, or to now while it runs
    start: str = ""  # as the scheduler prints it; "Unknown"/"" before it started

    @property
    def gpu_seconds(self) -> int:
        return self.gpus * self.elapsed_s

    @property
    def base(self) -> str:
        """The job id sbatch printed: the array's for a task (``12`` for ``12_3``)."""
        return parse_job_id(self.job_id).base


def parse_job_usage(stdout: str, fields: Sequence[str]) -> list[JobUsage]:
    """Rows of :func:`hpc.scheduler.commands.sacct_usage` (``fields`` as asked), in sacct's order."""
    usage: list[JobUsage] = []
    for f in parsable_records(stdout, fields, "sacct"):
        elapsed = f.get("ElapsedRaw", "")
        if not elapsed.isdigit():
            raise SchedulerOutputError(f"sacct printed ElapsedRaw {elapsed!r}, not a number of seconds")
        usage.append(JobUsage(
            job_id=parse_job_id(f["JobID"]).job,
            raw_id=f.get("JobIDRaw", ""),
            state=JobState.parse(parse_state(f["State"])[0]),
            account=f.get("Account", ""),
            gpus=gpu_count(parse_tres(f.get("AllocTRES", ""))),
            elapsed_s=int(elapsed),
            start=f.get("Start", ""),
        ))
    return usage


def usage_of(row: SacctRow) -> JobUsage:
    """An accounting row read another way (pyslurm's records, :mod:`hpc.scheduler.libslurm_rows`) as
    what it cost: GPUs allocated, not the ones asked for."""
    return JobUsage(job_id=row.job_id.job, raw_id=row.raw_id, state=row.state, account=row.account,
                    gpus=gpu_count(row.alloc_tres), elapsed_s=row.elapsed_s or 0, start=row.start)
