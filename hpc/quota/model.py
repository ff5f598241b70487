"""What a GPU quota is made of: limits, who sets them, what a job asks for. Plain data, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from hpc.resolve import ResolvedJob

GPU_TRES = "gres/gpu"


def amount(count: int, unit: str) -> str:
    """``1 GPU``, ``2 GPUs``, ``1 GPU-minute``."""
    return f"{count} {unit}{'' if count == 1 else 's'}"


class LimitKind(str, Enum):
    """A Slurm limit on a TRES, by the name an administrator sets with ``sacctmgr modify … set``."""

    GRP_TRES = "GrpTRES"  # GPUs all running jobs of the association/QOS may hold together
    GRP_TRES_MINS = "GrpTRESMins"  # GPU-minutes budget of past and running jobs (usage decays)
    GRP_TRES_RUN_MINS = "GrpTRESRunMins"  # GPU-minutes the running jobs may still use (GPUs × time left)
    MAX_TRES_PER_JOB = "MaxTRESPerJob"
    MAX_TRES_PER_NODE = "MaxTRESPerNode"
    MAX_TRES_MINS_PER_JOB = "MaxTRESMinsPerJob"  # GPUs × time limit of one job
    MAX_TRES_PER_USER = "MaxTRESPerUser"  # QOS only: GPUs one user's running jobs may hold
    MAX_TRES_PER_ACCOUNT = "MaxTRESPerAccount"  # QOS only: GPUs one account's running jobs may hold
    MIN_TRES_PER_JOB = "MinTRESPerJob"  # QOS only

    @property
    def in_minutes(self) -> bool:
        return self in (LimitKind.GRP_TRES_MINS, LimitKind.GRP_TRES_RUN_MINS, LimitKind.MAX_TRES_MINS_PER_JOB)

    @property
    def per_job(self) -> bool:
        """A cap on one job alone: exceeding it means never, whatever else runs."""
        return self in _PER_JOB

    @property
    def bounds_concurrency(self) -> bool:
        """Caps the GPUs a user's running jobs hold at once (what a campaign throttle must respect)."""
        return self in (LimitKind.GRP_TRES, LimitKind.MAX_TRES_PER_USER, LimitKind.MAX_TRES_PER_ACCOUNT)

    def reason(self, scope: Literal["Assoc", "QOS"]) -> str:
        """The pending reason Slurm shows when this limit holds a GPU job back: ``AssocGrpGRES`` …"""
        return scope + _REASON_SUFFIX[self]


_PER_JOB = frozenset(
    {
        LimitKind.MAX_TRES_PER_JOB,
        LimitKind.MAX_TRES_PER_NODE,
        LimitKind.MAX_TRES_MINS_PER_JOB,
        LimitKind.MIN_TRES_PER_JOB,
    }
)
# Slurm's job_reason_string for a gres limit (src/common/slurm_protocol_defs.c)
_REASON_SUFFIX = {
    LimitKind.GRP_TRES: "GrpGRES",
    LimitKind.GRP_TRES_MINS: "GrpGRESMinutes",
    LimitKind.GRP_TRES_RUN_MINS: "GrpGRESRunMinutes",
    LimitKind.MAX_TRES_PER_JOB: "MaxGRESPerJob",
    LimitKind.MAX_TRES_PER_NODE: "MaxGRESPerNode",
    LimitKind.MAX_TRES_MINS_PER_JOB: "MaxGRESMinutesPerJob",
    LimitKind.MAX_TRES_PER_USER: "MaxGRESPerUser",
    LimitKind.MAX_TRES_PER_ACCOUNT: "MaxGRESPerAccount",
    LimitKind.MIN_TRES_PER_JOB: "MinGRES",
}


def limit_for_reason(code: str) -> tuple[Literal["Assoc", "QOS"], LimitKind] | None:
    """``AssocGrpGRES`` → ("Assoc", GRP_TRES); a reason that is not about a gres limit → None."""
    for scope in ("Assoc", "QOS"):
        if code.startswith(scope):
            rest = code[len(scope) :]
            for kind, suffix in _REASON_SUFFIX.items():
                if rest == suffix:
                    return ("Assoc" if scope == "Assoc" else "QOS"), kind
    return None


@dataclass(frozen=True)
class Owner:
    """Where a limit is set: an account's association, a user's association in an account, or a QOS
    (for QOS per-account limits, the account whose use is counted)."""

    kind: Literal["account", "user", "qos"]
    name: str  # the account, user or QOS name
    account: str | None = None  # the user's account; for a QOS limit per account, that account
    partition: str | None = None

    @property
    def scope(self) -> Literal["Assoc", "QOS"]:
        return "QOS" if self.kind == "qos" else "Assoc"

    def __str__(self) -> str:
        if self.kind == "qos":
            text = f"QOS {self.name}"
        elif self.kind == "account":
            text = f"account {self.name}"
        else:
            text = f"user {self.name} in account {self.account}"
        return text + (f" (partition {self.partition})" if self.partition else "")


