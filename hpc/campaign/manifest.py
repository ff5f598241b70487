"""The campaign manifest: one JSON file, written atomically, that says everything about a campaign.

Every task's parameters, and per stage its attempts (job id, state, exit code, pending reason),
its output directory; every submission (array indices, throttle, dependencies, script). A
*unit* is one task in one array stage, or a whole single-job stage; its last attempt is current.

Writers hold :func:`locked` so that ``status`` refreshing states and ``resubmit`` adding attempts
never overwrite each other's work.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hpc.atomic import write_text_atomic
from hpc.campaign.model import Value
from hpc.campaign.paths import CampaignPaths
from hpc.errors import HpcTfError
from hpc.records import read_record
from hpc.scheduler import JobState

FORMAT = 1


class Record(BaseModel):
    # a newer hpc-tf may add keys; this one keeps reading what it knows
    model_config = ConfigDict(extra="ignore", validate_assignment=False)


class Attempt(Record):
    job_id: str  # as Slurm displays it: "12_3" (array task 3 of job 12) or "12"
    submission: str  # the job id sbatch printed: the array (or the single job)
    state: str = JobState.PENDING.value
    reason: str | None = None  # pending reason code while waiting
    exit_code: int | None = None  # as a shell reports it (128+signal when killed)
    raw_id: str | None = None  # the task's own job id (SLURM_JOB_ID; names its log files)
    node_list: str = ""

    @property
    def job_state(self) -> JobState:
        return JobState.parse(self.state) if self.state != JobState.UNKNOWN.value else JobState.UNKNOWN

    @property
    def array_index(self) -> int | None:
        _, sep, index = self.job_id.partition("_")
        return int(index) if sep else None


class Unit(Record):
    output_dir: str
    attempts: list[Attempt] = Field(default_factory=list)

    @property
    def current(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


class TaskRecord(Record):
    id: int
    key: str
    params: dict[str, Value]
    dir: str
    stages: dict[str, Unit] = Field(default_factory=dict)  # array stages only


class StageRecord(Record):
    name: str
    per_task: bool
    partition: str | None
    nodes: int
    gpus: int  # per task (or for the single job)
    throttle: int | None
    after: list[tuple[str, str]]  # (upstream stage, dependency type)
    run_dir: str
    job: Unit | None = None  # single-job stages


class SubmissionRecord(Record):
    job_id: str
    stage: str
    offset: int  # task id = offset + array index
    task_ids: list[int]  # empty for a single-job stage
    throttle: int | None
    after: list[tuple[str, list[str]]]  # (dependency type, job ids)
    script: str
    submitted_at: str
    purpose: Literal["run", "resubmit"] = "run"


class PollRecord(Record):
    last_at: float | None = None  # unix time of the last scheduler query
    interval_s: float = 0.0  # how long a status call serves the manifest without asking again


class Manifest(Record):
    format: int = FORMAT
    id: str
    name: str
    root: str
    source: str
    site: str
    launcher: Literal["slurm", "local"] = "slurm"  # who runs its jobs (and keeps their state)
    created_at: str
    max_array_size: int | None
    chunk_size: int
    stages: list[StageRecord]
    tasks: list[TaskRecord]
    submissions: list[SubmissionRecord] = Field(default_factory=list)
    poll: PollRecord = Field(default_factory=PollRecord)
    error: str | None = None  # why submission stopped half-way, if it did

    def stage(self, name: str) -> StageRecord:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise HpcTfError(f"campaign {self.id} has no stage '{name}'")

    def units(self, stage: str) -> list[UnitRef]:
        record = self.stage(stage)
        if not record.per_task:
            return [UnitRef(stage, None, record.job)] if record.job is not None else []
        return [UnitRef(stage, task.id, task.stages[stage]) for task in self.tasks if stage in task.stages]

    def all_units(self) -> list[UnitRef]:
        return [ref for stage in self.stages for ref in self.units(stage.name)]

    def to_json(self) -> str:
        return self.model_dump_json(indent=1) + "\n"


@dataclass(frozen=True)
class UnitRef:
    stage: str
    task_id: int | None  # None: a single-job stage
    unit: Unit

    @property
    def label(self) -> str:
        return self.stage if self.task_id is None else f"{self.stage}[{self.task_id}]"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(paths: CampaignPaths) -> Manifest:
    try:
        manifest = read_record(paths.manifest, "the campaign manifest", parse=Manifest.model_validate,
                               fix="its jobs are still in Slurm (squeue, sacct); run the campaign again elsewhere")
    except FileNotFoundError:
        raise HpcTfError(f"{paths.root} is not a campaign directory (no {paths.manifest.name})",
                         hint="pass the directory hpc-tf campaign run printed") from None
    if manifest.format > FORMAT:
        raise HpcTfError(f"{paths.manifest} was written by a newer hpc-tf (format {manifest.format})",
                         hint="upgrade hpc-tf")
    return manifest


def write_manifest(paths: CampaignPaths, manifest: Manifest) -> None:
    write_text_atomic(paths.manifest, manifest.to_json())


@contextlib.contextmanager
def locked(paths: CampaignPaths) -> Iterator[None]:
    """Hold the campaign's lock (an flock on a file beside the manifest) for a read-modify-write."""
    with open(paths.lock, "a", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
