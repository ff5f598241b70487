"""Writing a campaign directory and submitting it; resubmitting failed tasks; cancelling.

Everything goes through the launcher's :class:`~hpc.backends.Backend`: the GPU stages pass its quota
preflight first (an array as :meth:`~hpc.backends.Backend.check_array_quota` reads it), the directory
is written complete under a temporary name and renamed, as a run directory is (``Backend.staged``).
Then each planned submission is one array (or job) with its dependencies, and the manifest is
rewritten (atomically) after each, so a failure half-way leaves a manifest that says exactly
which jobs exist.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from hpc.atomic import write_text_atomic
from hpc.backends import CHECK_QUOTA, Backend, QuotaPolicy
from hpc.campaign.manifest import (
    Attempt,
    Manifest,
    SubmissionRecord,
    UnitRef,
    locked,
    now_iso,
    read_manifest,
    write_manifest,
)
from hpc.campaign.model import DependencyType
from hpc.campaign.paths import CampaignPaths
from hpc.campaign.plan import CampaignPlan, PlannedSubmission, chunks, with_offset
from hpc.campaign.status import blocked_units, is_failed, poll, upstream_units
from hpc.errors import HpcTfError
from hpc.render.script import render_script
from hpc.resolve import ResolvedJob, load_resolved
from hpc.rundir import staged_directory
from hpc.runtime import install_into
from hpc.scheduler import ArrayRequest, JobState, SubmitOptions

if TYPE_CHECKING:
    from hpc.quota import QuotaVerdict

_NODE_TASK = Path(__file__).resolve().parent / "node_task.py"
Dependencies = tuple[tuple[DependencyType, tuple[str, ...]], ...]


Staging = Callable[[Path, str], AbstractContextManager[Path]]


def write_campaign_dir(plan: CampaignPlan, staged: Staging = staged_directory) -> CampaignPaths:
    """Campaign file copy, one task.json per task, each stage's run directory, the manifest; then rename."""
    with staged(plan.paths.root, "campaign directory") as root:
        staging = CampaignPaths.at(root)
        staging.tasks_dir.mkdir()
        if plan.loaded.path.is_file():
            shutil.copyfile(plan.loaded.path, staging.source_copy)
        for task in plan.tasks:
            # plain writes: the whole directory appears at once by the rename below
            staging.task_dir(task.id).mkdir()
            staging.task_file(task.id).write_text(json.dumps(plan.task_document(task), indent=1) + "\n",
                                                  encoding="utf-8")
        for stage in plan.stages:
            run = staging.stage(stage.name)
            run.logs_dir.mkdir(parents=True)
            write_text_atomic(run.resolved, stage.job.to_json())
            install_into(run.runtime_dir)
            if stage.per_task:
                write_text_atomic(staging.task_shim(stage.name), _NODE_TASK.read_text(encoding="utf-8"))
        write_manifest(staging, plan.initial_manifest())
    return plan.paths


@dataclass(frozen=True)
class Submitted:
    paths: CampaignPaths
    manifest: Manifest
    job_ids: tuple[str, ...]
    quota: tuple[QuotaVerdict, ...] = ()  # the GPU stages' quota verdicts, to be shown


def check_campaign_quota(plan: CampaignPlan, backend: Backend,
                         policy: QuotaPolicy = CHECK_QUOTA) -> tuple[QuotaVerdict, ...]:
    """The quota preflight of every GPU stage: an array with as many tasks at once as its throttle lets
    run (all of them when it has none), the single job as itself. Raises QuotaRefused as launch does."""
    verdicts = []
    for stage in plan.stages:
        if stage.job.total_gpus == 0:
            continue
        tasks = len(plan.tasks)
        concurrent = min(stage.throttle.limit or tasks, tasks) if stage.per_task else 1
        verdict = backend.check_array_quota(stage.job, concurrent, policy)
        if verdict is not None:
            verdicts.append(verdict)
    return tuple(verdicts)


def _record(
    paths: CampaignPaths, manifest: Manifest, job: ResolvedJob, stage: str, offset: int, task_ids: Sequence[int],
    throttle: int | None, after: Dependencies, backend: Backend, purpose: Literal["run", "resubmit"],
) -> SubmissionRecord:
    """Render, write and submit one array (or the single job); record it and its attempts in the manifest."""
    record = manifest.stage(stage)
    number = 1 + sum(1 for s in manifest.submissions if s.stage == stage)
    script_path = paths.submission_script(stage, number)
    write_text_atomic(script_path, render_script(with_offset(job, offset) if record.per_task else job), mode=0o755)
    array = ArrayRequest(tuple(t - offset for t in task_ids), throttle) if record.per_task else None
    job_id = backend.submit(script_path, SubmitOptions(array=array, after=after))
    submission = SubmissionRecord(job_id=job_id, stage=stage, offset=offset, task_ids=list(task_ids),
                                  throttle=throttle if record.per_task else None,
                                  after=[(kind, list(ids)) for kind, ids in after], script=str(script_path),
                                  submitted_at=now_iso(), purpose=purpose)
    manifest.submissions.append(submission)
    if record.per_task:
        by_id = {t.id: t for t in manifest.tasks}
        for task_id in task_ids:
            by_id[task_id].stages[stage].attempts.append(
                Attempt(job_id=f"{job_id}_{task_id - offset}", submission=job_id))
    elif record.job is not None:
        record.job.attempts.append(Attempt(job_id=job_id, submission=job_id))
    manifest.poll.last_at = None  # something new: the next status call asks
    write_manifest(paths, manifest)
    return submission


