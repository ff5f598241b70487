"""Which GPU limits apply to a job, in the order Slurm checks them, and who uses them. Pure functions.

Slurm's rules (``src/slurmctld/acct_policy.c``; https://slurm.schedmd.com/resource_limits.html):

* A job is held to its QOS's limits and to its association's: the user's association, its account,
  and every parent account up to the root. Group limits (``GrpTRES``, ``GrpTRESMins``,
  ``GrpTRESRunMins``) count the whole subtree below the association that sets them, and each
  ancestor's applies. Per-job caps (``MaxTRESPerJob``, ``MaxTRESPerNode``, ``MaxTRESMinsPerJob``) are
  inherited from the nearest ancestor that sets one; the controller has already filled them into
  the user's association.
* A limit set on the QOS replaces the association's limit of the same kind for the same TRES (a
  QOS ``GrpTRES=gres/gpu=8`` lets an account with ``GrpTRES=gres/gpu=4`` hold 6: recorded in
  ``tests/fixtures/quota/slurm-22.05``).
* A job that alone exceeds a per-job cap is reported with that cap's reason, before any group
  limit; then QOS limits are checked before association limits, the user's association first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from hpc.quota.facts import QuotaFacts
from hpc.quota.model import GpuLimit, LimitKind, Owner, amount
from hpc.scheduler.accounting import AssocRecord, QueuedJob, TresUse

# Per-job caps and group limits, in the order Slurm checks them
_QOS_CAPS = (
    LimitKind.MIN_TRES_PER_JOB,
    LimitKind.MAX_TRES_MINS_PER_JOB,
    LimitKind.MAX_TRES_PER_JOB,
    LimitKind.MAX_TRES_PER_NODE,
)
_ASSOC_CAPS = (LimitKind.MAX_TRES_MINS_PER_JOB, LimitKind.MAX_TRES_PER_JOB, LimitKind.MAX_TRES_PER_NODE)
_QOS_USAGE = (
    LimitKind.GRP_TRES_MINS,
    LimitKind.GRP_TRES_RUN_MINS,
    LimitKind.GRP_TRES,
    LimitKind.MAX_TRES_PER_USER,
    LimitKind.MAX_TRES_PER_ACCOUNT,
)
_ASSOC_USAGE = (LimitKind.GRP_TRES_MINS, LimitKind.GRP_TRES_RUN_MINS, LimitKind.GRP_TRES)


def is_gpu_tres(name: str, gres_name: str = "gpu") -> bool:
    base = f"gres/{gres_name}"
    return name == base or name.startswith(base + ":")


def _gpu_entries(tres: Mapping[str, TresUse], wanted: Callable[[str], bool]) -> list[tuple[str, TresUse]]:
    return sorted((name, use) for name, use in tres.items() if wanted(name) and use.limit is not None)


def association_limits(
    facts: QuotaFacts, assoc: AssocRecord, wanted: Callable[[str], bool] = is_gpu_tres
) -> tuple[list[GpuLimit], list[GpuLimit]]:
    """(per-job caps of ``assoc``, group limits of ``assoc`` and every ancestor, nearest first)."""
    caps: list[GpuLimit] = []
    path = facts.path(assoc)
    for kind in _ASSOC_CAPS:
        for name, use in _gpu_entries(_assoc_field(assoc, kind), wanted):
            caps.append(GpuLimit(_owner(_setter(path, kind, name)), kind, name, use.limit or 0))
    groups: list[GpuLimit] = []
    for node in path:
        owner = _owner(node)
        for kind in _ASSOC_USAGE:
            for name, use in _gpu_entries(_assoc_field(node, kind), wanted):
                groups.append(GpuLimit(owner, kind, name, use.limit or 0, use.used or 0))
    return caps, groups


def _setter(path: Sequence[AssocRecord], kind: LimitKind, tres: str) -> AssocRecord:
    """Where an inherited per-job cap is set: the highest association up the path that still has the
    user's value (the controller copies a parent's cap into every association below it)."""
    value = _assoc_field(path[0], kind)[tres].limit
    setter = path[0]
    for node in path[1:]:
        use = _assoc_field(node, kind).get(tres)
        if use is None or use.limit != value:
            break
        setter = node
    return setter


def _owner(assoc: AssocRecord) -> Owner:
    if assoc.user is None:
        return Owner("account", assoc.account, partition=assoc.partition)
    return Owner("user", assoc.user, account=assoc.account, partition=assoc.partition)


def _assoc_field(assoc: AssocRecord, kind: LimitKind) -> Mapping[str, TresUse]:
    return {
        LimitKind.GRP_TRES: assoc.grp_tres,
        LimitKind.GRP_TRES_MINS: assoc.grp_tres_mins,
        LimitKind.GRP_TRES_RUN_MINS: assoc.grp_tres_run_mins,
        LimitKind.MAX_TRES_PER_JOB: assoc.max_tres_per_job,
        LimitKind.MAX_TRES_PER_NODE: assoc.max_tres_per_node,
        LimitKind.MAX_TRES_MINS_PER_JOB: assoc.max_tres_mins_per_job,
    }[kind]


def qos_limits(
    facts: QuotaFacts, qos: str, account: str, wanted: Callable[[str], bool] = is_gpu_tres
) -> tuple[list[GpuLimit], list[GpuLimit]]:
    """(per-job caps, limits counting use) of one QOS for this user's jobs in ``account``.

    Values and use come from the controller, which enforces them; slurmdbd's stored values (possibly
    a few minutes old, :mod:`hpc.quota.stored`) fill in only the per-user and per-account limits the
    controller does not show yet (an account or user appears there once it has used the QOS).
    """
    live = facts.controller.qos_named(qos)
    stored = facts.qos.get(qos) if facts.qos is not None else None
    uid = facts.uid
    user_use = live.per_user.get(uid, {}) if live is not None and uid is not None else {}
    account_use = live.per_account.get(account, {}) if live is not None else {}
    owner = Owner("qos", qos)

    def entries(kind: LimitKind) -> list[tuple[str, int, int | None]]:
        live_tres: Mapping[str, TresUse] = {}
        if live is not None:
            live_tres = {
                LimitKind.GRP_TRES: live.grp_tres,
                LimitKind.GRP_TRES_MINS: live.grp_tres_mins,
                LimitKind.GRP_TRES_RUN_MINS: live.grp_tres_run_mins,
                LimitKind.MAX_TRES_PER_JOB: live.max_tres_per_job,
                LimitKind.MAX_TRES_PER_NODE: live.max_tres_per_node,
                LimitKind.MAX_TRES_MINS_PER_JOB: live.max_tres_mins_per_job,
                LimitKind.MIN_TRES_PER_JOB: live.min_tres_per_job,
                LimitKind.MAX_TRES_PER_USER: user_use,
                LimitKind.MAX_TRES_PER_ACCOUNT: account_use,
            }[kind]
        live_knows = (
            live is not None
            and (kind is not LimitKind.MAX_TRES_PER_USER or uid in live.per_user)
            and (kind is not LimitKind.MAX_TRES_PER_ACCOUNT or account in live.per_account)
        )
        if stored is not None and not live_knows:
            values = {
                LimitKind.GRP_TRES: stored.grp_tres,
                LimitKind.GRP_TRES_MINS: stored.grp_tres_mins,
                LimitKind.GRP_TRES_RUN_MINS: stored.grp_tres_run_mins,
                LimitKind.MAX_TRES_PER_JOB: stored.max_tres_per_job,
                LimitKind.MAX_TRES_PER_NODE: stored.max_tres_per_node,
                LimitKind.MAX_TRES_MINS_PER_JOB: stored.max_tres_mins_per_job,
                LimitKind.MIN_TRES_PER_JOB: stored.min_tres_per_job,
                LimitKind.MAX_TRES_PER_USER: stored.max_tres_per_user,
                LimitKind.MAX_TRES_PER_ACCOUNT: stored.max_tres_per_account,
            }[kind]
            found = sorted((name, value) for name, value in values.items() if wanted(name))
        else:
            found = [(name, use.limit or 0) for name, use in _gpu_entries(live_tres, wanted)]
        return [(name, value, (live_tres.get(name) or TresUse(None, 0)).used or 0) for name, value in found]

    caps = [GpuLimit(owner, kind, name, value) for kind in _QOS_CAPS for name, value, _ in entries(kind)]
    usage: list[GpuLimit] = []
    for kind in _QOS_USAGE:
        kind_owner = Owner("qos", qos, account=account) if kind is LimitKind.MAX_TRES_PER_ACCOUNT else owner
        usage.extend(GpuLimit(kind_owner, kind, name, value, used) for name, value, used in entries(kind))
    return caps, usage


def job_limits(
    facts: QuotaFacts, assoc: AssocRecord, qos: str | None, wanted: Callable[[str], bool] = is_gpu_tres
) -> list[GpuLimit]:
    """Every GPU limit a job of ``assoc`` in ``qos`` is held to, in Slurm's order; association limits
    that the QOS replaces are left out."""
    a_caps, a_groups = association_limits(facts, assoc, wanted)
    q_caps, q_usage = qos_limits(facts, qos, assoc.account, wanted) if qos else ([], [])
    replaced = {(lim.kind, lim.tres) for lim in (*q_caps, *q_usage)}
    kept = [lim for lim in (*a_caps, *a_groups) if (lim.kind, lim.tres) not in replaced]
    return [
        *q_caps,
        *(lim for lim in kept if lim.kind.per_job),
        *q_usage,
        *(lim for lim in kept if not lim.kind.per_job),
    ]


# --- who counts against a limit ------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The jobs a limit counts, as squeue filters (``None``: no filter) and as a predicate."""

    accounts: frozenset[str] | None = None
    users: frozenset[str] | None = None
    qos: frozenset[str] | None = None

    def __contains__(self, job: object) -> bool:
        if not isinstance(job, QueuedJob):
            return False
        return (
            (self.accounts is None or job.account in self.accounts)
            and (self.users is None or job.user in self.users)
            and (self.qos is None or job.qos in self.qos)
        )


