"""(campaign, site, cluster facts) → CampaignPlan: every task, stage job, throttle and array chunk, purely.

Nothing here runs a command or writes a file; :mod:`hpc.campaign.submit` does, from the plan.

An array stage is a normal job (rendered by the job template) whose command is wrapped::

    bootstrap.py … -- python3 <stage>/runtime/campaign_task.py --tasks <campaign>/tasks --stage NAME -- CMD…

and the wrapper appends the task's arguments from ``tasks/<id>/task.json``. The arguments are
computed here and travel as JSON into ``execve``: they are never quoted for a shell. The only
per-submission difference in the script is ``HPC_TF_TASK_OFFSET`` (the id of array index 0).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpc.campaign.expand import Task, default_args, expand, format_value, render_literal, render_template
from hpc.campaign.load import LoadedCampaign
from hpc.campaign.manifest import Manifest, StageRecord, TaskRecord, Unit, now_iso
from hpc.campaign.model import DependencyType, Stage
from hpc.campaign.paths import CampaignPaths
from hpc.campaign.throttle import StageDemand, Throttle, compute_throttles
from hpc.errors import HpcTfError
from hpc.paths import runs_root
from hpc.render.script import render_script
from hpc.resolve import ResolvedJob, resolve
from hpc.runtime.node.hook_config import CHECKPOINT_DIR_VARIABLE, METRICS_FILE_VARIABLE
from hpc.site.load import LoadedSite
from hpc.text import run_time_literal

# Slurm's default MaxArraySize: used when the cluster was not asked (a dry run)
SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001
OFFSET_VARIABLE = "HPC_TF_TASK_OFFSET"


@dataclass(frozen=True)
class StagePlan:
    name: str
    per_task: bool
    job: ResolvedJob  # command already wrapped for array stages; no task offset yet
    command: tuple[str, ...]  # the user's command, before wrapping
    after: tuple[tuple[str, DependencyType], ...]
    throttle: Throttle
    args: tuple[str, ...] | None  # argument templates; None: --name value per parameter
    env: Mapping[str, str]  # environment templates
    # array tasks share the stage's run directory: checkpoints go under each task's output directory
    # unless the spec names a checkpoint directory itself
    task_checkpoints: bool = False

    def job_at(self, offset: int) -> ResolvedJob:
        """The job as submitted for an array chunk whose index 0 is task ``offset``."""
        if not self.per_task:
            return self.job
        return with_offset(self.job, offset)


def with_offset(job: ResolvedJob, offset: int) -> ResolvedJob:
    env = tuple(kv for kv in job.env if kv[0] != OFFSET_VARIABLE)
    return job.model_copy(update={"env": (*env, (OFFSET_VARIABLE, str(offset)))})


@dataclass(frozen=True)
class StageRef:
    """A dependency on the submissions of another stage: one chunk (aftercorr) or all (offset None)."""

    kind: DependencyType
    stage: str
    offset: int | None


@dataclass(frozen=True)
class PlannedSubmission:
    stage: str
    offset: int
    task_ids: tuple[int, ...]  # () for a single-job stage
    throttle: int | None
    after: tuple[StageRef, ...]


@dataclass(frozen=True)
class CampaignPlan:
    id: str
    paths: CampaignPaths
    loaded: LoadedCampaign
    site: LoadedSite
    tasks: tuple[Task, ...]
    stages: tuple[StagePlan, ...]
    chunk_size: int
    max_array_size: int | None
    submissions: tuple[PlannedSubmission, ...]

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.name == name)

    def task_document(self, task: Task) -> dict[str, object]:
        """What ``tasks/<id>/task.json`` holds: per array stage, final arguments and environment."""
        stages = {}
        for stage in self.stages:
            if stage.per_task:
                args, env = task_invocation(self.paths, stage, task)
                stages[stage.name] = {"args": args, "env": env,
                                      "output_dir": str(self.paths.task_output(task.id, stage.name))}
        return {"id": task.id, "key": task.key, "params": dict(task.params), "stages": stages}

    def task_command(self, stage: str, task: Task) -> list[str]:
        """What task ``task`` runs in array stage ``stage``: the command and its arguments."""
        plan = self.stage(stage)
        return [*plan.command, *task_invocation(self.paths, plan, task)[0]]

    def script(self, stage: str, offset: int) -> str:
        return render_script(self.stage(stage).job_at(offset))

    def initial_manifest(self) -> Manifest:
        stages = []
        for stage in self.stages:
            stages.append(StageRecord(
                name=stage.name, per_task=stage.per_task, partition=stage.job.partition, nodes=stage.job.nodes,
                gpus=stage.job.total_gpus, throttle=stage.throttle.limit, after=list(stage.after),
                run_dir=stage.job.run_dir,
                job=None if stage.per_task else Unit(output_dir=stage.job.output_dir),
            ))
        tasks = [
            TaskRecord(id=t.id, key=t.key, params=dict(t.params), dir=str(self.paths.task_dir(t.id)),
                       stages={s.name: Unit(output_dir=str(self.paths.task_output(t.id, s.name)))
                               for s in self.stages if s.per_task})
            for t in self.tasks
        ]
        return Manifest(id=self.id, name=self.loaded.spec.name, root=str(self.paths.root),
                        source=str(self.loaded.path), site=self.site.config.name,
                        launcher=self.site.config.launcher, created_at=now_iso(),
                        max_array_size=self.max_array_size, chunk_size=self.chunk_size, stages=stages, tasks=tasks)


def task_fields(paths: CampaignPaths, stage: str, task: Task) -> dict[str, str]:
    return {
        **{name: format_value(value) for name, value in task.params.items()},
        "task_id": str(task.id),
        "task_dir": str(paths.task_dir(task.id)),
        "output_dir": str(paths.task_output(task.id, stage)),
        "campaign_dir": str(paths.root),
    }


def task_invocation(paths: CampaignPaths, stage: StagePlan, task: Task) -> tuple[list[str], dict[str, str]]:
    """The arguments appended to the command of ``task`` in ``stage``, and the variables it gets."""
    fields = task_fields(paths, stage.name, task)
    args = default_args(task.params) if stage.args is None else [render_literal(t, fields) for t in stage.args]
    env = {
        "HPC_TF_CAMPAIGN_DIR": fields["campaign_dir"],
        "HPC_TF_TASK_ID": fields["task_id"],
        "HPC_TF_TASK_DIR": fields["task_dir"],
        "HPC_TF_OUTPUT_DIR": fields["output_dir"],
        # the stage's run directory is shared by every task: each task's metrics go to its own file
        METRICS_FILE_VARIABLE: str(paths.task_metrics(task.id, stage.name)),
        **({CHECKPOINT_DIR_VARIABLE: str(paths.task_output(task.id, stage.name) / "checkpoints")}
           if stage.task_checkpoints else {}),
        "HPC_TF_PARAMS": json.dumps(dict(task.params), sort_keys=True),
        **{f"HPC_TF_PARAM_{name.upper()}": format_value(value) for name, value in task.params.items()},
        **{key: render_literal(t, fields) for key, t in stage.env.items()},
    }
    return args, env


def chunk_size_for(max_array_size: int | None, requested: int | None) -> int:
    """Tasks per array: the cluster's MaxArraySize (indices 0..MaxArraySize-1), or less if asked."""
    limit = SLURM_DEFAULT_MAX_ARRAY_SIZE if max_array_size is None else max_array_size
    if limit < 1:
        raise HpcTfError("this cluster does not allow job arrays (MaxArraySize = 0)",
                         hint="ask the administrators, or run the tasks as separate jobs")
    if requested is None:
        return limit
    if not 1 <= requested <= limit:
        raise HpcTfError(f"chunk size {requested} must be between 1 and the cluster's MaxArraySize ({limit})")
    return requested


