"""(JobSpec, SiteConfig) -> ResolvedJob: every decision about the job made once, purely.

After this step nothing looks at the spec or the site again: rendering, quota checks and
the node-side bootstrap all read the frozen ResolvedJob (saved as resolved.json).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from hpc.errors import FieldProblem, SpecError
from hpc.paths import expand_path, run_time_path, runs_root
from hpc.records import read_record
from hpc.site.load import LoadedSite
from hpc.site.model import Partition
from hpc.spec.container import ContainerRuntime, is_image_uri
from hpc.spec.load import LoadedSpec
from hpc.spec.model import GpuBinding, Strategy
from hpc.text import run_time_literal, run_time_parts, shown
from hpc.units import ALL_MEMORY, format_duration, parse_duration, parse_memory_mb

log = logging.getLogger(__name__)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ContainerPlan(Frozen):
    runtime: ContainerRuntime
    image: str  # a URI or Shifter image as written, else an absolute path
    binds: tuple[str, ...]
    overlays: tuple[str, ...] = ()
    gpu: Literal["nvidia", "amd", "none"]  # the host driver the tasks see inside

    @model_validator(mode="before")
    @classmethod
    def _written_before_gpu(cls, data: Any) -> Any:
        # resolved.json of a run launched by an hpc-tf that wrote `nv: bool` (a campaign resubmits from it)
        if isinstance(data, dict) and "nv" in data and "gpu" not in data:
            data = {**{k: v for k, v in data.items() if k != "nv"}, "gpu": "nvidia" if data["nv"] else "none"}
        return data


class RuntimePlan(Frozen):
    """What the node-side runtime reads (the ``runtime`` key of resolved.json): the fields of
    hpc/runtime/node/settings.py's RuntimeSettings, every one written (tests/unit/test_runtime_settings.py)."""

    strategy: Strategy
    gpus_per_task: int
    gpus_per_node: int
    port_range: tuple[int, int]
    coordination_timeout_s: int
    memory_growth: bool
    gpu_allocator: str | None
    keras_mwms_fix: bool
    checkpoint_dir: str
    checkpoint_every_steps: int | None
    checkpoint_keep: int
    preemption: bool
    max_restarts: int
    gpu_binding: GpuBinding
    metrics: bool
    metrics_every_steps: int | None
    metrics_tensorboard: bool = False  # absent from a resolved.json written before it existed


class HandoffPlan(Frozen):
    """The dependent CPU job that hands the trained SavedModel to the serving node (job.yaml ``handoff:``)."""

    model: str
    format: Literal["onnx", "savedmodel", "python", "python-onnx", "auto"]
    savedmodel: str  # the SavedModel directory, relative to output_dir
    repository: str  # the Triton model repository (site serving.model_repository, expanded)
    partition: str | None  # site serving.partition, else cpu_partition
    time_seconds: int
    mem: str | None
    cpus: int


# variables Slurm sets per job (the hand-off job has its own)
JOB_VARIABLES = ("SLURM_", "SLURMD_")
# a hand-off imports TensorFlow once (reference outputs) and talks gRPC: one core, and room for TF
HANDOFF_MEM = "2000M"
HANDOFF_CPUS = 1
HANDOFF_TIME_S = 30 * 60


