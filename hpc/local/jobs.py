"""The local launcher's job records: what slurmctld's state files are to Slurm.

One JSON file per job in ``<runs dir>/.local-jobs/``, written whole (temp file + rename): first by
the submitter, then only by the job's supervisor. Job ids are numbers from a counter file taken under
an exclusive lock, so two launches at once never share an id (nor TF ports: those follow the id).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hpc.atomic import write_text_atomic
from hpc.errors import HpcTfError
from hpc.records import read_record
from hpc.text import shown

STATE_DIR_NAME = ".local-jobs"
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})


@dataclass
class LocalJob:
    job_id: str
    name: str
    script: str
    output: str  # the batch log: a Slurm filename pattern (%j)
    submit_dir: str
    nodes: int
    tasks_per_node: int
    gpus_per_node: int
    gpu_ids: list[str]  # the job's GPU ids, node after node
    time_limit_s: int | None
    warning_s: int | None  # USR1 to the batch shell this long before the limit (--signal=B:USR1@N)
    after_ok: list[str] = field(default_factory=list)  # start only once these completed
    state: str = "PENDING"
    state_text: str = ""
    submitted_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    exit_status: int | None = None
    exit_signal: int = 0
    restarts: int = 0
    supervisor_pid: int | None = None
    batch_pid: int | None = None

    @property
    def node_names(self) -> list[str]:
        return [f"local{k}" for k in range(1, self.nodes + 1)]

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class LocalJobStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, job_id: str) -> Path:
        if not job_id.isdigit():
            raise HpcTfError(f"{shown(job_id)} is not a local job id (a number)")
        return self.directory / f"{job_id}.json"

    def requeue_flag(self, job_id: str) -> Path:
        """Created by the batch script when its tasks asked to be requeued."""
        return self.directory / f"{job_id}.requeue"

    def supervisor_log(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.supervisor.log"

    def new_id(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "last-id").open("a+", encoding="ascii") as counter:
            fcntl.flock(counter, fcntl.LOCK_EX)
            counter.seek(0)
            text = counter.read().strip()
            job_id = (int(text) if text.isdigit() else 0) + 1
            counter.seek(0)
            counter.truncate()
            counter.write(f"{job_id}\n")
            counter.flush()
            os.fsync(counter.fileno())
        return str(job_id)

    def write(self, job: LocalJob) -> None:
        write_text_atomic(self.path(job.job_id), json.dumps(dataclasses.asdict(job), indent=2) + "\n")

    def jobs(self) -> list[LocalJob]:
        """Every job recorded here, by id."""
        ids = sorted(int(p.stem) for p in self.directory.glob("*.json") if p.stem.isdigit())
        return [job for job in (self.read(str(i)) for i in ids) if job is not None]

    def read(self, job_id: str) -> LocalJob | None:
        try:
            return read_record(self.path(job_id), "the local job record", parse=lambda data: LocalJob(**data),
                               fix="remove it if the job is over")
        except FileNotFoundError:
            return None