def chunks(task_ids: Sequence[int], size: int) -> list[tuple[int, tuple[int, ...]]]:
    """Task ids grouped by array: (offset, ids) with ``offset = (id // size) * size``, so an id has the
    same array index (id - offset) in every stage and resubmission: what aftercorr pairs tasks by."""
    groups: dict[int, list[int]] = {}
    for task_id in sorted(task_ids):
        groups.setdefault(task_id // size * size, []).append(task_id)
    return [(offset, tuple(ids)) for offset, ids in sorted(groups.items())]


def _stage_job(
    loaded: LoadedCampaign, stage: Stage, site: LoadedSite, campaign_id: str, paths: CampaignPaths,
    environ: Mapping[str, str],
) -> ResolvedJob:
    spec = loaded.stages[stage.name]
    job = resolve(spec, site, f"{campaign_id}/stages/{stage.name}", environ)
    run_dir = paths.stage(stage.name).root
    # the job's paths, env and command are run-time text (hpc.resolve.ResolvedJob): the campaign's own
    # paths enter them as literals
    root, tasks_dir = run_time_literal(str(paths.root)), run_time_literal(str(paths.tasks_dir))
    if stage.per_task:
        output_dir = tasks_dir  # each task's wrapper points HPC_TF_OUTPUT_DIR at tasks/<id>/<stage>
    elif spec.spec.output_dir:
        output_dir = job.output_dir
    else:
        output_dir = run_time_literal(str(run_dir / "output"))
    runtime = job.runtime
    if not spec.spec.checkpoint.dir:
        runtime = runtime.model_copy(update={"checkpoint_dir": f"{output_dir}/checkpoints"})
    command = job.command
    if stage.per_task:
        command = (job.python, run_time_literal(str(paths.task_shim(stage.name))), "--tasks", tasks_dir,
                   "--stage", stage.name, "--", *job.command)
    container = job.container
    if container is not None:  # the tasks directory must be visible inside the image
        container = container.model_copy(update={"binds": (*container.binds, root)})
    env = [*job.env, ("HPC_TF_CAMPAIGN_DIR", root)]
    if not stage.per_task:  # one job: its env templates know only the campaign's and its own directory
        fields = {"campaign_dir": root, "output_dir": output_dir}
        env += [(key, render_template(t, fields)) for key, t in stage.env.items()]
    return job.model_copy(update={
        "run_dir": str(run_dir), "output_dir": output_dir, "runtime": runtime, "command": command,
        "container": container, "env": tuple(env),
    })


def plan_campaign(
    loaded: LoadedCampaign,
    site: LoadedSite,
    campaign_id: str,
    *,
    environ: Mapping[str, str],
    gpu_limit: int | None,
    max_array_size: int | None,
    chunk_size: int | None = None,
    throttle: int | None = None,
    quota_note: str = "GPU quota unknown",
) -> CampaignPlan:
    """Everything decided; ``gpu_limit`` and ``max_array_size`` are what the cluster said (None: unknown)."""
    spec = loaded.spec
    root = runs_root(site.config.runs_dir, environ) / campaign_id
    paths = CampaignPaths.at(root)
    jobs = {s.name: _stage_job(loaded, s, site, campaign_id, paths, environ) for s in spec.stage_list}
    demands = [StageDemand(s.name, s.per_task, jobs[s.name].total_gpus,
                           throttle if throttle is not None else (s.throttle or spec.throttle))
               for s in spec.stage_list]
    throttles = compute_throttles(demands, gpu_limit, quota_note)
    stages = tuple(
        StagePlan(
            name=s.name, per_task=s.per_task, job=jobs[s.name], command=loaded.stages[s.name].spec.command,
            after=tuple(spec.dependencies(s)),
            throttle=throttles[s.name],
            args=tuple(s.args) if s.args is not None else (tuple(spec.args) if spec.args is not None else None),
            env={**spec.env, **s.env},
            task_checkpoints=s.per_task and not loaded.stages[s.name].spec.checkpoint.dir,
        )
        for s in spec.stage_list
    )
    tasks = tuple(expand(spec.parameters))
    size = chunk_size_for(max_array_size, chunk_size)
    return CampaignPlan(id=campaign_id, paths=paths, loaded=loaded, site=site, tasks=tasks, stages=stages,
                        chunk_size=size, max_array_size=max_array_size,
                        submissions=tuple(initial_submissions(stages, [t.id for t in tasks], size)))


def initial_submissions(stages: Sequence[StagePlan], task_ids: Sequence[int], size: int) -> list[PlannedSubmission]:
    """One array per chunk per array stage, one job per single-job stage, in stage order.

    aftercorr pairs chunk k with the upstream's chunk k; afterok/afterany wait for every chunk.
    Chunks of a throttled stage run one after another (afterany on the previous chunk), so the
    stage never runs more than its throttle at once.
    """
    out: list[PlannedSubmission] = []
    for stage in stages:
        if not stage.per_task:
            refs = tuple(StageRef(kind, up, None) for up, kind in stage.after)
            out.append(PlannedSubmission(stage.name, 0, (), None, refs))
            continue
        previous: int | None = None
        for offset, ids in chunks(task_ids, size):
            refs = tuple(StageRef(kind, up, offset if kind == "aftercorr" else None) for up, kind in stage.after)
            if stage.throttle.limit is not None and previous is not None:
                refs += (StageRef("afterany", stage.name, previous),)
            out.append(PlannedSubmission(stage.name, offset, ids, stage.throttle.limit, refs))
            previous = offset
    return out
