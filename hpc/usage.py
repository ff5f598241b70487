"""``hpc-tf usage``: the GPU-hours a user's jobs held, from accounting, beside the GPU-minute budget.

One scheduler call lists the user's jobs since a time (Slurm: one ``sacct``,
:meth:`hpc.scheduler.Scheduler.usage`); each allocation counts its allocated GPUs × its elapsed time
(a running job's to now; every earlier run of a requeued job too: it held the GPUs as well). Rows are
grouped by job, by campaign (a campaign's manifest under the runs directory records the job id of each
array it submitted) or by account. The budget is the quota's GPU-minute limits (``GrpTRESMins`` on the
user's association path and QOS, :func:`hpc.quota.quota_report`), read once for all jobs. Slurm's own
count there decays with time (PriorityDecayHalfLife) and covers every user of an account, so it need
not equal the hours listed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hpc.errors import HpcTfError, InputError
from hpc.quota.facts import current_user
from hpc.quota.model import LimitKind
from hpc.scheduler import JobUsage, Scheduler
from hpc.text import shown

if TYPE_CHECKING:
    from hpc.quota import QuotaReport
    from hpc.site.model import SiteConfig

GroupBy = Literal["job", "campaign", "account"]
_GROUPS: dict[str, GroupBy] = {"job": "job", "campaign": "campaign", "account": "account"}
NOT_IN_A_CAMPAIGN = "-"

_AGO = re.compile(r"(?P<count>\d+)(?P<unit>[mhdw])")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_since(text: str, now: float) -> float:
    """``30d``, ``12h``, ``90m``, ``2w`` before ``now``, or a local date/time (``2026-11-01``,
    ``2026-11-01T09:30``) → unix time."""
    value = text.strip()
    ago = _AGO.fullmatch(value)
    if ago is not None:
        return now - int(ago["count"]) * _UNIT_S[ago["unit"]]
    for form in _DATE_FORMATS:
        try:
            return time.mktime(time.strptime(value, form))
        except ValueError:
            continue
    raise InputError(f"--since {shown(text)} is not a time",
                     hint="give a span back from now (30d, 12h, 90m, 2w) or a date (2026-11-01, 2026-11-01T09:30)")


def grouping(text: str) -> GroupBy:
    """``--by``: job, campaign or account."""
    found = _GROUPS.get(text)
    if found is None:
        raise InputError(f"--by {shown(text)}: choose one of {', '.join(_GROUPS)}")
    return found


@dataclass(frozen=True)
class JobOwner:
    """Which campaign (and stage) submitted a job, or which run directory holds it."""

    campaign: str = NOT_IN_A_CAMPAIGN
    label: str = "-"  # the campaign's stage, or the run's directory name


def job_owners(runs_root: Path) -> dict[str, JobOwner]:
    """Submitted job ids (an array's own id) → their campaign and stage, or their run; from the
    records under the runs directory (campaign manifests, run directories' submission.json)."""
    from hpc.campaign.manifest import read_manifest  # only for this command
    from hpc.campaign.paths import MANIFEST, CampaignPaths
    from hpc.runs import list_runs

    if not runs_root.is_dir():
        return {}
    owners = {run.job_id: JobOwner(label=run.name) for run in list_runs(runs_root)}
    for manifest_file in sorted(runs_root.glob(f"*/{MANIFEST}")):
        try:
            manifest = read_manifest(CampaignPaths.at(manifest_file.parent))
        except HpcTfError:
            continue  # an unreadable manifest: its jobs are still counted, outside any campaign
        for submission in manifest.submissions:
            owners[submission.job_id] = JobOwner(manifest.id, submission.stage)
    return owners


@dataclass(frozen=True)
class UsageRow:
    key: str  # the job id, campaign id or account
    allocations: int  # a job's runs (requeued), or the jobs of a campaign/account
    gpu_seconds: int
    elapsed_s: int
    # by job: its run or campaign stage, account, state and GPUs (of its last run)
    label: str = ""
    account: str = ""
    state: str = ""
    gpus: int | None = None

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "label": self.label, "account": self.account, "state": self.state,
                "gpus": self.gpus, "allocations": self.allocations, "elapsed_s": self.elapsed_s,
                "gpu_seconds": self.gpu_seconds, "gpu_hours": round(self.gpu_hours, 4)}


@dataclass(frozen=True)
class Budget:
    """A GPU-minute budget on the user's path (GrpTRESMins), as the quota reads it."""

    where: str  # "account lab", "QOS normal"
    words: str  # "account lab has a budget of 600 GPU-minutes"
    minutes: int
    used_minutes: int | None  # Slurm's count (decayed, every user of it)

    def as_dict(self) -> dict[str, object]:
        return {"set_on": self.where, "gpu_minutes": self.minutes, "used_gpu_minutes": self.used_minutes,
                "left_gpu_minutes": None if self.used_minutes is None else max(self.minutes - self.used_minutes, 0)}


@dataclass(frozen=True)
class UsageReport:
    launcher: str
    user: str
    since: float
    until: float
    by: GroupBy
    jobs: Sequence[tuple[JobUsage, JobOwner]]  # every allocation, in the scheduler's order
    rows: Sequence[UsageRow]
    budgets: Sequence[Budget] | None  # None: no quota to read (the local launcher)
    warnings: Sequence[str] = ()

    @property
    def gpu_seconds(self) -> int:
        return sum(job.gpu_seconds for job, _ in self.jobs)

    def as_dict(self) -> dict[str, object]:
        return {
            "launcher": self.launcher, "user": self.user, "since": _iso(self.since), "until": _iso(self.until),
            "by": self.by, "gpu_seconds": self.gpu_seconds, "gpu_hours": round(self.gpu_seconds / 3600, 4),
            "rows": [row.as_dict() for row in self.rows],
            "jobs": [{"job_id": job.job_id, "raw_id": job.raw_id, "state": job.state.value, "account": job.account,
                      "campaign": owner.campaign, "label": owner.label, "gpus": job.gpus,
                      "elapsed_s": job.elapsed_s, "gpu_seconds": job.gpu_seconds} for job, owner in self.jobs],
            "budgets": None if self.budgets is None else [b.as_dict() for b in self.budgets],
            "warnings": list(self.warnings),
        }


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(moment))


