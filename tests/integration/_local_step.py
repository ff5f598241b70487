"""A Slurm job step emulated with local processes: the two tasks' environments recorded on the test
cluster (a CPU job, 2 tasks on cpu1), pointed at 127.0.0.1, ports for the step's workers, and a run
directory whose tasks start through the installed bootstrap (:class:`LocalRun`)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hpc.runtime import install_into

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
TIMEOUT_S = 300


def recorded_cpu_tasks() -> list[dict[str, str]]:
    """SLURM_* of the two tasks of a recorded 2-task CPU step, rank order."""
    lines = (FIXTURES / "runtime" / "slurm-22.05-cgroup-tasks.jsonl").read_text(encoding="utf-8").splitlines()
    tasks = [json.loads(line)["env"] for line in lines if json.loads(line)["variant"] == "cpu-2tasks"]
    return sorted(tasks, key=lambda env: int(env["SLURM_PROCID"]))


def local_task_env(rank: int, home: Path, **extra: str) -> dict[str, str]:
    """The environment task ``rank`` would have on cpu1, with cpu1 mapped to this machine."""
    return {**recorded_cpu_tasks()[rank], "PATH": "/usr/bin:/bin", "HOME": str(home),
            "HPC_TF_NODE_ADDRESS_MAP": "cpu1=127.0.0.1", **extra}


def free_port_pair() -> int:
    """A port p such that p and p+1 are free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


class LocalRun:
    """A run directory with the runtime installed; ``start`` launches the step's tasks (``ranks``), each
    through the installed bootstrap running ``python SCRIPT OUT ARGS...``; ``run`` waits for them, after
    interrupting them once the chief's ``OUT/progress-0`` reached a step, if asked. ``runs`` counts the
    starts, as SLURM_RESTART_COUNT does a requeued job's."""

    def __init__(self, root: Path, script: str, *args: str, ranks: tuple[int, ...] = (0, 1), **runtime: object) -> None:
        self.root = root
        self.script = FIXTURES / "tf" / script
        self.args = args
        self.ranks = ranks
        self.out = root / "out"
        self.checkpoints = root / "checkpoints"
        install_into(root / "runtime")
        port = free_port_pair()
        settings = {"port_range": [port, port + 1], "coordination_timeout_s": 60, "preemption": True,
                    "checkpoint_dir": str(self.checkpoints), **runtime}
        (root / "resolved.json").write_text(json.dumps({"runtime": settings}), encoding="utf-8")
        self.runs = 0
        self.resolved = {rank: root / "resolved.json" for rank in self.ranks}

    def start(self, *extra: str) -> dict[int, subprocess.Popen[bytes]]:
        processes = {}
        for rank in self.ranks:
            # the run dir as the batch script exports it; a crash in TF's C++ (seen once: SIGSEGV) shows
            # the Python stack it happened under in the task's log
            env = local_task_env(rank, self.root, TF_CPP_MIN_LOG_LEVEL="2", SLURM_RESTART_COUNT=str(self.runs),
                                 HPC_TF_RUN_DIR=str(self.root), PYTHONFAULTHANDLER="1")
            argv = [sys.executable, str(self.root / "runtime" / "bootstrap.py"), "--resolved",
                    str(self.resolved[rank]), "--", sys.executable, str(self.script), str(self.out),
                    *self.args, *extra]
            log = (self.root / f"task-{rank}.log").open("ab")
            processes[rank] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        self.runs += 1
        return processes

    def run(self, *extra: str, interrupt_at: int | None = None, signum: int = signal.SIGUSR1) -> dict[int, int]:
        processes = self.start(*extra)
        try:
            if interrupt_at is not None:
                deadline = time.monotonic() + TIMEOUT_S
                while self.progress() < interrupt_at:
                    assert time.monotonic() < deadline, self.log(0)
                    assert all(p.poll() is None for p in processes.values()), self.log(0) + self.log(1)
                    time.sleep(0.1)
                for process in processes.values():
                    process.send_signal(signum)
            return {rank: process.wait(timeout=TIMEOUT_S) for rank, process in processes.items()}
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()

    def progress(self) -> int:
        try:
            return int((self.out / "progress-0").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def log(self, rank: int) -> str:
        return (self.root / f"task-{rank}.log").read_text(encoding="utf-8", errors="replace")

    def weights(self, rank: int) -> list[bytes]:
        import numpy as np

        saved = np.load(self.out / f"weights-{rank}.npz")
        return [saved[name].tobytes() for name in saved.files]
