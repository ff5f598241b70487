"""The test Slurm cluster (``tests/cluster/up``) as the benchmarks use it.

Jobs are submitted as the cluster's ordinary user through ``runuser`` with a clean environment, as
``tests/conftest.py`` and ``examples/quickstart/run-on-sandbox`` do; that needs root. Every job a
benchmark submits is cancelled at the end (:meth:`Cluster.cancel_all`), whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STATE_ENV = Path("/run/hpc-tf-cluster/state.env")  # written by tests/cluster/up
VENV_BIN = Path(sys.prefix) / "bin"  # the venv running the benchmarks is the jobs' Python environment
REPO = Path(__file__).resolve().parent.parent
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                      "BOOT_FAIL", "DEADLINE", "REVOKED"})
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "sacctmgr", "sshare", "scancel", "sinfo", "srun")


class ClusterUnavailable(RuntimeError):
    pass


def _run(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Cluster:
    user: str
    account: str
    gpu_partition: str
    cpu_partition: str
    gpu_nodes: tuple[str, ...]
    scratch: Path
    submitted: list[str] = field(default_factory=list)  # every job id to cancel at the end

    @classmethod
    def connect(cls) -> Cluster:
        """The running test cluster, or :class:`ClusterUnavailable` saying how to start it."""
        if os.geteuid() != 0:
            raise ClusterUnavailable("cluster benchmarks submit as the cluster user via runuser: run them as root")
        if not STATE_ENV.is_file():
            raise ClusterUnavailable(f"the test cluster is not up ({STATE_ENV} missing): sudo tests/cluster/up")
        ping = _run(["scontrol", "ping"], timeout=15)
        if "is UP" not in ping.stdout:
            raise ClusterUnavailable(f"slurmctld is not UP: {(ping.stdout + ping.stderr).strip()}")
        lines = [ln for ln in STATE_ENV.read_text().splitlines() if "=" in ln and not ln.startswith("#")]
        values = dict(ln.split("=", 1) for ln in lines)
        return cls(user=values["USER"], account=values["ACCOUNT"], gpu_partition=values["GPU_PARTITION"],
                   cpu_partition=values["CPU_PARTITION"], gpu_nodes=tuple(values["GPU_NODES"].split(",")),
                   scratch=Path(values["SCRATCH_DIR"]))

    @classmethod
    @contextlib.contextmanager
    def session(cls, name: str) -> Iterator[tuple[Cluster, Path]]:
        """The cluster and a fresh work directory for one benchmark; every job it submitted (and
        tracked) is cancelled at the end, however the benchmark ends."""
        cluster = cls.connect()
        try:
            yield cluster, cluster.workdir(name)
        finally:
            cluster.cancel_all()

    # -------------------------------------------------------------- files

    def workdir(self, name: str) -> Path:
        """A fresh directory on the shared scratch filesystem, owned by the cluster user."""
        base = self.scratch / "bench"
        base.mkdir(mode=0o755, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
        path.chmod(0o755)
        self.give(path)
        return path

    def give(self, *paths: Path) -> None:
        """Make ``paths`` (recursively) the cluster user's."""
        subprocess.run(["chown", "-R", f"{self.user}:", *map(str, paths)], check=True, timeout=60)

    def write(self, path: Path, text: str, mode: int = 0o644) -> Path:
        path.write_text(text, encoding="utf-8")
        path.chmod(mode)
        shutil.chown(path, self.user)
        return path

    # -------------------------------------------------------------- commands

    def env(self, extra: Mapping[str, str] | None = None, path_first: Path | None = None) -> dict[str, str]:
        """The clean environment a researcher's shell would have (root's must not leak into jobs)."""
        path = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
        return {"PATH": f"{path_first}:{path}" if path_first else path, "HOME": pwd.getpwnam(self.user).pw_dir,
                "USER": self.user, "LOGNAME": self.user, "LANG": "C.UTF-8", **(extra or {})}

    def as_user(self, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], *argv]

    def run(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the cluster user (``env``: a full environment, default :meth:`env`)."""
        result = subprocess.run(self.as_user(argv, env if env is not None else self.env()), cwd=cwd,
                                capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"as {self.user}: {' '.join(argv)} exited {result.returncode}\n"
                               f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
        return result

    def timed(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None,
              timeout: float = 300) -> tuple[float, subprocess.CompletedProcess[str]]:
        """Wall time in ms of :meth:`run` (including runuser's own start-up, the same for every variant)."""
        t0 = time.perf_counter()
        result = self.run(argv, cwd=cwd, env=env, timeout=timeout)
        return (time.perf_counter() - t0) * 1000, result

    # -------------------------------------------------------------- jobs

    def track(self, job_ids: Iterable[str]) -> None:
        self.submitted.extend(job_ids)

    def states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """State of each job (sacct, as root); jobs sacct does not know yet are missing."""
        out = _run(["sacct", "-X", "--parsable2", "--noheader", "-o", "JobID,State", "-j", ",".join(job_ids)])
        found = {}
        for line in out.stdout.splitlines():
            job_id, _, state = line.partition("|")
            found[job_id] = state.split(" ")[0]
        return found

    def wait(self, job_ids: Sequence[str], timeout: float = 900) -> dict[str, str]:
        """Wait (batched polling with backoff) until every job has ended; return their states."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            states = self.states(job_ids)
            if all(states.get(j) in TERMINAL for j in job_ids):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs {', '.join(job_ids)} not finished after {timeout} s: {states}")
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def cancel_all(self) -> None:
        """Cancel every job this benchmark submitted (those already ended are ignored by scancel)."""
        ids = sorted(set(self.submitted))
        for start in range(0, len(ids), 500):
            _run(["scancel", *ids[start:start + 500]], timeout=120)
        self.submitted.clear()

    # -------------------------------------------------------------- the controller's counters

    def rpc_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """``sdiag``'s controller RPC counters: (by message type, by user)."""
        from hpc.scheduler.parse import parse_sdiag

        diag = parse_sdiag(_run(["sdiag"], timeout=30).stdout)
        return diag.rpc_by_type, diag.rpc_by_user


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """Counters that grew between two snapshots."""
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0) > 0}


def write_shims(directory: Path, log: Path, cluster: Cluster) -> Path:
    """Wrappers for the Slurm commands that log each call to ``log`` and exec the real command.

    Put ``directory`` first on PATH to count exactly which Slurm commands a tool ran (sdiag's counters
    are cluster-wide: other users' and other tests' RPCs land in them too). Each wrapper costs a
    shell start, a few ms.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in SLURM_COMMANDS:
        real = shutil.which(name)
        if real is None:
            continue
        cluster.write(directory / name, f'#!/bin/sh\necho {name} >> "{log}"\nexec {real} "$@"\n', mode=0o755)
    cluster.write(log, "")
    return directory


def shim_counts(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text().split():
        counts[line] = counts.get(line, 0) + 1
    return counts
