"""How the replica controller (:mod:`hpc.serving.router.replicas`) starts, observes and stops replicas:
as Slurm jobs on the site's serving partition (through the quota preflight), or as local processes on a
site without Slurm. One batched scheduler query per poll, never one per replica."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hpc.atomic import write_text_atomic
from hpc.serving.repository import Repository
from hpc.serving.router.pool import Replica

STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Seen:
    """What one poll says of a replica's job or process."""

    running: bool  # False: it ended (or never existed)
    state: str  # PENDING, RUNNING, ... (a local process: RUNNING / ENDED)
    time_left: float | None = None  # seconds; None: no limit known
    node: str = ""


class Launcher(Protocol):
    """Starts, observes and stops replicas: as Slurm jobs, or as local processes."""

    def start(self, name: str) -> tuple[str | None, int | None]:
        """Start replica ``name``; its job id (None for a local process) and its process id (None for a job).
        QuotaRefused when refused."""
        ...

    def poll(self, replicas: Sequence[Managed]) -> dict[str, Seen]:
        """The state of every replica, in one batched query."""
        ...

    def stop(self, replica: Managed) -> None:
        ...


@dataclass
class Managed:
    """A replica the controller started (or adopted from a router before it)."""

    name: str
    job_id: str | None
    state: str = "coming"  # coming -> serving -> (retiring ->) draining
    replica: Replica | None = None  # in the router's pool once admitted
    gate: str = ""  # what its gate checked, for the admission's log line
    seen: Seen | None = None
    waiting: str = ""  # why a coming replica is not admitted yet (logged when it changes)
    started: float = field(default_factory=time.time)
    pid: int | None = None  # a local replica's `hpc-tf serve node` process

    def to_dict(self) -> dict[str, object]:
        seen = self.seen
        return {"name": self.name, "job_id": self.job_id, "state": self.state,
                "scheduler_state": seen.state if seen else "", "node": seen.node if seen else "",
                "time_left_s": None if seen is None or seen.time_left is None else int(seen.time_left),
                "in_flight": self.replica.in_flight if self.replica else 0, "waiting": self.waiting}


class LocalLauncher:
    """Replicas as local processes (the embedded default site): ``python -m hpc.cli serve node --replica``."""

    def __init__(self, repo: Repository, host: str = "127.0.0.1") -> None:
        self.repo, self.host = repo, host
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> tuple[str | None, int | None]:
        work = self.repo.make_server_dir(name)
        with (work / "node.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "hpc.cli", "serve", "node", "--repository", str(self.repo.root),
                 "--replica", name, "--host", self.host],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return None, self.procs[name].pid

    def poll(self, replicas: Sequence[Managed]) -> dict[str, Seen]:
        from hpc.runtime.node.processes import alive

        seen = {}
        for managed in replicas:
            proc = self.procs.get(managed.name)
            # adopted from an earlier router: no process of ours, its tritonserver's pid from its endpoint
            running = proc.poll() is None if proc is not None else managed.pid is not None and alive(managed.pid)
            seen[managed.name] = Seen(running, "RUNNING" if running else "ENDED", None, self.host)
        return seen

    def stop(self, replica: Managed) -> None:
        proc = self.procs.pop(replica.name, None)
        pid = proc.pid if proc is not None else replica.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # the node stops its tritonserver and unregisters
        if proc is not None:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class SlurmLauncher:
    """Replicas as Slurm jobs on the site's serving partition, through the backend's quota preflight."""

    def __init__(self, repo: Repository, site: str | None, overrides: Sequence[str],
                 time_limit: str | None = None, no_queue: bool = False) -> None:
        from hpc.backends import SlurmBackend, slurm_scheduler
        from hpc.site.load import load_site

        self.repo, self.site, self.overrides, self.time_limit = repo, site, tuple(overrides), time_limit
        # autoscaling: a replica that would wait for the quota is refused, not queued (it would pend, not serve)
        self.no_queue = no_queue
        self.backend = SlurmBackend(slurm_scheduler(load_site(site, overrides).config.scheduler))

    def start(self, name: str) -> tuple[str | None, int | None]:
        from hpc.serving.slurm_node import plan_slurm_node

        plan = plan_slurm_node(self.site, self.overrides, self.repo.root, self.time_limit, replica=name)
        from hpc.backends import QuotaPolicy

        self.backend.check_quota(plan.resolved, QuotaPolicy(no_queue=self.no_queue))
        self.repo.make_server_dir(name)
        write_text_atomic(plan.script_path, plan.script, mode=0o755)
        with self.backend.submitting(plan.script_path):
            return self.backend.submit(plan.script_path), None

    def poll(self, replicas: Sequence[Managed]) -> dict[str, Seen]:
        ids = [m.job_id for m in replicas if m.job_id is not None]
        statuses = self.backend.query(ids) if ids else {}
        seen = {}
        for managed in replicas:
            status = statuses.get(managed.job_id or "")
            if status is None:
                seen[managed.name] = Seen(True, "SUBMITTED")  # not known to Slurm yet: still coming
                continue
            left = None
            if status.time_limit_s is not None and status.elapsed_s is not None:
                left = float(status.time_limit_s - status.elapsed_s)
            seen[managed.name] = Seen(not status.state.is_terminal, status.state.value, left, status.node_list)
        return seen

    def stop(self, replica: Managed) -> None:
        if replica.job_id is not None:
            self.backend.cancel([replica.job_id])


def launcher_for(repo: Repository, site: str | None, overrides: Sequence[str],
                 time_limit: str | None = None, no_queue: bool = False) -> Launcher:
    """Slurm jobs (time limit ``time_limit``, default the site's; ``no_queue``: refused when the quota makes
    them wait) on a Slurm site that names a serving partition (as ``serve up``), else local processes."""
    from hpc.serving.slurm_node import uses_slurm

    if uses_slurm(site, overrides):
        return SlurmLauncher(repo, site, overrides, time_limit, no_queue)
    return LocalLauncher(repo)
