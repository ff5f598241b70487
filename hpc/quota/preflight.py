"""Before ``sbatch``: can this job ever run under the GPU limits, must it wait, or is it fine?

``preflight(job)`` makes at most four scheduler calls (the controller's association manager; the
job's QOS from slurmdbd when the job names none; the QOS limits; and, only when the job must wait,
one squeue for the jobs holding the GPUs), each with a short timeout and the whole check within
:data:`~hpc.quota.facts.PREFLIGHT_BUDGET_S`. When the controller or accounting is slow or down the
verdict is UNKNOWN with a warning: a launch is never held up for long by the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from hpc.errors import HpcTfError, QuotaRefused
from hpc.quota.facts import (
    PREFLIGHT_BUDGET_S,
    Calls,
    QuotaFacts,
    current_user,
    failure_summary,
    gather,
    quick_cli,
    read_jobs,
)
from hpc.quota.limits import holders, job_limits, job_list, scope_of, squeue_filters
from hpc.quota.model import GpuLimit, GpuRequest, LimitKind, amount
from hpc.quota.stored import StoredAnswers
from hpc.resolve import ResolvedJob
from hpc.scheduler.accounting import QueuedJob
from hpc.scheduler.run import SlurmCli


class VerdictKind(str, Enum):
    OK = "ok"  # every GPU limit leaves room for it now
    MUST_WAIT = "must_wait"  # fits the limits, but other jobs hold the quota now: it will pend
    NEVER_FITS = "never_fits"  # it exceeds a limit by itself: it would pend forever (or be killed)
    UNKNOWN = "unknown"  # Slurm did not answer (in time): not checked


@dataclass(frozen=True)
class Finding:
    """One limit the job runs into, and how."""

    limit: GpuLimit
    kind: VerdictKind  # NEVER_FITS or MUST_WAIT
    asked: int  # the request in the limit's unit (GPUs, GPUs per node, GPU-minutes)


@dataclass(frozen=True)
class QuotaVerdict:
    kind: VerdictKind
    message: str  # sentences with the numbers: the limit, its value, the request, who holds the GPUs
    request: GpuRequest
    limit: GpuLimit | None = None  # the limit that decides (never_fits / must_wait)
    reason: str | None = None  # the pending reason Slurm will show: AssocGrpGRES, QOSMaxGRESPerUser …
    holders: tuple[QueuedJob, ...] = ()  # must_wait: the running jobs holding the GPUs
    findings: tuple[Finding, ...] = ()  # every limit in the way, in the order Slurm checks them
    account: str | None = None
    qos: str | None = None
    warnings: tuple[str, ...] = ()
    calls: tuple[tuple[str, ...], ...] = field(default=(), repr=False)  # the scheduler calls made

    @property
    def blocks(self) -> bool:
        return self.kind in (VerdictKind.NEVER_FITS, VerdictKind.MUST_WAIT)

    def refusal(self) -> QuotaRefused:
        """The error a launch raises instead of submitting (exit code 3)."""
        if self.kind is VerdictKind.MUST_WAIT:
            return QuotaRefused(self.message, hint="submit without --no-queue to let it wait in the queue")
        return QuotaRefused(self.message, hint=_hint(self))

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.kind.value,
            "message": self.message,
            "request": self.request.to_dict(),
            "limit": self.limit.to_dict() if self.limit else None,
            "reason": self.reason,
            "holders": [{"job_id": str(j.job_id), "user": j.user, "gpus": j.gpus} for j in self.holders],
            "account": self.account,
            "qos": self.qos,
            "warnings": list(self.warnings),
        }


def _hint(verdict: QuotaVerdict) -> str:
    limit = verdict.limit
    if limit is None:
        return "see hpc-tf quota"
    if limit.kind.in_minutes:
        return "shorten resources.time or use fewer GPUs, ask for a bigger budget, or submit with --force"
    return "ask for fewer GPUs (see hpc-tf quota), ask your administrators to raise the limit, or submit with --force"


def preflight(
    job: ResolvedJob,
    cli: SlurmCli | None = None,
    *,
    user: str | None = None,
    budget_s: float = PREFLIGHT_BUDGET_S,
    stored: StoredAnswers | None = None,
) -> QuotaVerdict:
    """Check a resolved job against the GPU limits of its association and QOS before submitting it.

    ``stored``: slurmdbd's recent answers for this user. A verdict made with them that is anything but
    OK is made again with fresh ones (when slurmdbd answers), so a setting changed since can only let
    a job through that Slurm then keeps pending, never refuse one that fits."""
    request = GpuRequest.from_job(job)
    if request.gpus == 0:
        return QuotaVerdict(VerdictKind.OK, "no GPUs requested: the GPU quota does not apply", request)
    calls = Calls(cli or quick_cli(), budget_s)
    name = user or current_user()
    try:
        facts = gather(calls, name, qos=job.qos, stored=stored)
        if stored is not None and stored.used and _judge(facts, request, job).kind is not VerdictKind.OK:
            fresh = gather(calls, name, qos=job.qos, stored=stored.fresh())
            if fresh.accounting_error is None:  # else the remembered answers are the best there are
                facts = fresh
    except HpcTfError as err:  # Slurm failed or answered oddly; a name it cannot take
        text = f"GPU quota not checked: {failure_summary(err)}"
        return QuotaVerdict(
            VerdictKind.UNKNOWN,
            text,
            request,
            account=job.account,
            qos=job.qos,
            warnings=(text,),
            calls=tuple(calls.argvs),
        )
    verdict = _judge(facts, request, job)
    if verdict.kind is VerdictKind.MUST_WAIT and verdict.limit is not None:
        verdict = with_holders(verdict, facts, calls)
    return replace(verdict, calls=tuple(calls.argvs))


def _judge(facts: QuotaFacts, request: GpuRequest, job: ResolvedJob) -> QuotaVerdict:
    return judge(facts, request, account=job.account, qos=job.qos, partition=job.partition)


def judge(
    facts: QuotaFacts, request: GpuRequest, *, account: str | None, qos: str | None, partition: str | None
) -> QuotaVerdict:
    """The verdict from what Slurm said (pure: no calls)."""
    warnings = list(facts.warnings)
    assoc = facts.association(account, partition)
    if assoc is None:
        return _no_association(facts, request, account, partition, warnings)
    job_qos = facts.job_qos(assoc, qos)
    if job_qos is None:
        warnings.append("the job's QOS is not known (slurmdbd did not answer): QOS limits not checked")
    elif facts.qos is None:
        warnings.append(f"QOS {job_qos}: per-user and per-account limits not checked (slurmdbd did not answer)")
    elif job_qos not in facts.qos:
        warnings.append(f"Slurm has no QOS named {job_qos!r}: sbatch will refuse the job")
    limits = job_limits(facts, assoc, job_qos, lambda name: name in request.tres_names)
    findings = tuple(f for f in (_check(lim, request) for lim in limits) if f is not None)
    base = QuotaVerdict(
        VerdictKind.OK, "", request, findings=findings, account=assoc.account, qos=job_qos, warnings=tuple(warnings)
    )
    decisive = next((f for f in findings if f.kind is VerdictKind.NEVER_FITS), None) or next(iter(findings), None)
    if decisive is not None:
        return replace(
            base,
            kind=decisive.kind,
            limit=decisive.limit,
            reason=decisive.limit.reason,
            message=_sentence(decisive, request),
        )
    if warnings:
        return replace(base, kind=VerdictKind.UNKNOWN, message="GPU quota only partly checked: " + "; ".join(warnings))
    room = _room(limits)
    return replace(base, message=f"GPU quota: {request.describe()} fits" + (f" ({room})" if room else ""))


def _no_association(
    facts: QuotaFacts, request: GpuRequest, account: str | None, partition: str | None, warnings: list[str]
) -> QuotaVerdict:
    mine = facts.user_associations()
    if not mine:
        text = f"the controller shows no association for user {facts.user}: GPU quota not checked"
        return QuotaVerdict(VerdictKind.UNKNOWN, text, request, account=account, warnings=(*warnings, text))
    if account is None:
        text = f"user {facts.user} has no default account: GPU quota not checked"
        return QuotaVerdict(VerdictKind.UNKNOWN, text, request, warnings=(*warnings, text))
    allowed = sorted({a.account for a in mine})
    where = f" for partition {partition}" if partition and account in allowed else ""
    text = (
        f"user {facts.user} may not use account {account}{where} on cluster {facts.cluster}: "
        f"sbatch would refuse the job (accounts: {', '.join(allowed)})"
    )
    return QuotaVerdict(VerdictKind.NEVER_FITS, text, request, account=account, warnings=tuple(warnings))


def _check(limit: GpuLimit, request: GpuRequest) -> Finding | None:
    asked = request.amount(limit.kind)
    if limit.kind is LimitKind.MIN_TRES_PER_JOB:
        return Finding(limit, VerdictKind.NEVER_FITS, asked) if asked < limit.value else None
    if asked > limit.value:
        return Finding(limit, VerdictKind.NEVER_FITS, asked)
    if limit.kind.per_job or limit.used is None:
        return None
    if limit.used + asked > limit.value:
        # a GPU-minute budget does not come back when jobs end: what is left is all there is
        kind = VerdictKind.NEVER_FITS if limit.kind is LimitKind.GRP_TRES_MINS else VerdictKind.MUST_WAIT
        return Finding(limit, kind, asked)
    return None


def _sentence(finding: Finding, request: GpuRequest, held: str = "") -> str:
    limit, asked = finding.limit, finding.asked
    setting = f"({limit.setting})"
    if limit.kind is LimitKind.GRP_TRES_MINS:
        used = limit.used or 0
        if used >= limit.value:
            return (
                f"can never run: the GPU-time budget of {limit.owner} is used up: {used} of {limit.value} "
                f"GPU-minutes {setting}. Slurm keeps its GPU jobs pending ({limit.reason}) until an "
                "administrator raises it"
            )
        return (
            f"can never run to its time limit: it may use {amount(asked, 'GPU-minute')} ({amount(request.gpus, 'GPU')}"
            f" × {request.minutes} min), but {limit.owner} has {amount(limit.value - used, 'GPU-minute')} left of "
            f"its budget {setting}, {used} used. Slurm would stop it when the budget runs out"
        )
    unit = "GPU-minute" if limit.kind.in_minutes else "GPU"
    if finding.kind is VerdictKind.NEVER_FITS:
        what = f"{amount(asked, unit)} per node" if limit.kind is LimitKind.MAX_TRES_PER_NODE else amount(asked, unit)
        return (
            f"can never run: {limit.allows()} {setting} and this job asks for {what}. "
            f"Slurm would keep it pending forever ({limit.reason})"
        )
    used = limit.used or 0
    short = used + asked - limit.value
    return (
        f"must wait: {limit.allows()} {setting}; {used} in use{held}, and this job asks for "
        f"{amount(asked, unit)}. It will pend ({limit.reason}) until {amount(short, unit)} "
        f"{'is' if short == 1 else 'are'} free"
    )


def with_holders(verdict: QuotaVerdict, facts: QuotaFacts, calls: Calls) -> QuotaVerdict:
    """Add which running jobs hold the quota (one squeue call); on failure keep the verdict as it is."""
    limit = verdict.limit
    finding = next((f for f in verdict.findings if f.limit == limit), None)
    if limit is None or finding is None:
        return verdict
    scope = scope_of(limit, facts)
    try:
        jobs = read_jobs(calls, **squeue_filters(scope))
    except HpcTfError as err:  # Slurm failed or answered oddly; a name it cannot take
        note = f"could not list the jobs holding the GPUs: {failure_summary(err)}"
        return replace(verdict, warnings=(*verdict.warnings, note))
    found = holders(limit, scope, jobs)
    return replace(verdict, holders=tuple(found), message=_sentence(finding, verdict.request, held_by(limit, found)))


def held_by(limit: GpuLimit, found: Sequence[QueuedJob]) -> str:
    """`` by jobs 101 (2 GPUs), 102 (2 GPUs)``, and how many GPUs jobs hpc-tf cannot see hold."""
    if not found:
        return " by jobs not visible to you"
    text = f" by job{'s' if len(found) > 1 else ''} {job_list(found, limit.tres)}"
    if not limit.kind.in_minutes and limit.used is not None:
        unseen = limit.used - sum(j.gpus_of(limit.tres) for j in found)
        if unseen > 0:
            text += f" and {amount(unseen, 'GPU')} by jobs not visible to you"
    return text


def _room(limits: Sequence[GpuLimit]) -> str:
    counted = [lim for lim in limits if lim.kind.bounds_concurrency and lim.remaining is not None]
    tight = min(counted, key=lambda lim: lim.remaining or 0, default=None)
    if tight is None:
        return ""
    return f"{tight.owner}: {tight.remaining} of {tight.value} GPUs free"


def check_launch(
    job: ResolvedJob,
    *,
    force: bool = False,
    no_queue: bool = False,
    cli: SlurmCli | None = None,
    user: str | None = None,
    stored: StoredAnswers | None = None,
) -> QuotaVerdict:
    """The launch step: raise QuotaRefused (exit 3) for a job that can never fit, or that must wait
    when ``no_queue``; ``force`` submits anyway (the verdict is still returned, to be shown)."""
    verdict = preflight(job, cli, user=user, stored=stored)
    if force:
        return verdict
    if verdict.kind is VerdictKind.NEVER_FITS or (no_queue and verdict.kind is VerdictKind.MUST_WAIT):
        raise verdict.refusal()
    return verdict


class QuotaWarning(UserWarning):
    """A job submitted through the Python API that must wait for GPU quota (or was not checked)."""


def notices(verdict: QuotaVerdict, force: bool = False) -> list[tuple[str, bool]]:
    """What a submitted job's verdict tells its user, in order: (sentence, whether it is a warning)."""
    if verdict.kind is VerdictKind.NEVER_FITS:
        said = [(f"{verdict.message}; submitting anyway (--force)", True) if force else (verdict.message, False)]
    else:
        said = [(verdict.message, verdict.kind is not VerdictKind.OK)]
    if verdict.kind is not VerdictKind.UNKNOWN:  # an unknown verdict's message already lists them
        said += [(warning, True) for warning in verdict.warnings]
    return said
