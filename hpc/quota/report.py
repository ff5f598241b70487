"""``hpc-tf quota``: every GPU limit on a user's path (user → account → parent accounts, and the QOS
they may use) next to what is in use now, from Slurm's gres/gpu accounting.

Four calls: ``scontrol show assoc_mgr`` (limits and live use, from the controller), ``sacctmgr show
assoc`` and ``sacctmgr show qos`` (QOS lists and per-user/per-account QOS limits, from slurmdbd), one
``squeue`` (the jobs in the user's accounts). Without slurmdbd the report is still made from the
controller's view, marked incomplete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpc.errors import HpcTfError, SchedulerCommandFailed, SchedulerOutputError
from hpc.quota.facts import Calls, QuotaFacts, current_user, failure_summary, gather, quick_cli, read_jobs
from hpc.quota.limits import association_limits, holders, is_gpu_tres, qos_limits, scope_of, waiting
from hpc.quota.model import GpuLimit, LimitKind, Owner
from hpc.quota.stored import StoredAnswers
from hpc.scheduler.accounting import AssocRecord, QosRecord, QueuedJob, TresUse
from hpc.scheduler.run import SlurmCli

QUOTA_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LimitRow:
    """A limit, the visible jobs holding what it counts, and the pending jobs asking for more."""

    limit: GpuLimit
    running: tuple[QueuedJob, ...] = ()
    pending: tuple[QueuedJob, ...] = ()

    @property
    def pending_gpus(self) -> int:
        return sum(j.gpus_of(self.limit.tres) * j.tasks for j in self.pending)

    def to_dict(self) -> dict[str, object]:
        return {
            **self.limit.to_dict(),
            "remaining": self.limit.remaining,
            "running_jobs": [str(j.job_id) for j in self.running],
            "pending_jobs": [str(j.job_id) for j in self.pending],
            "pending_gpus": self.pending_gpus if not self.limit.kind.per_job else None,
        }


@dataclass(frozen=True)
class PathUsage:
    """What the controller counts for one association on the path, limits or not."""

    owner: Owner
    gpus_in_use: int
    gpu_minutes_used: int  # decayed usage, what GrpTRESMins is compared with
    gpu_run_minutes: int  # GPUs × time left of running jobs, what GrpTRESRunMins is compared with

    def to_dict(self) -> dict[str, object]:
        return {
            "set_on": str(self.owner),
            "gpus_in_use": self.gpus_in_use,
            "gpu_minutes_used": self.gpu_minutes_used,
            "gpu_run_minutes": self.gpu_run_minutes,
        }


@dataclass(frozen=True)
class AssociationQuota:
    account: str
    partition: str | None
    is_default: bool
    qos: tuple[str, ...] | None  # None: slurmdbd did not say
    job_qos: str | None  # the QOS a job gets when it names none
    path: tuple[PathUsage, ...]
    limits: tuple[LimitRow, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "partition": self.partition,
            "default": self.is_default,
            "qos": list(self.qos) if self.qos is not None else None,
            "default_qos": self.job_qos,
            "path": [p.to_dict() for p in self.path],
            "limits": [row.to_dict() for row in self.limits],
        }


@dataclass(frozen=True)
class QosQuota:
    name: str
    flags: tuple[str, ...] | None
    limits: tuple[LimitRow, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "flags": list(self.flags) if self.flags is not None else None,
            "limits": [row.to_dict() for row in self.limits],
        }


@dataclass(frozen=True)
class QuotaReport:
    cluster: str
    user: str
    associations: tuple[AssociationQuota, ...]
    qos: tuple[QosQuota, ...]
    jobs: tuple[QueuedJob, ...]  # running/pending GPU jobs in the accounts shown (all users)
    warnings: tuple[str, ...] = ()
    accounting_error: str | None = None

    @property
    def complete(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "user": self.user,
            "accounting_available": self.accounting_error is None,
            "complete": self.complete,
            "warnings": list(self.warnings),
            "associations": [a.to_dict() for a in self.associations],
            "qos": [q.to_dict() for q in self.qos],
            "jobs": [
                {
                    "job_id": str(j.job_id),
                    "user": j.user,
                    "account": j.account,
                    "qos": j.qos,
                    "state": j.state.value,
                    "gpus": j.gpus,
                    "reason": j.reason if j.state.is_waiting else None,
                }
                for j in self.jobs
            ],
        }


def quota_report(
    account: str | None = None,
    cli: SlurmCli | None = None,
    *,
    user: str | None = None,
    stored: StoredAnswers | None = None,
) -> QuotaReport:
    """The calling user's GPU limits and their use (``account``: only that account's associations);
    ``stored``: where to remember slurmdbd's answers for the next launch."""
    name = user or current_user()
    calls = Calls(cli or quick_cli(QUOTA_TIMEOUT_S))
    facts = gather(calls, name, every_qos=True, stored=stored)
    mine = facts.user_associations()
    if not mine:
        text = f"Slurm's controller shows no association for user {name}: this user cannot submit jobs here"
        return QuotaReport(facts.cluster, name, (), (), (), (*facts.warnings, text), facts.accounting_error)
    chosen = [a for a in mine if account is None or a.account == account]
    if not chosen:
        raise HpcTfError(
            f"user {name} has no association with account {account} on cluster {facts.cluster}",
            hint=f"accounts of {name}: {', '.join(sorted({a.account for a in mine}))}",
        )
    warnings = list(facts.warnings)
    jobs: list[QueuedJob] = []
    try:
        jobs = read_jobs(calls, accounts=sorted({a.account for a in chosen}))
    except (SchedulerCommandFailed, SchedulerOutputError) as err:
        warnings.append(f"jobs not listed: {failure_summary(err)}")
    assocs = tuple(_association(facts, a, jobs) for a in sorted(chosen, key=lambda a: (not a.is_default, a.account)))
    qos = tuple(_qos(facts, q, [a.account for a in chosen], jobs) for q in _qos_names(facts, chosen))
    gpu_jobs = tuple(sorted((j for j in jobs if j.gpus > 0), key=lambda j: (j.state.is_waiting, j.raw_id)))
    return QuotaReport(facts.cluster, name, assocs, qos, gpu_jobs, tuple(warnings), facts.accounting_error)