# squeue --accounts takes a list; past this many accounts the whole queue is read and filtered here
_MAX_ACCOUNTS_IN_ARGV = 100


def scope_of(limit: GpuLimit, facts: QuotaFacts) -> Scope:
    owner = limit.owner
    if owner.kind == "account":
        subtree = facts.subtree(owner.name)
        return Scope(accounts=subtree)
    if owner.kind == "user":
        return Scope(accounts=frozenset({owner.account or ""}), users=frozenset({owner.name}))
    qos = frozenset({owner.name})
    if limit.kind is LimitKind.MAX_TRES_PER_USER:
        return Scope(users=frozenset({facts.user}), qos=qos)
    if limit.kind is LimitKind.MAX_TRES_PER_ACCOUNT:
        return Scope(accounts=frozenset({owner.account or ""}), qos=qos)
    return Scope(qos=qos)


def squeue_filters(scope: Scope) -> dict[str, list[str]]:
    """Keyword arguments for :func:`hpc.quota.facts.read_jobs` that fetch at least the jobs in ``scope``."""
    filters: dict[str, list[str]] = {}
    if scope.accounts is not None and len(scope.accounts) <= _MAX_ACCOUNTS_IN_ARGV:
        filters["accounts"] = sorted(scope.accounts)
    if scope.users is not None:
        filters["users"] = sorted(scope.users)
    if scope.qos is not None:
        filters["qos"] = sorted(scope.qos)
    return filters


