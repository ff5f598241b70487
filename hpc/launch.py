"""``hpc-tf launch``: validate -> resolve -> render, then through the launcher's backend
(:mod:`hpc.backends`): quota preflight -> write run dir -> submit."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from hpc.atomic import write_text_atomic
from hpc.backends import CHECK_QUOTA, Backend, QuotaPolicy
from hpc.paths import RunPaths
from hpc.render.cpu_jobs import render_handoff_script
from hpc.render.script import render_script
from hpc.resolve import HandoffPlan, ResolvedJob, resolve
from hpc.rundir import new_run_id, record_submission
from hpc.scheduler import SubmitOptions
from hpc.site.load import load_site
from hpc.spec import load_spec

if TYPE_CHECKING:
    from hpc.quota import QuotaVerdict


@dataclass(frozen=True)
class LaunchPlan:
    """Everything decided and rendered; nothing written or submitted yet."""

    job: ResolvedJob
    script: str
    handoff_script: str | None = None  # the dependent hand-off job (job.yaml ``handoff:``)


@dataclass(frozen=True)
class Launched:
    """What submitting a :class:`LaunchPlan` made (the job itself is the plan's)."""

    job_id: str
    paths: RunPaths
    handoff_job_id: str | None = None
    quota: QuotaVerdict | None = None  # the GPU quota preflight's verdict, to be shown (None: no quota)


def plan_launch(
    spec_path: Path,
    site_name: str | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> LaunchPlan:
    loaded = load_spec(spec_path)
    site = load_site(site_name, overrides, environ)
    job = resolve(loaded, site, new_run_id(loaded.spec.name), environ)
    if job.handoff is not None:
        _check_handoff_format(job.handoff)
    handoff = render_handoff_script(job) if job.handoff is not None else None
    return LaunchPlan(job=job, script=render_script(job), handoff_script=handoff)


def _check_handoff_format(handoff: HandoffPlan) -> None:
    """A hand-off in a format the repository's serving node cannot load is refused now, not after the training."""
    from hpc.serving.repository import Repository
    from hpc.serving.server import check_servable, registered_node

    node = registered_node(Repository.at(handoff.repository))
    if node is not None:
        check_servable(handoff.format, node, other_setting="handoff.format: {} in job.yaml")


def submit_plan(plan: LaunchPlan, backend: Backend, quota: QuotaPolicy = CHECK_QUOTA) -> Launched:
    """Check the GPU quota, write the run directory, submit it (and its hand-off job); a launch is
    whole or not at all: on a failed submit the run directory is removed again."""
    verdict = backend.check_quota(plan.job, quota)
    paths = backend.create_run_dir(plan.job, plan.script, plan.handoff_script)
    with backend.submitting(paths):
        job_id = backend.submit(paths.script)
    record_submission(paths, job_id, cluster=None, launcher=plan.job.launcher)
    handoff_id = _submit_handoff(paths, job_id, backend) if plan.handoff_script is not None else None
    return Launched(job_id=job_id, paths=paths, handoff_job_id=handoff_id, quota=verdict)


def _submit_handoff(paths: RunPaths, training_id: str, backend: Backend) -> str:
    """Submit the hand-off job to start once the training job completed successfully; record its id.

    When the hand-off cannot be submitted, the training job is cancelled (and the run directory
    removed) before the error is raised.
    """
    with backend.submitting(paths):
        try:
            handoff_id = backend.submit(paths.handoff_script, SubmitOptions.after_success([training_id]))
        except BaseException:
            backend.cancel([training_id])
            raise
    record = {"job_id": handoff_id, "after_ok": training_id,
              "submitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_text_atomic(paths.handoff_submission, json.dumps(record, indent=2) + "\n")
    return handoff_id