def _rows(facts: QuotaFacts, limits: Sequence[GpuLimit], jobs: Sequence[QueuedJob]) -> tuple[LimitRow, ...]:
    rows = []
    for limit in limits:
        if limit.kind.per_job:
            rows.append(LimitRow(limit))
            continue
        scope = scope_of(limit, facts)
        counts_gpus = limit.kind.bounds_concurrency  # GPUs held at once; the others count GPU-minutes
        running = tuple(holders(limit, scope, jobs)) if counts_gpus or limit.kind is LimitKind.GRP_TRES_RUN_MINS else ()
        rows.append(LimitRow(limit, running, tuple(waiting(limit, scope, jobs)) if counts_gpus else ()))
    return tuple(rows)


def _association(facts: QuotaFacts, assoc: AssocRecord, jobs: Sequence[QueuedJob]) -> AssociationQuota:
    caps, groups = association_limits(facts, assoc)
    stored = facts.stored_association(assoc)
    path = tuple(
        PathUsage(
            owner=Owner("account", node.account) if node.user is None else Owner("user", node.user, node.account),
            gpus_in_use=_used(node.grp_tres),
            gpu_minutes_used=_used(node.grp_tres_mins),
            gpu_run_minutes=_used(node.grp_tres_run_mins),
        )
        for node in facts.path(assoc)
    )
    return AssociationQuota(
        account=assoc.account,
        partition=assoc.partition,
        is_default=assoc.is_default,
        qos=stored.qos if stored is not None else None,
        job_qos=facts.job_qos(assoc, None),
        path=path,
        limits=_rows(facts, [*caps, *groups], jobs),
    )


def _used(tres: Mapping[str, TresUse]) -> int:
    use = tres.get("gres/gpu")
    return (use.used or 0) if use is not None else 0


def _qos_names(facts: QuotaFacts, chosen: Sequence[AssocRecord]) -> list[str]:
    names: dict[str, None] = {}
    for assoc in chosen:
        stored = facts.stored_association(assoc)
        if stored is not None:
            names.update(dict.fromkeys(stored.qos))
        qos = facts.job_qos(assoc, None)
        if qos:
            names.setdefault(qos, None)
    if facts.associations is None:  # slurmdbd did not say: the QOS the controller shows with GPU limits or use
        uid = facts.uid
        for q in facts.controller.qos:
            visible = any(is_gpu_tres(n) and u.limit is not None for t in _qos_tres(q) for n, u in t.items())
            if visible or (uid is not None and uid in q.per_user):
                names.setdefault(q.name, None)
    return list(names)


def _qos_tres(q: QosRecord) -> list[Mapping[str, TresUse]]:
    return [
        q.grp_tres,
        q.grp_tres_mins,
        q.grp_tres_run_mins,
        q.max_tres_per_job,
        q.max_tres_per_node,
        q.max_tres_mins_per_job,
        q.min_tres_per_job,
    ]


def _qos(facts: QuotaFacts, name: str, accounts: Sequence[str], jobs: Sequence[QueuedJob]) -> QosQuota:
    seen: dict[tuple[object, ...], GpuLimit] = {}
    for account in accounts:
        caps, usage = qos_limits(facts, name, account)
        for limit in (*caps, *usage):
            seen.setdefault((limit.owner, limit.kind, limit.tres), limit)
    stored = facts.qos.get(name) if facts.qos is not None else None
    return QosQuota(name, stored.flags if stored is not None else None, _rows(facts, list(seen.values()), jobs))