def submit_campaign(plan: CampaignPlan, backend: Backend, quota: QuotaPolicy = CHECK_QUOTA) -> Submitted:
    """Check the GPU quota, write the campaign directory and submit every planned array and job, in
    dependency order.

    A stage the quota can never run is refused before anything is written. If a submission fails,
    the ones already made are cancelled and the manifest records the error; if none was made, the
    directory is removed again.
    """
    verdicts = check_campaign_quota(plan, backend, quota)
    paths = write_campaign_dir(plan, backend.staged)
    manifest = read_manifest(paths)
    made: dict[tuple[str, int], str] = {}  # (stage, offset) → job id
    submitted: list[str] = []
    try:
        with locked(paths):
            for planned in plan.submissions:
                after = _resolve_refs(planned, made)
                stage = plan.stage(planned.stage)
                sub = _record(paths, manifest, stage.job, planned.stage, planned.offset, planned.task_ids,
                              planned.throttle, after, backend, "run")
                made[(planned.stage, planned.offset)] = sub.job_id
                submitted.append(sub.job_id)
    except BaseException as err:
        if not submitted:
            shutil.rmtree(paths.root, ignore_errors=True)
            raise
        try:
            backend.cancel(submitted)
            note = f"cancelled the {len(submitted)} job(s) already submitted"
        except HpcTfError as cancel_err:
            note = f"could not cancel the jobs already submitted ({cancel_err.message}): hpc-tf campaign cancel"
        manifest.error = f"submission stopped: {err}; {note}"
        write_manifest(paths, manifest)
        raise
    return Submitted(paths=paths, manifest=manifest, job_ids=tuple(submitted), quota=verdicts)


def _resolve_refs(planned: PlannedSubmission, made: Mapping[tuple[str, int], str]) -> Dependencies:
    grouped: dict[DependencyType, list[str]] = {}
    for ref in planned.after:
        ids = [job for (stage, offset), job in made.items()
               if stage == ref.stage and (ref.offset is None or offset == ref.offset)]
        grouped.setdefault(ref.kind, []).extend(ids)
    return tuple((kind, tuple(dict.fromkeys(ids))) for kind, ids in grouped.items() if ids)


# ------------------------------------------------------------------------------------------ resubmit


@dataclass(frozen=True)
class Resubmitted:
    manifest: Manifest
    rerun: Mapping[str, tuple[int | None, ...]]  # stage → task ids (None: the single job)
    cancelled: tuple[str, ...]  # blocked attempts cancelled before being replaced
    job_ids: tuple[str, ...]


def select_rerun(manifest: Manifest, *, include_cancelled: bool = False) -> dict[str, list[UnitRef]]:
    """Failed units, plus blocked units whose every dependency will be met once the failed ones rerun."""
    blocked = blocked_units(manifest)
    chosen: set[tuple[str, int | None]] = set()

    def will_be_met(kind: str, up: UnitRef) -> bool:
        current = up.unit.current
        if (up.stage, up.task_id) in chosen:
            return True  # rerun now, so waited for
        if current is None or (up.stage, up.task_id) in blocked:
            return False
        state = current.job_state
        return state.is_success or state.is_active or (kind == "afterany" and state.is_terminal)

    rerun: dict[str, list[UnitRef]] = {}
    for stage in manifest.stages:  # dependency order: upstream choices are known
        picked = []
        for ref in manifest.units(stage.name):
            if is_failed(ref.unit.current, include_cancelled=include_cancelled) or (
                (ref.stage, ref.task_id) in blocked
                and all(will_be_met(kind, up) for kind, up in upstream_units(manifest, ref))
            ):
                picked.append(ref)
        chosen |= {(r.stage, r.task_id) for r in picked}
        if picked:
            rerun[stage.name] = picked
    return rerun


