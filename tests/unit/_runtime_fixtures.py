"""Recorded Slurm task environments for the runtime unit tests (tests/fixtures/runtime/)."""

from __future__ import annotations

import json
from pathlib import Path

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "runtime" / "slurm-22.05-cgroup-tasks.jsonl"


def recorded_tasks(variant: str) -> list[dict[str, str]]:
    """Every task's environment of ``variant``, in rank order."""
    tasks = []
    for line in RECORDED.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["variant"] == variant:
            tasks.append(dict(record["env"]))
    if not tasks:
        raise KeyError(f"no recorded variant {variant!r} in {RECORDED.name}")
    return sorted(tasks, key=lambda env: int(env.get("SLURM_PROCID", "0")))


def lab_task(**overrides: str | None) -> dict[str, str]:
    """A task of the lab notes' 2-node job (§4a dumps: node[1-2], one task per node), with overrides.

    The lab recorded these variables per task; ``None`` removes a variable.
    """
    env = {
        "SLURM_JOB_ID": "3",
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURMD_NODENAME": "node1",
        "SLURM_NODELIST": "node[1-2]",
        "SLURM_STEP_NODELIST": "node[1-2]",
        "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURM_JOB_GPUS": "0,1",
        "SLURM_STEP_GPUS": "0,1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "GPU_DEVICE_ORDINAL": "0,1",
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env
