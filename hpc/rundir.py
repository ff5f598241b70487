"""Creating run directories: complete or absent, never half-written."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpc.atomic import write_failure, write_text_atomic
from hpc.errors import HpcTfError
from hpc.paths import RunPaths
from hpc.records import read_record
from hpc.resolve import ResolvedJob
from hpc.runtime import install_into


def new_run_id(name: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


@contextmanager
def staged_directory(final: Path, what: str = "run directory") -> Iterator[Path]:
    """Yield a hidden sibling of ``final`` to fill; rename it to ``final`` when the block ends, or
    remove it on any failure: a run or campaign directory is complete or absent, never half-written."""
    if final.exists():
        raise HpcTfError(f"{what} already exists: {final}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_failure(err, final.parent, "runs_dir") from None
    staging = final.parent / f".{final.name}.partial"
    try:
        staging.mkdir()
        yield staging
        os.rename(staging, final)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(err, OSError):  # a full disk, a quota, a read-only mount: one line, nothing left
            raise write_failure(err, final.parent, "runs_dir") from None
        raise


def write_run_dir(job: ResolvedJob, script: str | None = None, handoff_script: str | None = None) -> RunPaths:
    """Write the resolved job, an empty logs dir and the node runtime (bootstrap, batch driver; a
    function job's teardown requeues through the driver too), and for a command job its script and
    the hand-off job's script, under a temporary name, then rename."""
    paths = RunPaths.at(job.run_dir)
    with staged_directory(paths.root) as root:
        staging = RunPaths.at(root)
        staging.logs_dir.mkdir()
        write_text_atomic(staging.resolved, job.to_json())
        install_into(staging.runtime_dir)
        if script is not None:
            write_text_atomic(staging.script, script, mode=0o755)
        if handoff_script is not None:
            write_text_atomic(staging.handoff_script, handoff_script, mode=0o755)
    return paths


@contextmanager
def discarded_on_failure(root: Path) -> Iterator[None]:
    """Remove ``root`` (a run directory, or a job's script) again when the block (its submission) fails,
    whatever the failure, so no run looks submitted that never was."""
    try:
        yield
    except BaseException:
        if root.is_dir():
            shutil.rmtree(root, ignore_errors=True)
        else:
            root.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Submission:
    job_id: str
    cluster: str | None
    submitted_at: str
    launcher: str = "slurm"  # "local": a job of the local launcher (hpc.local), not a Slurm job

    def to_json(self) -> str:
        return json.dumps({"job_id": self.job_id, "cluster": self.cluster, "submitted_at": self.submitted_at,
                           "launcher": self.launcher}, indent=2) + "\n"


def record_submission(paths: RunPaths, job_id: str, cluster: str | None, launcher: str = "slurm") -> Submission:
    submission = Submission(job_id=job_id, cluster=cluster, launcher=launcher,
                            submitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_text_atomic(paths.submission, submission.to_json())
    return submission


def read_submission(paths: RunPaths) -> Submission:
    def parse(data: dict[str, Any]) -> Submission:
        return Submission(job_id=str(data["job_id"]), cluster=data.get("cluster"), submitted_at=data["submitted_at"],
                          launcher=data.get("launcher", "slurm"))

    try:
        return read_record(paths.submission, "the run's submission record", parse=parse,
                           fix="the job id is in the batch log's name (logs/batch-JOBID.out): hpc-tf status JOBID")
    except FileNotFoundError:
        raise HpcTfError(f"{paths.root} is not a submitted run (no {paths.submission.name})") from None
