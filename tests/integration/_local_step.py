"""A Slurm job step emulated with local processes: the two tasks' environments recorded on the test
cluster (a CPU job, 2 tasks on cpu1), pointed at 127.0.0.1, and ports for the step's workers."""

from __future__ import annotations

import json
import socket
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


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