class ResolvedJob(Frozen):
    """workdir, output_dir, command, env values, python, conda, venv, the container's image and binds
    and runtime.checkpoint_dir are run-time text (hpc.text.RunTimeText: ``${NAME}`` expanded on the
    node, ``$$`` a literal ``$``): rendered with hpc.render.quoting.sh_run_time, read in Python on the
    node with hpc.text.expand_run_time; the values hpc-tf adds are written with run_time_literal."""

    name: str
    spec_source: str
    site: str  # as --site takes it: the site's name, or its file's absolute path (LoadedSite.ref)
    launcher: Literal["slurm", "local"]
    scheduler: Literal["cli", "pyslurm", "auto"] = "cli"  # how Slurm is reached (site ``scheduler:``)
    run_dir: str
    partition: str | None
    account: str | None
    qos: str | None
    nodes: int
    tasks_per_node: int
    gpus_per_node: int  # on each node, for the whole job
    gpus_per_task: int | None  # set when the spec binds GPUs per task (--gpus-per-task)
    gpu_type: str | None
    gres_name: str
    cpus_per_task: int | None
    mem: str | None
    mem_per_gpu: str | None = None
    mem_per_cpu: str | None = None
    gres: tuple[str, ...] = ()  # extra gres, on the GPUs' --gres line
    time_seconds: int
    constraint: str | None
    exclusive: bool
    workdir: str
    output_dir: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    python: str
    module_init: str | None  # run-time text, as python, workdir, venv (``${NAME}``, hpc.text)
    module_purge: bool = False  # `module purge` before the site's and the job's modules
    module_use: tuple[str, ...] = ()  # `module use PATH` before they load
    modules: tuple[str, ...]
    conda: str | None
    venv: str | None
    container: ContainerPlan | None
    sbatch_extra: tuple[str, ...]
    srun_extra: tuple[str, ...] = ()  # options of the tasks' srun, canonical (--label)
    setup: tuple[tuple[Literal["job", "node"], str], ...] = ()  # (where, shell line), in order
    warning_seconds: int | None  # preemption warning before the time limit
    runtime: RuntimePlan
    handoff: HandoffPlan | None = None

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def time_limit(self) -> str:
        return format_duration(self.time_seconds)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def resolve(
    loaded: LoadedSpec,
    site: LoadedSite,
    run_id: str,
    environ: Mapping[str, str] | None = None,
) -> ResolvedJob:
    env = dict(os.environ if environ is None else environ)
    spec, cfg, doc = loaded.spec, site.config, loaded.document
    res = spec.resources
    problems: list[FieldProblem] = []

    partition_name = res.partition or cfg.default_partition
    partition = cfg.partitions.get(partition_name) if partition_name else None
    if partition_name and cfg.partitions and partition is None:
        problems.append(doc.problem(("resources", "partition"),
                                    f"site '{cfg.name}' has no partition '{partition_name}'; "
                                    f"choose one of: {', '.join(cfg.partitions)}"))
    if partition is not None:
        gpu_loc = ("resources", "gpus_per_task" if res.gpus_per_task is not None else "gpus_per_node")
        if res.gpus_on_each_node and not partition.has_gpus:
            gpu_parts = [n for n, p in cfg.partitions.items() if p.has_gpus]
            problems.append(doc.problem(gpu_loc, f"partition '{partition_name}' has no GPUs"
                                        + (f"; GPU partitions: {', '.join(gpu_parts)}" if gpu_parts else "")))
        elif res.gpus_on_each_node > partition.gpus_per_node:
            problems.append(doc.problem(gpu_loc, f"{res.gpus_on_each_node} GPUs per node "
                                        f"({res.tasks_per_node} tasks x {res.gpus_per_worker}) do not fit: "
                                        f"partition '{partition_name}' nodes have {partition.gpus_per_node}"))
        if res.gpu_type and partition.gpu_types and res.gpu_type not in partition.gpu_types:
            problems.append(doc.problem(("resources", "gpu_type"), f"partition '{partition_name}' has GPU types "
                                        f"{', '.join(partition.gpu_types)}, not '{res.gpu_type}'"))
        if partition.max_nodes is not None and res.nodes > partition.max_nodes:
            problems.append(doc.problem(("resources", "nodes"), f"partition '{partition_name}' allows at most "
                                        f"{partition.max_nodes} nodes per job"))
        if partition.max_time and res.time_seconds and res.time_seconds > parse_duration(partition.max_time):
            problems.append(doc.problem(("resources", "time"), f"{shown(res.time)} exceeds the time limit of partition "
                                        f"'{partition_name}' ({partition.max_time})"))
        cpus_per_node = (res.cpus_per_task or 1) * res.tasks_per_node  # every task takes at least one CPU
        if partition.cpus_per_node and cpus_per_node > partition.cpus_per_node:
            cpu_field = "cpus_per_task" if res.cpus_per_task else "tasks_per_node"
            problems.append(doc.problem(("resources", cpu_field), f"{res.tasks_per_node} tasks x "
                                        f"{res.cpus_per_task or 1} CPUs exceed the {partition.cpus_per_node} CPUs "
                                        f"of a '{partition_name}' node"))
        # each memory field times what it is per (a node, each GPU, each CPU of a node) must fit a node
        for key, count in (("mem", 1), ("mem_per_gpu", res.gpus_on_each_node), ("mem_per_cpu", cpus_per_node)):
            amount = getattr(res, key)
            if (partition.mem_per_node and amount and amount != ALL_MEMORY
                    and parse_memory_mb(amount) * count > parse_memory_mb(partition.mem_per_node)):
                times = f" x {count}" if key != "mem" else ""
                problems.append(doc.problem(("resources", key), f"{shown(amount)}{times} exceeds the memory of a "
                                            f"'{partition_name}' node ({partition.mem_per_node})"))
    time_seconds = res.time_seconds or parse_duration(cfg.default_time)
    if spec.preemption.enabled and time_seconds <= spec.preemption.warning_seconds:
        problems.append(doc.problem(("preemption", "warning_seconds"),
                                    "the warning must come before the time limit; lower it or raise resources.time"))
    base = loaded.base_dir
    handoff = _handoff_plan(loaded, site, base, env, problems)
    container = _container_plan(loaded, site, partition, base, env, problems)
    if problems:
        raise SpecError(problems)

    run_dir = str(runs_root(cfg.runs_dir, env) / run_id)
    output_dir = (run_time_path(spec.output_dir, base, env) if spec.output_dir
                  else run_time_literal(str(Path(run_dir) / "output")))
    checkpoint_dir = (run_time_path(spec.checkpoint.dir, base, env) if spec.checkpoint.dir
                      else f"{output_dir}/checkpoints")
    # --gpus-per-task makes Slurm bind each task to its own GPUs (device cgroup too); gpu_binding node
    # asks for the node's GPUs as one --gres instead, which every task of the node may open
    per_task = res.gpus_per_task is not None and res.gpus_per_task > 0 and res.gpu_binding != "node"

    return ResolvedJob(
        name=spec.name,
        spec_source=doc.source,
        site=site.ref,
        launcher=cfg.launcher,
        scheduler=cfg.scheduler,
        run_dir=run_dir,
        partition=partition_name,
        account=res.account or cfg.account,
        qos=res.qos or cfg.qos,
        nodes=res.nodes,
        tasks_per_node=res.tasks_per_node,
        gpus_per_node=res.gpus_on_each_node,
        gpus_per_task=res.gpus_per_task if per_task else None,
        gpu_type=res.gpu_type,
        gres_name=cfg.gres_name,
        cpus_per_task=res.cpus_per_task,
        mem=res.mem,
        mem_per_gpu=res.mem_per_gpu,
        mem_per_cpu=res.mem_per_cpu,
        gres=tuple(res.gres),
        time_seconds=time_seconds,
        constraint=res.constraint or cfg.constraint,
        exclusive=res.exclusive,
        workdir=run_time_path(spec.workdir, base, env) if spec.workdir else run_time_literal(str(base)),
        output_dir=output_dir,
        command=spec.command,
        env=tuple(spec.env.items()),  # in the order written: a value may use a variable set above it, as in a shell
        python=spec.environment.python or cfg.python,
        module_init=cfg.module_init,
        module_purge=spec.environment.module_purge,
        module_use=tuple(run_time_path(path, base, env) for path in spec.environment.module_use),
        modules=(*cfg.modules, *spec.environment.modules),
        conda=spec.environment.conda,
        venv=run_time_path(spec.environment.venv, base, env) if spec.environment.venv else None,
        container=container,
        sbatch_extra=(*cfg.sbatch_defaults, *spec.sbatch_extra),
        srun_extra=tuple(spec.srun_extra),
        setup=tuple((step.where, step.line) for step in spec.setup),
        warning_seconds=spec.preemption.warning_seconds if spec.preemption.enabled else None,
        runtime=RuntimePlan(
            strategy=spec.strategy,
            gpus_per_task=res.gpus_per_worker,
            gpus_per_node=res.gpus_on_each_node,
            port_range=spec.tf.port_range,
            coordination_timeout_s=spec.tf.coordination_timeout,
            memory_growth=spec.tf.memory_growth,
            gpu_allocator=spec.tf.gpu_allocator,
            keras_mwms_fix=spec.tf.keras_mwms_fix,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every_steps=spec.checkpoint.every_steps,
            checkpoint_keep=spec.checkpoint.keep,
            preemption=spec.preemption.enabled,
            max_restarts=spec.preemption.max_restarts,
            gpu_binding=res.gpu_binding,
            metrics=spec.metrics.enabled,
            metrics_every_steps=spec.metrics.every_steps,
            metrics_tensorboard=spec.metrics.tensorboard,
        ),
        handoff=handoff,
    )