def group(jobs: Sequence[tuple[JobUsage, JobOwner]], by: GroupBy) -> list[UsageRow]:
    """One row per job id (a requeued job's runs together), campaign or account; most GPU time first."""
    keyed: dict[str, list[tuple[JobUsage, JobOwner]]] = {}
    for job, owner in jobs:
        key = {"job": job.job_id, "campaign": owner.campaign, "account": job.account or "-"}[by]
        keyed.setdefault(key, []).append((job, owner))
    rows = []
    for key, members in keyed.items():
        last, owner = members[-1]
        row = UsageRow(key=key, allocations=len(members), gpu_seconds=sum(job.gpu_seconds for job, _ in members),
                       elapsed_s=sum(job.elapsed_s for job, _ in members))
        if by == "job":
            where = owner.label if owner.campaign == NOT_IN_A_CAMPAIGN else f"{owner.campaign} {owner.label}"
            row = replace(row, label=where, account=last.account, state=last.state.value, gpus=last.gpus)
        rows.append(row)
    return sorted(rows, key=lambda row: -row.gpu_seconds)  # stable: ties keep the scheduler's order


def owned(jobs: Iterable[JobUsage], owners: Mapping[str, JobOwner]) -> list[tuple[JobUsage, JobOwner]]:
    return [(job, owners.get(job.base, JobOwner())) for job in jobs]


def gpu_usage(scheduler: Scheduler, *, launcher: str, user: str, since: float, by: GroupBy, runs_root: Path,
              budgets: Sequence[Budget] | None, now: float | None = None, warnings: Sequence[str] = ()) -> UsageReport:
    """``user``'s GPU time since ``since`` from one scheduler call, grouped ``by``; ``budgets`` as
    :func:`budgets_of` read them (None when the launcher has no quota)."""
    until = time.time() if now is None else now
    jobs = owned(scheduler.usage(since=since, user=user), job_owners(runs_root))
    return UsageReport(launcher=launcher, user=user, since=since, until=until, by=by, jobs=jobs,
                       rows=group(jobs, by), budgets=budgets, warnings=tuple(warnings))


def budgets_of(report: QuotaReport) -> list[Budget]:
    """The GPU-minute budgets (GrpTRESMins) of a quota report, each once."""
    found: dict[tuple[str, str], Budget] = {}
    rows = [row for assoc in report.associations for row in assoc.limits]
    rows += [row for qos in report.qos for row in qos.limits]
    for row in rows:
        limit = row.limit
        if limit.kind is LimitKind.GRP_TRES_MINS:
            found.setdefault((str(limit.owner), limit.tres),
                             Budget(str(limit.owner), limit.allows(), limit.value, limit.used))
    return list(found.values())


def site_usage(config: SiteConfig, since: str, by: GroupBy, environ: Mapping[str, str],
               now: float | None = None) -> UsageReport:
    """``hpc-tf usage`` on a site: its launcher's scheduler for the jobs, its quota (Slurm) for the budget."""
    from hpc.backends import scheduler_for
    from hpc.paths import runs_root

    moment = time.time() if now is None else now
    start = parse_since(since, moment)
    root = runs_root(config.runs_dir, environ)
    budgets: list[Budget] | None = None
    warnings: list[str] = []
    user = current_user()
    if config.launcher == "slurm":
        from hpc.quota import StoredAnswers, quota_report

        try:
            quota = quota_report(user=user, stored=StoredAnswers.for_user(user))
            budgets = budgets_of(quota)
            warnings += quota.warnings
        except HpcTfError as err:  # the hours still come from accounting
            warnings.append(f"GPU-minute budget not read: {err.message}")
    return gpu_usage(scheduler_for(config.launcher, root, config.scheduler), launcher=config.launcher, user=user,
                     since=start, by=by, runs_root=root, budgets=budgets, now=moment, warnings=warnings)
