"""The calls ``hpc-tf campaign run|status|resubmit|cancel`` make: one each."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpc.backends import Backend, backend_for
from hpc.campaign.load import load_campaign
from hpc.campaign.manifest import locked, read_manifest, write_manifest
from hpc.campaign.paths import MANIFEST, CampaignPaths
from hpc.campaign.plan import CampaignPlan, plan_campaign
from hpc.campaign.results import CampaignResults, results, task_gpu_seconds
from hpc.campaign.status import CampaignView, poll, view
from hpc.campaign.submit import Submitted, submit_campaign
from hpc.campaign.throttle import GPU_LIMITS, NO_GPU_LIMIT, GpuLimit
from hpc.errors import HpcTfError, SchedulerCommandFailed
from hpc.metrics.read import Mode
from hpc.paths import runs_root
from hpc.rundir import new_run_id
from hpc.scheduler import Scheduler
from hpc.scheduler.choice import SchedulerKind
from hpc.scheduler.parse import config_number
from hpc.site.load import load_site
from hpc.text import shown

MAX_ARRAY_SIZE_KEY = "MaxArraySize"  # in Scheduler.show_config()


def max_array_size(scheduler: Scheduler) -> int | None:
    """The cluster's MaxArraySize (array indices go up to one less), or None if it does not say."""
    value = scheduler.show_config().get(MAX_ARRAY_SIZE_KEY)
    return None if value is None else config_number(value)


def plan_from_file(
    path: Path,
    site_name: str | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    *,
    scheduler: Scheduler | None = None,
    gpu_limit: int | GpuLimit | None = None,
    chunk_size: int | None = None,
    throttle: int | None = None,
) -> CampaignPlan:
    """Load, resolve and plan. ``gpu_limit``: a number, or how to read it (e.g. :func:`quota_gpu_limit`).

    With ``scheduler`` None nothing is asked of the cluster: Slurm's default MaxArraySize is assumed
    and only a numeric ``gpu_limit`` sets throttles (``hpc-tf campaign run`` always passes one, dry or not).
    """
    env = dict(os.environ if environ is None else environ)
    loaded = load_campaign(path)
    site = load_site(site_name, overrides, env)
    array_size = max_array_size(scheduler) if scheduler is not None else None
    campaign_id = new_run_id(loaded.spec.name)

    def plan(limit: int | None, note: str = "GPU quota unknown") -> CampaignPlan:
        return plan_campaign(loaded, site, campaign_id, environ=env, gpu_limit=limit, max_array_size=array_size,
                             chunk_size=chunk_size, throttle=throttle, quota_note=note)

    if gpu_limit is None or isinstance(gpu_limit, int):
        return plan(gpu_limit)
    first = plan(None)  # resolves every stage: the quota depends on their accounts and partitions
    gpu_jobs = [s.job for s in first.stages if s.job.total_gpus > 0]
    if not gpu_jobs:
        return first
    try:
        limits = [limit for limit in (gpu_limit(job) for job in gpu_jobs) if limit is not None]
    except HpcTfError as err:
        return plan(None, f"GPU quota not read: {err.reason}")
    return plan(min(limits)) if limits else plan(None, NO_GPU_LIMIT[site.config.launcher])


def run(plan: CampaignPlan, backend: Backend) -> Submitted:
    return submit_campaign(plan, backend)


@dataclass(frozen=True)
class CampaignRun:
    plan: CampaignPlan
    submitted: Submitted | None  # None: a dry run
    offline: str = ""  # a dry run planned without Slurm, which did not answer: why


def run_file(
    path: Path,
    site_name: str | None = None,
    overrides: Sequence[str] = (),
    *,
    dry_run: bool = False,
    gpu_limit: int | None = None,
    chunk_size: int | None = None,
    throttle: int | None = None,
    backend: Backend | None = None,
) -> CampaignRun:
    """``hpc-tf campaign run``: plan (the GPU limit, unless given, read from the account's quota, or on the
    local launcher from this machine's GPUs; the cluster's MaxArraySize), then submit through the site's
    launcher. A dry run plans with the same reads, so it shows exactly the arrays and throttles the real
    run would submit, and submits nothing. Where Slurm cannot be asked (a laptop, the controller down) a
    dry run still plans, without those reads, and says so."""
    site = load_site(site_name, overrides).config
    backend = backend or backend_for(site.launcher, runs_root(site.runs_dir, os.environ), site.scheduler)
    limit: int | GpuLimit = gpu_limit if gpu_limit is not None else GPU_LIMITS[site.launcher]
    try:
        plan = plan_from_file(path, site_name, overrides, scheduler=backend.scheduler, gpu_limit=limit,
                              chunk_size=chunk_size, throttle=throttle)
    except SchedulerCommandFailed as err:
        if not dry_run:
            raise
        plan = plan_from_file(path, site_name, overrides, gpu_limit=gpu_limit, chunk_size=chunk_size,
                              throttle=throttle)
        return CampaignRun(plan, None, offline=err.reason)
    return CampaignRun(plan, None if dry_run else run(plan, backend))


def campaign_backend(paths: CampaignPaths, scheduler: SchedulerKind = "cli") -> Backend:
    """The launcher that runs the campaign's jobs, as its manifest records it (``scheduler``: how Slurm is
    reached); the local launcher's job records are in the runs directory that holds the campaign."""
    manifest = read_manifest(paths)
    return backend_for(manifest.launcher, Path(manifest.root).parent, scheduler)


def status(
    paths: CampaignPaths, scheduler: Scheduler, *, refresh: bool = False, clock: Callable[[], float] = time.time
) -> CampaignView:
    """The campaign's state: one batched scheduler query, or none while the backoff interval runs."""
    with locked(paths):
        manifest = read_manifest(paths)
        queried = poll(manifest, scheduler, force=refresh, clock=clock)
        if queried:
            write_manifest(paths, manifest)
    return view(manifest, queried=queried, now=clock())


def ranked(
    paths: CampaignPaths, scheduler: Scheduler, *, metric: str | None = None, mode: Mode | None = None,
    stage: str | None = None, clock: Callable[[], float] = time.time,
) -> CampaignResults:
    """``hpc-tf campaign results``: the tasks' states as :func:`status` has them (the same backoff; no query
    once every task has ended), each with its metrics and GPU-hours (one accounting call), ranked."""
    with locked(paths):
        manifest = read_manifest(paths)
        if poll(manifest, scheduler, clock=clock):
            write_manifest(paths, manifest)
    try:
        spent: dict[int, int] | None = task_gpu_seconds(manifest, scheduler)
        note = ""
    except HpcTfError as err:  # the ranking stands without them
        spent, note = None, f"GPU-hours not read: {err.reason}"
    return results(manifest, paths, metric=metric, mode=mode, stage=stage, gpu_seconds=spent, usage_note=note)


def find_campaign(target: str, root: Path) -> CampaignPaths:
    """A campaign directory, or a campaign id or name under the runs directory (the newest of that name)."""
    candidate = Path(target).expanduser()
    if (candidate / MANIFEST).is_file():
        return CampaignPaths.at(candidate.resolve())
    if "/" not in target and root.is_dir():
        exact = root / target
        if (exact / MANIFEST).is_file():
            return CampaignPaths.at(exact)
        named = sorted((p.parent for p in root.glob(f"{target}-*/{MANIFEST}")), key=lambda p: p.stat().st_mtime)
        if named:
            return CampaignPaths.at(named[-1])
    raise HpcTfError(f"{shown(target)} is not a campaign directory, id or name",
                     hint=f"pass the directory hpc-tf campaign run printed (campaigns live under {root})")