def _container_plan(loaded: LoadedSpec, site: LoadedSite, partition: Partition | None, base: Path,
                    env: Mapping[str, str], problems: list[FieldProblem]) -> ContainerPlan | None:
    spec, cfg, doc = loaded.spec, site.config, loaded.document
    c = spec.environment.container
    if c is None:
        return None
    where = ("environment", "container")
    runtime = c.runtime or (cfg.container_runtime[0] if cfg.container_runtime else "apptainer")
    has = cfg.container_runtime or ["apptainer", "singularity"]  # Shifter only where the site declares it
    if runtime not in has:
        problems.append(doc.problem((*where, "runtime"), f"site '{cfg.name}' has no {runtime} (its "
                                    f"container_runtime: {', '.join(has)}); choose one of those"))
    if runtime == "shifter" and (cfg.launcher == "local" or cfg.scheduler != "cli"):
        # neither the local launcher nor pyslurm reads the plugin's #SBATCH --image; sbatch does
        problems.append(doc.problem((*where, "runtime"), "Shifter images start through sbatch's shifter plugin "
                                    "(#SBATCH --image): use a Slurm site with scheduler: cli, or apptainer"))
    if c.nv is not None:
        log.warning("%s", doc.problem((*where, "nv"), f"deprecated: write gpu: {c.gpu_setting}"))
    gpu = c.gpu_setting
    if gpu == "auto":  # the host's driver, for a job that has GPUs
        vendor = (partition.gpu_vendor if partition else None) or cfg.gpu_vendor
        gpu = vendor if spec.resources.gpus_on_each_node else "none"
    if runtime == "shifter" and gpu == "amd":
        problems.append(doc.problem((*where, "gpu"), "hpc-tf knows no Shifter module for AMD GPUs: use apptainer "
                                    "or singularity (--rocm), or gpu: none and srun_extra"))
    if runtime == "shifter" and "$" in c.image:
        problems.append(doc.problem((*where, "image"), "sbatch reads a Shifter image (#SBATCH --image) before the "
                                    "node expands anything: write the image's name without $"))
    # a URI is pulled on the node and a Shifter image is a name: only a local image file is a path
    kept = runtime == "shifter" or is_image_uri(c.image)
    return ContainerPlan(runtime=runtime, image=c.image if kept else run_time_path(c.image, base, env),
                         binds=(*cfg.container_binds, *c.binds),
                         overlays=tuple(run_time_path(o, base, env) for o in c.overlays), gpu=gpu)