def _dependencies_for(manifest: Manifest, stage: str, refs: Sequence[UnitRef]) -> dict[Dependencies, list[int]]:
    """Group the task ids to rerun in ``stage`` by what they must wait for, as concrete job ids.

    Only attempts that have not finished are waited for (a finished job may already be gone from
    the controller, and a completed one needs no waiting). aftercorr waits for the array that holds
    the same task's current attempt; afterok/afterany wait for the upstream's unfinished attempts:
    a whole array when every task in it is current, else the tasks one by one (``12_3``), because
    the array also holds replaced attempts that failed.
    """
    groups: dict[Dependencies, list[int]] = {}
    whole = _arrays_fully_current(manifest)
    for ref in refs:
        deps: dict[DependencyType, list[str]] = {}
        for up, kind in manifest.stage(stage).after:
            dep_kind: DependencyType = "aftercorr" if kind == "aftercorr" else ("afterany" if kind == "afterany"
                                                                                 else "afterok")
            units = manifest.units(up)
            if kind == "aftercorr":
                units = [u for u in units if u.task_id == ref.task_id]
            for unit in units:
                current = unit.unit.current
                if current is None or current.job_state.is_terminal:
                    continue
                if kind == "aftercorr" or current.submission in whole:
                    deps.setdefault(dep_kind, []).append(current.submission)
                else:
                    deps.setdefault(dep_kind, []).append(current.job_id)
        key = tuple((kind, tuple(dict.fromkeys(ids))) for kind, ids in sorted(deps.items()))
        groups.setdefault(key, []).append(-1 if ref.task_id is None else ref.task_id)
    return groups


def _arrays_fully_current(manifest: Manifest) -> set[str]:
    """Submissions whose every unit still has its current attempt there (none was replaced)."""
    replaced: set[str] = set()
    for ref in manifest.all_units():
        for attempt in ref.unit.attempts[:-1]:
            replaced.add(attempt.submission)
    return {s.job_id for s in manifest.submissions} - replaced


def resubmit_failed(
    paths: CampaignPaths, backend: Backend, *, include_cancelled: bool = False
) -> Resubmitted:
    """Rerun failed tasks as new arrays of exactly those ids; replace tasks blocked behind them.

    Blocked attempts are cancelled first (Slurm would keep them pending forever), then stages are
    resubmitted in order, each waiting for what it reruns upstream. A rerun array keeps its stage's
    throttle but is not chained behind the stage's other arrays (they may be waiting for it).
    """
    with locked(paths):
        manifest = read_manifest(paths)
        poll(manifest, backend.scheduler, force=True)
        rerun = select_rerun(manifest, include_cancelled=include_cancelled)
        if not rerun:
            write_manifest(paths, manifest)
            return Resubmitted(manifest, {}, (), ())
        blocked = blocked_units(manifest)
        to_cancel = [r.unit.current.job_id for refs in rerun.values() for r in refs
                     if (r.stage, r.task_id) in blocked and r.unit.current is not None]
        if to_cancel:
            backend.cancel(to_cancel)
            for refs in rerun.values():
                for ref in refs:
                    current = ref.unit.current
                    if current is not None and current.job_id in to_cancel:
                        current.state = JobState.CANCELLED.value
                        current.reason = None
        job_ids: list[str] = []
        for stage_name, refs in rerun.items():
            record = manifest.stage(stage_name)
            job = load_resolved(paths.stage(stage_name).resolved)
            for after, ids in _dependencies_for(manifest, stage_name, refs).items():
                if not record.per_task:
                    sub = _record(paths, manifest, job, stage_name, 0, [], None, after, backend, "resubmit")
                    job_ids.append(sub.job_id)
                    continue
                for offset, chunk in chunks(ids, manifest.chunk_size):
                    sub = _record(paths, manifest, job, stage_name, offset, chunk, record.throttle, after,
                                  backend, "resubmit")
                    job_ids.append(sub.job_id)
        write_manifest(paths, manifest)
        return Resubmitted(manifest, {s: tuple(r.task_id for r in refs) for s, refs in rerun.items()},
                           tuple(to_cancel), tuple(job_ids))


# -------------------------------------------------------------------------------------------- cancel


def cancel_campaign(paths: CampaignPaths, backend: Backend, *, blocked_only: bool = False) -> list[str]:
    """Cancel every job of the campaign (one scancel), or only the blocked tasks; returns the ids."""
    with locked(paths):
        manifest = read_manifest(paths)
        if blocked_only:
            poll(manifest, backend.scheduler, force=True)
            keys = blocked_units(manifest)
            ids = [r.unit.current.job_id for r in manifest.all_units()
                   if (r.stage, r.task_id) in keys and r.unit.current is not None]
        else:
            ids = _unfinished_submissions(manifest)
        if ids:
            backend.cancel(ids)
        manifest.poll.last_at = None
        write_manifest(paths, manifest)
        return ids


def _unfinished_submissions(manifest: Manifest) -> list[str]:
    ids: dict[str, None] = {}
    for ref in manifest.all_units():
        for attempt in ref.unit.attempts:
            if not attempt.job_state.is_terminal:
                ids.setdefault(attempt.submission, None)
    return list(ids)
