"""Finding the runs a user launched: by run directory, by job id, or all under the runs directory.

A run directory records its job id (submission.json), so ``hpc-tf status RUN_DIR`` and
``hpc-tf logs JOBID`` work without asking the scheduler where anything is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from hpc.errors import HpcTfError
from hpc.paths import RunPaths
from hpc.rundir import Submission, read_submission
from hpc.runtime.node.batch import load_batch_job
from hpc.runtime.node.requeue import gave_up
from hpc.scheduler.states import JobState
from hpc.scheduler.status import JobStatus
from hpc.text import shown

_JOB_ID = re.compile(r"\d+(?:_\d+)?")


@dataclass(frozen=True)
class Run:
    job_id: str
    paths: RunPaths | None  # None: a job id hpc-tf did not launch (or whose run dir is elsewhere)
    submission: Submission | None = None

    @property
    def name(self) -> str:
        return self.paths.root.name if self.paths else "-"


def list_runs(root: Path) -> list[Run]:
    """Every submitted run under ``root``, oldest first (run ids start with a timestamp)."""
    runs = []
    for submission_file in sorted(root.glob(f"*/{RunPaths.at('.').submission.name}"), key=lambda p: p.stat().st_mtime):
        paths = RunPaths.at(submission_file.parent)
        submission = read_submission(paths)
        runs.append(Run(job_id=submission.job_id, paths=paths, submission=submission))
    return runs


def find_run(target: str, root: Path) -> Run:
    """A run directory path, or a job id (looked up among the runs under ``root``)."""
    path = Path(target).expanduser()
    if path.is_dir():
        paths = RunPaths.at(path.resolve())
        submission = read_submission(paths)
        return Run(job_id=submission.job_id, paths=paths, submission=submission)
    if not _JOB_ID.fullmatch(target):
        raise HpcTfError(f"{shown(target)} is neither a run directory nor a job id",
                         hint="pass the directory hpc-tf launch printed, or a numeric job id")
    base = target.split("_")[0]
    for run in reversed(list_runs(root)) if root.is_dir() else []:
        if run.job_id == base:
            return run
    return Run(job_id=target, paths=None)


def with_run_account(run: Run, status: JobStatus) -> JobStatus:
    """``status`` with what the run's own settings add to its end: a preemptible job that failed although
    it asked to be requeued had used up ``preemption.max_restarts`` (the one requeue policy,
    hpc/runtime/node/requeue.py, applied to the run's resolved job). The same for Slurm and local runs."""
    if status.state is not JobState.FAILED or status.exit_code is None or run.paths is None:
        return status
    try:
        job = load_batch_job(str(run.paths.resolved), restart_log="")
    except HpcTfError:  # a run directory hpc-tf did not write, or one since removed: nothing to add
        return status
    why = gave_up(status.exit_code.shell_code, status.restarts, job.max_restarts) if job.preemption else None
    return replace(status, note="; ".join(filter(None, (why, status.note)))) if why else status
