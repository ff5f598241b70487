"""``hpc-tf launch``: validate -> resolve -> (quota preflight) -> render -> write run dir -> submit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpc.errors import HpcTfError
from hpc.paths import RunPaths
from hpc.render.script import render_script
from hpc.resolve import ResolvedJob, resolve
from hpc.rundir import discard_run_dir, new_run_id, record_submission, write_run_dir
from hpc.scheduler import Scheduler
from hpc.site.load import LoadedSite, load_site
from hpc.spec import load_spec


@dataclass(frozen=True)
class LaunchPlan:
    """Everything decided and rendered; nothing written or submitted yet."""

    job: ResolvedJob
    script: str
    site: LoadedSite


@dataclass(frozen=True)
class Launched:
    job_id: str
    paths: RunPaths
    job: ResolvedJob


def plan_launch(
    spec_path: Path,
    site_name: str | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> LaunchPlan:
    loaded = load_spec(spec_path)
    site = load_site(site_name, overrides, environ)
    job = resolve(loaded, site, new_run_id(loaded.spec.name), environ)
    return LaunchPlan(job=job, script=render_script(job), site=site)


def submit_plan(plan: LaunchPlan, scheduler: Scheduler) -> Launched:
    """Write the run directory, submit it; on a failed submit the run directory is removed again."""
    if plan.job.launcher != "slurm":
        raise HpcTfError(
            f"site '{plan.job.site}' uses the {plan.job.launcher} launcher, which this version cannot start yet",
            hint="launch on a Slurm site, e.g. --site sandbox",
        )
    paths = write_run_dir(plan.job, plan.script)
    try:
        job_id = scheduler.submit(paths.script)
    except BaseException:
        discard_run_dir(paths)
        raise
    record_submission(paths, job_id, cluster=None)
    return Launched(job_id=job_id, paths=paths, job=plan.job)
