"""``hpc-tf status``: a job pending on a GPU limit, explained with the numbers.

``AssocGrpGRES`` becomes "waiting for GPU quota: account lab allows 4 GPUs, 4 in use by jobs 101 (2 GPUs),
102 (2 GPUs); this job needs 2". It costs two controller calls (``scontrol show assoc_mgr``, one
``squeue``), made only when some job waits on a GPU limit; slurmdbd is not needed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hpc.errors import HpcTfError
from hpc.quota.facts import PREFLIGHT_BUDGET_S, Calls, QuotaFacts, current_user, quick_cli, read_controller, read_jobs
from hpc.quota.limits import holders, is_gpu_tres, job_limits, scope_of
from hpc.quota.model import GpuLimit, GpuRequest, LimitKind, amount, limit_for_reason
from hpc.quota.preflight import held_by
from hpc.scheduler.accounting import QueuedJob
from hpc.scheduler.run import SlurmCli
from hpc.scheduler.status import JobStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuotaSnapshot:
    """The controller's limits and the queue, read once for many explanations."""

    facts: QuotaFacts
    jobs: tuple[QueuedJob, ...]

    def job(self, status: JobStatus) -> QueuedJob | None:
        for job in self.jobs:
            if str(job.job_id) == status.job_id or (status.raw_id and job.raw_id == status.raw_id):
                return job
        return None


def quota_snapshot(
    cli: SlurmCli | None = None, *, user: str | None = None, budget_s: float = PREFLIGHT_BUDGET_S
) -> QuotaSnapshot:
    """Two controller calls: the association manager for ``user``, and every running or pending job
    (the jobs holding a group's GPUs may belong to other users and accounts)."""
    calls = Calls(cli or quick_cli(), budget_s)
    name = user or current_user()
    facts = QuotaFacts(name, read_controller(calls, name))
    return QuotaSnapshot(facts, tuple(read_jobs(calls)))


def waits_on_gpu_quota(status: JobStatus) -> bool:
    return status.state.is_waiting and status.reason is not None and limit_for_reason(status.reason.code) is not None


def explain_waits(
    statuses: Mapping[str, JobStatus] | Iterable[JobStatus],
    cli: SlurmCli | None = None,
    *,
    user: str | None = None,
) -> dict[str, str]:
    """job id → sentence, for the jobs that pend on a GPU limit. No scheduler call when none does;
    when Slurm does not answer, an empty result (the plain reason sentence still applies)."""
    values = list(statuses.values()) if isinstance(statuses, Mapping) else list(statuses)
    waiting = [s for s in values if waits_on_gpu_quota(s)]
    if not waiting:
        return {}
    try:
        snapshot = quota_snapshot(cli, user=user)
    except HpcTfError as err:  # Slurm failed or answered oddly; a name it cannot take
        log.warning("GPU quota details not available: %s", err.reason)
        return {}
    result: dict[str, str] = {}
    for status in waiting:
        sentence = explain_wait(status, snapshot)
        if sentence:
            result[status.job_id] = sentence
    return result


def explain_wait(status: JobStatus, snapshot: QuotaSnapshot) -> str | None:
    """The sentence for one pending job, or None when its reason is not a GPU limit hpc-tf can find."""
    parsed = limit_for_reason(status.reason.code) if status.reason else None
    if parsed is None:
        return None
    scope, kind = parsed
    facts = snapshot.facts
    job = snapshot.job(status)
    account = (job.account if job else status.account) or None
    partition = (job.partition if job else status.partition) or None
    assoc = facts.association(account, partition)
    if assoc is None:
        return None
    request = _request(status, job)
    names = set(request.tres_names) | ({n for n in job.tres if is_gpu_tres(n)} if job else set())
    limits = [
        lim
        for lim in job_limits(facts, assoc, job.qos if job else None, lambda n: n in names)
        if lim.kind is kind and lim.owner.scope == scope
    ]
    if not limits:
        return None
    limit = next((lim for lim in limits if _blocks(lim, request)), limits[0])
    others = [j for j in snapshot.jobs if job is None or j.job_id != job.job_id]
    return _sentence(limit, request, holders(limit, scope_of(limit, facts), others), status.job_id)


def _request(status: JobStatus, job: QueuedJob | None) -> GpuRequest:
    gpus = job.gpus if job else status.gpus
    nodes = max(int(job.tres.get("node", "1")) if job and job.tres.get("node", "").isdigit() else status.nodes, 1)
    seconds = (job.time_limit_s if job else None) or status.time_limit_s or 0
    return GpuRequest(gpus=gpus, gpus_per_node=math.ceil(gpus / nodes), nodes=nodes, minutes=math.ceil(seconds / 60))


def _blocks(limit: GpuLimit, request: GpuRequest) -> bool:
    asked = request.amount(limit.kind)
    if limit.kind is LimitKind.MIN_TRES_PER_JOB:
        return asked < limit.value
    return asked > limit.value or (limit.used is not None and limit.used + asked > limit.value)


def _sentence(limit: GpuLimit, request: GpuRequest, found: list[QueuedJob], job_id: str) -> str:
    asked = request.amount(limit.kind)
    unit = "GPU-minute" if limit.kind.in_minutes else "GPU"
    used = limit.used or 0
    if limit.kind is LimitKind.GRP_TRES_MINS:
        if used >= limit.value:
            return (
                f"the GPU-time budget of {limit.owner} is used up: {used} of {limit.value} GPU-minutes "
                f"({limit.setting}); it will not start until an administrator raises it"
            )
        return (
            f"waiting for GPU-time budget: {limit.owner} has {limit.value - used} of its {limit.value} "
            f"GPU-minutes left ({limit.setting}) and this job may use {asked}"
        )
    if limit.kind.per_job or asked > limit.value:
        return (
            f"it can never start: {limit.allows()} ({limit.setting}) and it asks for {amount(asked, unit)}: "
            f"cancel it (hpc-tf cancel {job_id}) and submit it again with a smaller request"
        )
    if limit.kind is LimitKind.GRP_TRES_RUN_MINS:
        return (
            f"waiting for GPU quota: {limit.allows()}, {used} reserved{held_by(limit, found)}; "
            f"this job needs {amount(asked, unit)}"
        )
    per = {
        LimitKind.MAX_TRES_PER_USER: " per user",
        LimitKind.MAX_TRES_PER_ACCOUNT: f" to account {limit.owner.account}",
    }.get(limit.kind, "")
    return (
        f"waiting for GPU quota: {limit.owner} allows {amount(limit.value, 'GPU')}{per}, {used} in use"
        f"{held_by(limit, found)}; this job needs {amount(asked, unit)}"
    )
