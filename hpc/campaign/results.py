"""Which configuration is best: one row per task of a campaign, ranked by a metric its training logged.

Each task's metrics are its own ``tasks/<id>/<stage>/metrics.jsonl`` (hpc.metrics). Every task has a
row, whatever happened to it: completed tasks first, best first (only one of them is named best); then
failed, running and blocked tasks with what they logged so far; then tasks that logged nothing. The
metric defaults to ``val_loss`` when any task logged it, else ``loss``; the mode to what its name says
(:func:`hpc.metrics.default_mode`). GPU-hours per task come from the scheduler's accounting, one call for
every attempt of every task (:func:`task_gpu_seconds`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from hpc.campaign.manifest import Manifest, UnitRef
from hpc.campaign.paths import CampaignPaths
from hpc.campaign.status import BLOCKED, blocked_units
from hpc.errors import HpcTfError
from hpc.metrics.cells import number, of_total, wall
from hpc.metrics.read import Mode, RunMetrics, default_mode, read_metrics
from hpc.scheduler import JobState, Scheduler
from hpc.text import shown

DEFAULT_METRICS = ("val_loss", "loss")


@dataclass(frozen=True)
class TaskResult:
    task_id: int
    params: dict[str, object]
    state: str  # a JobState value, BLOCKED or NOT_SUBMITTED
    job_id: str | None
    final: float | None
    best: float | None
    best_epoch: int | None  # 0-based, as in the metrics file
    epochs: int
    epochs_planned: int | None
    wall_s: float | None
    metrics_file: str
    note: str = ""  # why there are no values, when there are none
    gpu_hours: float | None = None  # every attempt of the task in every per-task stage; None: not read

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class CampaignResults:
    id: str
    root: str
    stage: str
    metric: str
    mode: Mode
    tasks: Sequence[TaskResult]  # in the order of the module docstring
    usage_note: str = ""  # why the GPU-hours are missing, when they are

    @property
    def best(self) -> TaskResult | None:
        """The completed task with the best value, if any completed task logged the metric."""
        first = self.tasks[0] if self.tasks else None
        return first if first is not None and _group(first) == 0 else None

    def as_dict(self) -> dict[str, object]:
        best = self.best
        return {"id": self.id, "root": self.root, "stage": self.stage, "metric": self.metric, "mode": self.mode,
                "best": best.as_dict() if best is not None else None, "tasks": [t.as_dict() for t in self.tasks],
                "usage_note": self.usage_note}

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The ranked table as ``campaign results`` and the HTML report show it: the header, then one row of
        cells per task (its parameters as columns, the campaign's names)."""
        names = self.param_names
        header = ["task", *names, "state", f"final {self.metric}", f"best ({self.mode})", "at epoch", "epochs",
                  "time", "GPU-h", "note"]
        rows = [[str(t.task_id), *(str(t.params.get(n, "-")) for n in names), t.state, number(t.final),
                 number(t.best), of_total(t.best_epoch, None), of_total(t.epochs - 1, t.epochs_planned),
                 wall(t.wall_s), number(t.gpu_hours, 2), t.note] for t in self.tasks]
        return header, rows

    @property
    def param_names(self) -> list[str]:
        return list(dict.fromkeys(name for t in self.tasks for name in t.params))

    def to_csv(self) -> str:
        """One line per task: its parameters as columns (the campaign's names), then the results."""
        names = self.param_names
        results = ["state", f"final_{self.metric}", f"best_{self.metric}", "best_epoch", "epochs_done",
                   "epochs_planned", "wall_s", "job_id", "gpu_hours"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        # a parameter named like a result column keeps its value apart: param_state
        writer.writerow(["task", *(f"param_{n}" if n in results or n == "task" else n for n in names), *results])
        for t in self.tasks:
            writer.writerow([t.task_id, *(_cell(t.params.get(n)) for n in names), t.state, _cell(t.final),
                             _cell(t.best), _cell(t.best_epoch), t.epochs, _cell(t.epochs_planned),
                             _cell(None if t.wall_s is None else round(t.wall_s, 3)), t.job_id or "",
                             _cell(t.gpu_hours)])
        return buffer.getvalue()


def _cell(value: object) -> object:
    return "" if value is None else value


def metrics_stage(manifest: Manifest, paths: CampaignPaths, stage: str | None) -> str:
    """The per-task stage to read: the one asked for, else the last per-task stage any task logged in."""
    per_task = [s.name for s in manifest.stages if s.per_task]
    if stage is not None:
        if stage not in per_task:
            raise HpcTfError(f"campaign {manifest.id} has no per-task stage {shown(stage)}",
                             hint=f"its per-task stages: {', '.join(per_task) or 'none'}")
        return stage
    if not per_task:
        raise HpcTfError(f"campaign {manifest.id} has no per-task stage: it has no tasks to compare")
    logged = [name for name in per_task if any(paths.task_metrics(t.id, name).is_file() for t in manifest.tasks)]
    return (logged or per_task)[-1]


def _read(paths: CampaignPaths, task_id: int, stage: str) -> tuple[RunMetrics | None, str]:
    try:
        return read_metrics(paths.task_metrics(task_id, stage)), ""
    except FileNotFoundError:
        return None, "no metrics logged"
    except HpcTfError as err:  # one unreadable file must not hide the other tasks' results
        return None, err.reason


def task_gpu_seconds(manifest: Manifest, scheduler: Scheduler) -> dict[int, int]:
    """What each task held: allocated GPUs × elapsed of every attempt in every per-task stage (a failed
    try cost GPUs too), from ONE scheduler call for all of them (:meth:`Scheduler.usage`)."""
    owner = {attempt.job_id: ref.task_id for ref in manifest.all_units() if ref.task_id is not None
             for attempt in ref.unit.attempts}
    spent = dict.fromkeys((task.id for task in manifest.tasks), 0)
    for job in scheduler.usage(list(owner)) if owner else ():
        task_id = owner.get(job.job_id)
        if task_id is not None:
            spent[task_id] += job.gpu_seconds
    return spent


def results(
    manifest: Manifest, paths: CampaignPaths, *, metric: str | None = None, mode: Mode | None = None,
    stage: str | None = None, gpu_seconds: Mapping[int, int] | None = None, usage_note: str = "",
) -> CampaignResults:
    """Every task of ``stage`` (see :func:`metrics_stage`) with the final and best ``metric``, ranked;
    with GPU-hours when ``gpu_seconds`` (:func:`task_gpu_seconds`) are given."""
    stage = metrics_stage(manifest, paths, stage)
    refs = {ref.task_id: ref for ref in manifest.units(stage) if ref.task_id is not None}
    read = {task.id: _read(paths, task.id, stage) for task in manifest.tasks}
    if metric is None:
        logged = {name for found, _ in read.values() if found is not None for name in found.names}
        metric = next((m for m in DEFAULT_METRICS if m in logged), DEFAULT_METRICS[-1])
    mode = mode or default_mode(metric)
    blocked = blocked_units(manifest)
    rows = [_row(task.id, dict(task.params), refs.get(task.id), blocked, *read[task.id], metric, mode,
                 str(paths.task_metrics(task.id, stage)))
            for task in manifest.tasks]
    if gpu_seconds is not None:
        rows = [replace(r, gpu_hours=round(gpu_seconds.get(r.task_id, 0) / 3600, 4)) for r in rows]
    by_value = sorted(rows, key=lambda r: r.best or 0.0, reverse=mode == "max")  # stable: ties keep task order
    return CampaignResults(id=manifest.id, root=manifest.root, stage=stage, metric=metric, mode=mode,
                           tasks=sorted(by_value, key=_group), usage_note=usage_note)


def _group(task: TaskResult) -> int:
    """Finished tasks are ranked first: a failed or running task's value is not a configuration's result."""
    if task.best is None:
        return 2
    return 0 if task.state == JobState.COMPLETED.value else 1


def _row(
    task_id: int, params: dict[str, object], ref: UnitRef | None, blocked: set[tuple[str, int | None]],
    found: RunMetrics | None, why: str, metric: str, mode: Mode, metrics_file: str,
) -> TaskResult:
    current = ref.unit.current if ref is not None else None
    if ref is not None and (ref.stage, task_id) in blocked:
        state = BLOCKED
    else:
        state = current.state if current is not None else "NOT_SUBMITTED"
    best = found.best(metric, mode) if found is not None else None
    if found is not None and best is None:
        why = f"{metric} not logged" if metric not in found.names else f"{metric} was never finite"
    return TaskResult(
        task_id=task_id, params=params, state=state, job_id=current.job_id if current is not None else None,
        final=found.final(metric) if found is not None else None, best=best.value if best is not None else None,
        best_epoch=best.epoch if best is not None else None, epochs=found.epochs if found is not None else 0,
        epochs_planned=found.epochs_planned if found is not None else None,
        wall_s=found.wall_s if found is not None else None, metrics_file=metrics_file, note=why,
    )
