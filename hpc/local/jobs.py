"""The local launcher's job records: what slurmctld's state files are to Slurm.

One JSON file per job in ``<runs dir>/.local-jobs/``, written whole (temp file + rename): first by
the submitter, then only by the job's supervisor (or, once its supervisor is gone, by a cancel). Job
ids are numbers from a counter file taken under an exclusive lock, so two launches at once never share
an id (nor TF ports: those follow the id).

A job array is one job per task, as in Slurm: every task has an id of its own (its ``SLURM_JOB_ID``,
its logs' ``%j``), the first task's id is the array's (``SLURM_ARRAY_JOB_ID``, ``%A``), and
``<array id>.array`` maps the array's indices to its tasks' ids, so ``12`` names the whole array and
``12_3`` the task at index 3.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hpc.atomic import write_text_atomic
from hpc.errors import HpcTfError
from hpc.records import read_record
from hpc.text import shown

STATE_DIR_NAME = ".local-jobs"
TERMINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"})
DependencyKind = Literal["afterok", "afterany", "afternotok", "aftercorr"]  # sbatch's, as in hpc.scheduler
NEVER_SATISFIED = "DependencyNeverSatisfied"


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
    # start once each group holds, as sbatch --dependency=kind:id…; ids are single jobs (an array's
    # tasks are listed one by one, aftercorr already paired with this task's index)
    after: list[tuple[DependencyKind, list[str]]] = field(default_factory=list)
    cancel_if_never_satisfied: bool = False  # --kill-on-invalid-dep=yes; else it stays pending, as in Slurm
    array_job_id: str | None = None  # SLURM_ARRAY_JOB_ID
    array_task_id: int | None = None  # SLURM_ARRAY_TASK_ID
    array_task_count: int = 0
    array_task_min: int = 0
    array_task_max: int = 0
    array_throttle: int | None = None  # %N: at most this many of the array's tasks run at once
    # an array task takes its gpus_per_node x nodes GPU ids from these when it starts, so tasks running
    # together never share a GPU (gpu_ids is empty until then)
    gpu_pool: list[str] = field(default_factory=list)
    reason: str = ""  # why a PENDING job waits, as Slurm's Reason (Dependency, JobArrayTaskLimit …)
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

    @property
    def display_id(self) -> str:
        """``12_3`` for an array task, as squeue shows it; the job id otherwise."""
        return self.job_id if self.array_job_id is None else f"{self.array_job_id}_{self.array_task_id}"

    @property
    def effective_state(self) -> str:
        """The recorded state; FAILED for a job whose supervisor died before it could record an end (one
        whose dependency can never be met has none: it stays pending until cancelled, as in Slurm)."""
        if self.is_terminal or self.reason == NEVER_SATISFIED or self.supervisor_alive:
            return self.state
        return "FAILED"

    @property
    def supervisor_alive(self) -> bool:
        """The job's supervisor still runs (a zombie, or another program that took its pid, does not count)."""
        if self.supervisor_pid is None:
            return False
        try:
            stat = Path(f"/proc/{self.supervisor_pid}/stat").read_text()
            cmdline = Path(f"/proc/{self.supervisor_pid}/cmdline").read_bytes()
        except OSError:
            return False
        return stat.rpartition(")")[2].split()[0] != "Z" and b"hpc.local.supervisor" in cmdline


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

    def array_file(self, array_id: str) -> Path:
        return self.directory / f"{array_id}.array"

    def write_array(self, array_id: str, tasks: dict[int, str]) -> None:
        """The array's index → task job id, written once by the submitter, before any task starts."""
        write_text_atomic(self.array_file(array_id), json.dumps({str(k): v for k, v in tasks.items()}) + "\n")

    def array_tasks(self, array_id: str) -> dict[int, str] | None:
        """Index → job id of the array ``array_id``; None when it is no array."""
        try:
            return read_record(self.array_file(array_id), "the local job array record",
                               parse=lambda data: {int(k): str(v) for k, v in data.items()},
                               fix="remove it if the array is over")
        except FileNotFoundError:
            return None

    @contextmanager
    def array_lock(self, array_id: str) -> Iterator[None]:
        """Held while one of the array's tasks decides whether it may start (throttle, GPUs)."""
        with (self.directory / f"{array_id}.array.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def resolve(self, job_id: str) -> list[LocalJob] | None:
        """The jobs an id names: ``12`` a job or a whole array, ``12_3`` one array task; None: no such job."""
        base, _, index = job_id.partition("_")
        if not base.isdigit() or (index and not index.isdigit()):
            return None
        tasks = self.array_tasks(base)
        if tasks is None:
            job = None if index else self.read(base)
            return None if job is None else [job]
        ids = [tasks[int(index)]] if index and int(index) in tasks else [] if index else list(tasks.values())
        jobs = [job for job in map(self.read, ids) if job is not None]
        return jobs or None

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
