"""How many GPUs one user's jobs may hold at once: the number a campaign's array throttle needs."""

from __future__ import annotations

from dataclasses import replace

from hpc.errors import HpcTfError
from hpc.quota.facts import PREFLIGHT_BUDGET_S, Calls, current_user, gather, quick_cli
from hpc.quota.limits import GpuCeiling, gpu_ceiling, job_limits
from hpc.scheduler.run import SlurmCli


def concurrent_gpus(
    account: str | None = None,
    qos: str | None = None,
    partition: str | None = None,
    *,
    gpu_type: str | None = None,
    gres_name: str = "gpu",
    user: str | None = None,
    cli: SlurmCli | None = None,
) -> GpuCeiling:
    """The GPU ceiling for ``user``'s jobs under ``account`` (default: the user's default account) and
    ``qos`` (default: the association's), from the GrpTRES of every association on the path and the
    QOS's GrpTRES, MaxTRESPerUser and MaxTRESPerAccount; ``ceiling.max_tasks(gpus_per_task, minutes)``
    turns it into an array throttle. Up to three calls; the scheduler's errors propagate. When slurmdbd
    does not answer, QOS per-user/per-account limits may be missing: see ``ceiling.warnings``.
    """
    name = user or current_user()
    facts = gather(Calls(cli or quick_cli(), PREFLIGHT_BUDGET_S), name, qos=qos)
    assoc = facts.association(account, partition)
    if assoc is None:
        raise HpcTfError(
            f"user {name} has no association "
            + (f"with account {account}" if account else "marked as default")
            + f" on cluster {facts.cluster}",
            hint="see hpc-tf quota",
        )
    base = f"gres/{gres_name}"
    tres = f"{base}:{gpu_type}" if gpu_type else base
    limits = job_limits(facts, assoc, facts.job_qos(assoc, qos), lambda n: n in (base, tres))
    ceiling = gpu_ceiling([lim for lim in limits if lim.tres == base], base)
    if gpu_type:
        typed = gpu_ceiling([lim for lim in limits if lim.tres == tres], tres)
        if typed.gpus is not None and (ceiling.gpus is None or typed.gpus < ceiling.gpus):
            ceiling = replace(typed, run_minutes=ceiling.run_minutes or typed.run_minutes)
    return replace(ceiling, warnings=facts.warnings)