@dataclass(frozen=True)
class GpuLimit:
    """One limit on GPUs (or GPU-minutes) and what the controller counts against it right now."""

    owner: Owner
    kind: LimitKind
    tres: str  # "gres/gpu", or a typed "gres/gpu:a100"
    value: int  # GPUs, or GPU-minutes when kind.in_minutes
    used: int | None = None  # GPUs held / GPU-minutes used; None for per-job caps or when not known

    @property
    def reason(self) -> str:
        return self.kind.reason(self.owner.scope)

    @property
    def unit(self) -> str:
        return "GPU-minutes" if self.kind.in_minutes else "GPUs"

    @property
    def setting(self) -> str:
        """As an administrator writes it: ``GrpTRES=gres/gpu=4``."""
        return f"{self.kind.value}={self.tres}={self.value}"

    @property
    def remaining(self) -> int | None:
        return None if self.used is None else max(self.value - self.used, 0)

    def allows(self) -> str:
        """``account lab allows 4 GPUs at once`` — the limit in words."""
        gpus, minutes = amount(self.value, "GPU"), amount(self.value, "GPU-minute")
        what = {
            LimitKind.GRP_TRES: f"allows {gpus} at once",
            LimitKind.GRP_TRES_MINS: f"has a budget of {minutes}",
            LimitKind.GRP_TRES_RUN_MINS: f"allows its running jobs {minutes} of time left",
            LimitKind.MAX_TRES_PER_JOB: f"allows at most {gpus} per job",
            LimitKind.MAX_TRES_PER_NODE: f"allows at most {gpus} per node",
            LimitKind.MAX_TRES_MINS_PER_JOB: f"allows at most {minutes} per job",
            LimitKind.MAX_TRES_PER_USER: f"allows one user {gpus} at once",
            LimitKind.MAX_TRES_PER_ACCOUNT: f"allows account {self.owner.account} {gpus} at once",
            LimitKind.MIN_TRES_PER_JOB: f"requires at least {gpus} per job",
        }[self.kind]
        typed = f" (GPU type {self.tres.split(':', 1)[1]})" if ":" in self.tres else ""
        return f"{self.owner} {what}{typed}"

    def to_dict(self) -> dict[str, object]:
        return {
            "limit": self.kind.value,
            "tres": self.tres,
            "value": self.value,
            "unit": self.unit,
            "used": self.used,
            "set_on": str(self.owner),
            "owner": {
                "kind": self.owner.kind,
                "name": self.owner.name,
                "account": self.owner.account,
                "partition": self.owner.partition,
            },
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GpuRequest:
    """What one job asks for, in the terms Slurm's limits count."""

    gpus: int  # in all
    gpus_per_node: int
    nodes: int
    minutes: int  # the time limit, rounded up to minutes (Slurm counts TRES-minutes from it)
    gpu_type: str | None = None
    gres_name: str = "gpu"

    @classmethod
    def from_job(cls, job: ResolvedJob) -> GpuRequest:
        return cls(
            gpus=job.total_gpus,
            gpus_per_node=job.gpus_per_node,
            nodes=job.nodes,
            minutes=math.ceil(job.time_seconds / 60),
            gpu_type=job.gpu_type,
            gres_name=job.gres_name,
        )

    @property
    def gpu_minutes(self) -> int:
        return self.gpus * self.minutes

    @property
    def tres_names(self) -> tuple[str, ...]:
        """The TRES this job is counted under: ``gres/gpu`` and, when typed, ``gres/gpu:a100`` too."""
        base = f"gres/{self.gres_name}"
        return (base, f"{base}:{self.gpu_type}") if self.gpu_type else (base,)

    def amount(self, kind: LimitKind) -> int:
        """The number a limit of this kind compares with."""
        if kind.in_minutes:
            return self.gpu_minutes
        return self.gpus_per_node if kind is LimitKind.MAX_TRES_PER_NODE else self.gpus

    def describe(self) -> str:
        shape = f"{self.nodes} nodes × {self.gpus_per_node}" if self.nodes > 1 else f"{self.gpus}"
        return f"{shape} GPU{'s' if self.gpus != 1 else ''} for {self.minutes} min"

    def to_dict(self) -> dict[str, object]:
        return {
            "gpus": self.gpus,
            "gpus_per_node": self.gpus_per_node,
            "nodes": self.nodes,
            "minutes": self.minutes,
            "gpu_minutes": self.gpu_minutes,
            "gpu_type": self.gpu_type,
        }