def _handoff_plan(
    loaded: LoadedSpec, site: LoadedSite, base: Path, env: Mapping[str, str], problems: list[FieldProblem]
) -> HandoffPlan | None:
    spec, cfg, doc = loaded.spec, site.config, loaded.document
    if spec.handoff is None:
        return None
    if not cfg.serving.model_repository:
        problems.append(doc.problem(("handoff",), f"site '{cfg.name}' sets no serving.model_repository to hand "
                                    "the model to; set it in the site config or --set serving.model_repository=PATH"))
        return None
    partition = cfg.serving.partition or cfg.cpu_partition
    if partition and cfg.partitions and partition not in cfg.partitions:
        problems.append(doc.problem(("handoff",), f"site '{cfg.name}' has no partition '{partition}' "
                                    f"(serving.partition); choose one of: {', '.join(cfg.partitions)}"))
    # the hand-off job reads output_dir in its own job: a variable of the training job alone names another place
    job_only = [name for name, ref in run_time_parts(spec.output_dir or "") if ref and name.startswith(JOB_VARIABLES)]
    if job_only:
        problems.append(doc.problem(("output_dir",), f"${{{job_only[0]}}} is another value in the hand-off job, "
                                    "which reads output_dir too: use a variable both jobs share (e.g. ${SCRATCH})"))
    limit = cfg.partitions[partition].max_time if partition and partition in cfg.partitions else None
    time_seconds = min(HANDOFF_TIME_S, parse_duration(limit)) if limit else HANDOFF_TIME_S
    return HandoffPlan(
        model=spec.handoff.model,
        format=spec.handoff.format or cfg.serving.format,
        savedmodel=spec.handoff.savedmodel,
        repository=expand_path(cfg.serving.model_repository, "serving.model_repository", base, env),
        partition=partition,
        time_seconds=time_seconds,
        mem=HANDOFF_MEM,
        cpus=HANDOFF_CPUS,
    )


def load_resolved(path: Path) -> ResolvedJob:
    return read_record(path, "the resolved job", parse=ResolvedJob.model_validate,
                       fix="it is written at launch: launch the job again")