def holders(limit: GpuLimit, scope: Scope, jobs: Iterable[QueuedJob]) -> list[QueuedJob]:
    """Running jobs in ``scope`` that hold GPUs counted by ``limit``, most GPUs first."""
    found = [j for j in jobs if j.running and j in scope and j.gpus_of(limit.tres) > 0]
    return sorted(found, key=lambda j: (-j.gpus_of(limit.tres), str(j.job_id)))


def waiting(limit: GpuLimit, scope: Scope, jobs: Iterable[QueuedJob]) -> list[QueuedJob]:
    """Pending jobs in ``scope`` that ask for GPUs counted by ``limit``."""
    return [j for j in jobs if j.state.is_waiting and j in scope and j.gpus_of(limit.tres) > 0]


def job_list(jobs: Sequence[QueuedJob], tres: str, *, most: int = 6) -> str:
    """``101 (2 GPUs), 102 (2 GPUs)``; long lists end with ``and 7 more``."""
    shown = [f"{j.job_id} ({amount(j.gpus_of(tres), 'GPU')})" for j in jobs[:most]]
    more = len(jobs) - most
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


# --- how many GPUs at once -----------------------------------------------------------------------


@dataclass(frozen=True)
class GpuCeiling:
    """The most GPUs one user's running jobs may hold at once under the association and QOS limits."""

    gpus: int | None  # None: no limit on GPUs held at once
    limit: GpuLimit | None  # the limit that sets it
    free_now: int | None  # how many of them are not in use right now (None when not known/unlimited)
    run_minutes: GpuLimit | None = None  # a GrpTRESRunMins limit: caps GPUs × time left of running jobs
    warnings: tuple[str, ...] = ()  # e.g. slurmdbd did not answer: QOS per-user limits not known

    def max_tasks(self, gpus_per_task: int, minutes_per_task: int | None = None) -> int | None:
        """How many tasks of ``gpus_per_task`` GPUs (and ``minutes_per_task`` time limit) may run at once:
        an array throttle (``%N``) that never queues more GPUs than the quota lets run. None: no cap."""
        if gpus_per_task <= 0:
            return None
        caps: list[int] = []
        if self.gpus is not None:
            caps.append(self.gpus // gpus_per_task)
        if self.run_minutes is not None and minutes_per_task:
            caps.append(self.run_minutes.value // (gpus_per_task * minutes_per_task))
        return max(min(caps), 0) if caps else None

    def to_dict(self) -> dict[str, object]:
        return {
            "gpus": self.gpus,
            "free_now": self.free_now,
            "limit": self.limit.to_dict() if self.limit else None,
            "run_minutes": self.run_minutes.to_dict() if self.run_minutes else None,
            "warnings": list(self.warnings),
        }


def gpu_ceiling(limits: Iterable[GpuLimit], tres: str = "gres/gpu") -> GpuCeiling:
    """From a job's limits (:func:`job_limits`): the smallest cap on GPUs held at once."""
    relevant = [lim for lim in limits if lim.tres == tres]
    caps = [lim for lim in relevant if lim.kind.bounds_concurrency]
    run = [lim for lim in relevant if lim.kind is LimitKind.GRP_TRES_RUN_MINS]
    tightest_run = min(run, key=lambda lim: lim.value, default=None)
    if not caps:
        return GpuCeiling(None, None, None, tightest_run)
    tightest = min(caps, key=lambda lim: lim.value)
    free = [lim.remaining for lim in caps if lim.remaining is not None]
    return GpuCeiling(tightest.value, tightest, min(free) if free else None, tightest_run)
