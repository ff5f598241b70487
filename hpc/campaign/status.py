"""A campaign's state from ONE batched scheduler query, however many tasks it has.

Only submissions with a unit not yet finished are asked about (finished units are cached in the
manifest and never asked about again), all in one :meth:`Scheduler.query` call: one ``sacct``
and at most one ``squeue`` for a 1,000-task campaign. Repeated calls back off: within
``poll.interval_s`` of the last query the manifest answers; the interval grows while nothing
changes (:class:`hpc.scheduler.PollBackoff`) and falls back when something does.

A unit is *blocked* when it waits for a dependency that can no longer be satisfied: Slurm says
``DependencyNeverSatisfied`` (and leaves it pending forever), or what it waits for is itself
blocked, or failed under ``afterok``/``aftercorr``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hpc.campaign.manifest import Attempt, Manifest, UnitRef
from hpc.paths import RunPaths
from hpc.render.quoting import sh
from hpc.scheduler import JobState, JobStatus, PollBackoff, ReasonCategory, Scheduler, parse_reason
from hpc.scheduler.fields import parse_array_tasks, parse_job_id

BLOCKED = "BLOCKED"  # a label in the view, not a Slurm state
DEFAULT_BACKOFF = PollBackoff(first_s=2.0, factor=1.5, max_s=60.0)


def is_failed(attempt: Attempt | None, *, include_cancelled: bool = False) -> bool:
    """Ended without success (FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL …); CANCELLED only if asked."""
    if attempt is None:
        return False
    state = attempt.job_state
    if not state.is_terminal or state.is_success:
        return False
    return include_cancelled or state is not JobState.CANCELLED


def is_open(attempt: Attempt | None) -> bool:
    """Not known to be finished: worth asking the scheduler about."""
    return attempt is not None and not attempt.job_state.is_terminal


def open_submissions(manifest: Manifest) -> list[str]:
    """Job ids (arrays or single jobs) holding a unit whose current attempt has not finished."""
    ids: dict[str, None] = {}
    for ref in manifest.all_units():
        current = ref.unit.current
        if is_open(current) and current is not None:
            ids.setdefault(current.submission, None)
    return list(ids)


def _index(statuses: Mapping[str, JobStatus]) -> dict[str, JobStatus]:
    """Statuses by the display id of single tasks: pending ranges ``12_[4-9%2]`` become 12_4 … 12_9."""
    out: dict[str, JobStatus] = {}
    for key, status in statuses.items():
        if status.source == "summary":
            continue
        job_id = parse_job_id(key)
        if job_id.is_task_range and job_id.array_task is not None:
            for index in parse_array_tasks(job_id.array_task).ids:
                out.setdefault(f"{job_id.base}_{index}", status)
        else:
            out[key] = status
    return out


def _apply(attempt: Attempt, status: JobStatus) -> bool:
    """Copy what the scheduler said into the attempt; True if its state changed."""
    state = status.state.value
    changed = state != attempt.state
    attempt.state = state
    attempt.reason = status.reason.code if status.reason is not None and status.state.is_waiting else None
    attempt.exit_code = status.exit_code.shell_code if status.exit_code is not None else None
    if status.raw_id and not parse_job_id(status.job_id).is_task_range:
        attempt.raw_id = status.raw_id
    attempt.node_list = status.node_list or attempt.node_list
    return changed


def refresh(manifest: Manifest, scheduler: Scheduler) -> bool:
    """Ask the scheduler once about every open submission; update the manifest. True if anything changed."""
    ids = open_submissions(manifest)
    if not ids:
        return False
    found = _index(scheduler.query(ids))
    changed = False
    for ref in manifest.all_units():
        current = ref.unit.current
        if current is None or not is_open(current):
            continue
        status = found.get(current.job_id)
        if status is None and current.array_index is None:
            status = found.get(current.submission)
        if status is None or status.state is JobState.UNKNOWN:
            continue  # not in accounting yet (sacct lags): keep what we knew
        changed |= _apply(current, status)
    return changed


def never_satisfied(reason_code: str | None) -> bool:
    """Slurm says a dependency failed: the job stays pending until someone cancels it."""
    reason = parse_reason(reason_code) if reason_code else None
    return reason is not None and reason.category is ReasonCategory.DEPENDENCY and reason.stuck


def due(manifest: Manifest, now: float) -> bool:
    last = manifest.poll.last_at
    return last is None or now - last >= manifest.poll.interval_s


def poll(
    manifest: Manifest, scheduler: Scheduler, *, force: bool = False, backoff: PollBackoff = DEFAULT_BACKOFF,
    clock: Callable[[], float] = time.time,
) -> bool:
    """Refresh if due (or forced); returns whether the scheduler was asked."""
    now = clock()
    if not force and not due(manifest, now):
        return False
    changed = refresh(manifest, scheduler)
    current = manifest.poll.interval_s or backoff.first_s
    manifest.poll.interval_s = backoff.first_s if changed else backoff.next_s(current, changed)
    manifest.poll.last_at = now
    return True


# ---------------------------------------------------------------------------------------------- view


def upstream_units(manifest: Manifest, ref: UnitRef) -> list[tuple[str, UnitRef]]:
    """(dependency type, unit) for everything ``ref`` waits for."""
    out: list[tuple[str, UnitRef]] = []
    for up, kind in manifest.stage(ref.stage).after:
        units = manifest.units(up)
        if kind == "aftercorr":
            units = [u for u in units if u.task_id == ref.task_id]
        out += [(kind, u) for u in units]
    return out


def blocked_units(manifest: Manifest) -> set[tuple[str, int | None]]:
    """Units waiting for something that will never come (see the module docstring)."""
    blocked: set[tuple[str, int | None]] = set()
    for stage in manifest.stages:  # stage order is dependency order
        for ref in manifest.units(stage.name):
            current = ref.unit.current
            if current is None or not current.job_state.is_waiting:
                continue
            if never_satisfied(current.reason):
                blocked.add((ref.stage, ref.task_id))
                continue
            for kind, up in upstream_units(manifest, ref):
                up_current = up.unit.current
                if (up.stage, up.task_id) in blocked or (kind != "afterany" and is_failed(up_current,
                                                                                           include_cancelled=True)):
                    blocked.add((ref.stage, ref.task_id))
                    break
    return blocked


@dataclass(frozen=True)
class UnitView:
    stage: str
    task_id: int | None
    params: Mapping[str, object]
    job_id: str | None
    state: str  # a JobState value, or BLOCKED
    reason: str | None  # Slurm's code
    explanation: str  # in words
    exit_code: int | None
    attempts: int
    output_dir: str
    log: str | None  # the batch log; the tasks' own logs are beside it (task-<raw id>-<rank>.out)
    metrics_file: str  # what its training logs (hpc.metrics), where the runtime writes it

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class CampaignView:
    id: str
    root: str
    name: str
    tasks: int
    counts: Mapping[str, Mapping[str, int]]  # stage → state label → units
    failures: Sequence[UnitView]
    blocked: Sequence[UnitView]
    clear_blocked: Sequence[str]  # commands that clear the blocked units
    finished: bool
    queried: bool  # False: answered from the manifest (backoff)
    age_s: float | None  # how old the states are
    next_query_s: float  # a status call before this many seconds from now answers from the manifest
    error: str | None = None
    stages: Sequence[Mapping[str, object]] = field(default_factory=list)
    running: Sequence[UnitView] = ()  # units running now, for where their training is (hpc.metrics.progress)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id, "root": self.root, "name": self.name, "tasks": self.tasks,
            "counts": {k: dict(v) for k, v in self.counts.items()},
            "failures": [f.as_dict() for f in self.failures], "blocked": [b.as_dict() for b in self.blocked],
            "clear_blocked": list(self.clear_blocked), "finished": self.finished, "queried": self.queried,
            "age_s": self.age_s, "next_query_s": self.next_query_s, "error": self.error, "stages": list(self.stages),
            "running": [r.as_dict() for r in self.running],
        }


def _explain(attempt: Attempt | None, blocked: bool) -> str:
    if attempt is None:
        return "not submitted"
    if blocked and not never_satisfied(attempt.reason):
        return "waits for a task that failed or is blocked; it will never start"
    if attempt.reason:
        reason = parse_reason(attempt.reason)
        if reason is not None:
            return reason.explanation
    if attempt.job_state is JobState.FAILED and attempt.exit_code is not None:
        return f"exit code {attempt.exit_code}"
    return attempt.job_state.ending  # cancelled, timed out …: Slurm's exit code of those is not the task's


def unit_view(manifest: Manifest, ref: UnitRef, blocked: bool) -> UnitView:
    current = ref.unit.current
    params = manifest.tasks[ref.task_id].params if ref.task_id is not None else {}
    run = RunPaths.at(manifest.stage(ref.stage).run_dir)
    log = str(run.batch_log(current.raw_id)) if current is not None and current.raw_id else None
    # an array task's own file (the stage's run directory is shared, plan.py); a single job's in its run directory
    metrics = run.metrics if ref.task_id is None else RunPaths.at(ref.unit.output_dir).metrics
    return UnitView(
        stage=ref.stage, task_id=ref.task_id, params=params, job_id=current.job_id if current else None,
        state=BLOCKED if blocked else (current.state if current else "NOT_SUBMITTED"),
        reason=current.reason if current else None, explanation=_explain(current, blocked),
        exit_code=current.exit_code if current and current.job_state.exit_is_its_own else None,
        attempts=len(ref.unit.attempts),
        output_dir=ref.unit.output_dir, log=log, metrics_file=str(metrics),
    )


def view(manifest: Manifest, *, queried: bool, now: float | None = None) -> CampaignView:
    now = time.time() if now is None else now
    blocked = blocked_units(manifest)
    counts: dict[str, dict[str, int]] = {}
    failures: list[UnitView] = []
    stuck: list[UnitView] = []
    running: list[UnitView] = []
    finished = True
    for stage in manifest.stages:
        tally = counts.setdefault(stage.name, {})
        for ref in manifest.units(stage.name):
            is_blocked = (ref.stage, ref.task_id) in blocked
            current = ref.unit.current
            label = BLOCKED if is_blocked else (current.state if current else "NOT_SUBMITTED")
            tally[label] = tally.get(label, 0) + 1
            finished &= current is not None and current.job_state.is_terminal
            if is_blocked:
                stuck.append(unit_view(manifest, ref, True))
            elif is_failed(current):  # cancelled ones are only counted: someone meant it
                failures.append(unit_view(manifest, ref, False))
            elif current is not None and current.job_state is JobState.RUNNING:
                running.append(unit_view(manifest, ref, False))
    last = manifest.poll.last_at
    root = sh(manifest.root)
    clear = [f"hpc-tf campaign resubmit {root} --failed", f"hpc-tf campaign cancel {root} --blocked"] if stuck else []
    return CampaignView(
        id=manifest.id, root=manifest.root, name=manifest.name, tasks=len(manifest.tasks),
        counts=counts, failures=failures, blocked=stuck, clear_blocked=clear, finished=finished, queried=queried,
        age_s=None if last is None else max(0.0, now - last),
        next_query_s=0.0 if last is None else max(0.0, last + manifest.poll.interval_s - now),
        error=manifest.error,
        stages=[{"name": s.name, "per_task": s.per_task, "partition": s.partition, "nodes": s.nodes, "gpus": s.gpus,
                 "throttle": s.throttle, "after": [list(a) for a in s.after],
                 "jobs": [sub.job_id for sub in manifest.submissions if sub.stage == s.name]}
                for s in manifest.stages],
        running=running,
    )
