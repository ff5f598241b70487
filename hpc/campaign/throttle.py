"""How many tasks of an array may run at once (``%N``), from the GPUs the account may hold.

A campaign should never hold more GPUs at once than the quota allows (on the local launcher: than
this machine has): more only queue up as
``AssocGrpGRES`` and crowd the queue. With a limit of L GPUs shared by the campaign's G GPU stages,
an array stage whose tasks need g GPUs each runs at most ``(L // G) // g`` tasks at once (at least
one). A throttle written in campaign.yaml, or given on the command line, wins. Array chunks of one
stage (past MaxArraySize) run one after the other, so the throttle holds across chunks too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hpc.errors import QuotaRefused
from hpc.resolve import ResolvedJob


class GpuLimit(Protocol):
    """How many GPUs the user's jobs like ``job`` (its account, QOS, partition) may hold at once;
    None: no limit. May raise HpcTfError when the scheduler cannot say."""

    def __call__(self, job: ResolvedJob) -> int | None: ...


def quota_gpu_limit(job: ResolvedJob) -> int | None:
    """The GPU quota as Slurm's accounting enforces it (:func:`hpc.quota.concurrent_gpus`)."""
    from hpc.quota import concurrent_gpus  # imported when used: only a Slurm site with a GPU quota needs it

    ceiling = concurrent_gpus(job.account, job.qos, job.partition, gpu_type=job.gpu_type, gres_name=job.gres_name)
    return ceiling.gpus


def local_gpu_limit(job: ResolvedJob) -> int | None:
    """The GPUs this machine lends the local launcher (:func:`hpc.local.scheduler.machine_gpu_ids`); None
    when it has none: then an array's GPU tasks take turns on one task's placeholder ids."""
    from hpc.local.scheduler import machine_gpu_ids

    return len(machine_gpu_ids(os.environ)) or None


GPU_LIMITS: dict[str, GpuLimit] = {"slurm": quota_gpu_limit, "local": local_gpu_limit}  # by the site's launcher
NO_GPU_LIMIT = {"slurm": "no GPU quota", "local": "this machine lends no GPUs: GPU tasks take turns"}  # why None


@dataclass(frozen=True)
class StageDemand:
    name: str
    per_task: bool
    gpus: int  # GPUs one task (or the single job) holds
    explicit: int | None = None  # a throttle from campaign.yaml or the command line


@dataclass(frozen=True)
class Throttle:
    limit: int | None  # None: run as many at once as Slurm allows
    why: str


def compute_throttles(
    stages: Sequence[StageDemand], gpu_limit: int | None, unknown: str = "GPU quota unknown"
) -> dict[str, Throttle]:
    gpu_stages = [s for s in stages if s.gpus > 0]
    out: dict[str, Throttle] = {}
    for stage in stages:
        if gpu_limit is not None and stage.gpus > gpu_limit:
            raise QuotaRefused(
                f"each task of stage '{stage.name}' needs {stage.gpus} GPUs, but the account may hold "
                f"at most {gpu_limit} at once: it could never start",
                hint="lower the stage's nodes or GPUs per node, or see hpc-tf quota",
            )
        if not stage.per_task:
            out[stage.name] = Throttle(None, "one job")
        elif stage.explicit is not None:
            out[stage.name] = Throttle(stage.explicit, "set in the campaign or on the command line")
        elif stage.gpus == 0:
            out[stage.name] = Throttle(None, "no GPUs")
        elif gpu_limit is None:
            out[stage.name] = Throttle(None, unknown)
        else:
            share = gpu_limit // len(gpu_stages)
            limit = max(1, share // stage.gpus)
            shared = f" shared by {len(gpu_stages)} GPU stages" if len(gpu_stages) > 1 else ""
            out[stage.name] = Throttle(limit, f"GPU quota {gpu_limit}{shared}, {stage.gpus} GPU(s) per task")
    return out
