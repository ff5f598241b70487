"""The job spec: what a researcher writes in job.yaml. It knows nothing of Slurm syntax.

Rules that need only the spec are checked here, at load time; rules that need the cluster
(does the partition have that many GPUs per node?) are checked in :mod:`hpc.resolve`.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, Strict, ValidationInfo, field_validator, model_validator

from hpc.modelbase import StrictModel
from hpc.runtime.node.settings import PORT_RANGE_RULE, RuntimeSettings, valid_port_range
from hpc.scheduler.managed import NO_VARIABLES, check_extra_flag, check_srun_flag
from hpc.serving.names import MODEL_NAME_RE, MODEL_NAME_RULE
from hpc.spec.container import Container
from hpc.spec.steps import SetupStep
from hpc.text import OneLine, RunTimeText, keys_matching, matching, no_variables, shown
from hpc.units import ALL_MEMORY, parse_duration, parse_memory_mb

# Names and tokens, each matched as a whole string (hpc.text.named): they reach scripts and #SBATCH
# lines unquoted or as file names. Free text is OneLine; paths, env values and command words the batch
# script expands on the node (``${NAME}``, hpc.text) are RunTimeText.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "a name has up to 64 letters, digits, '_', '.', '-' and starts with a letter or digit"
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
ENV_NAME_RULE = ("an environment variable name has up to 128 letters, digits and '_' and does not start with a "
                 "digit")
TOKEN_RE = re.compile(r"[A-Za-z0-9_.+-]{1,128}")
TOKEN_RULE = "a Slurm name (partition, account, qos, GPU type) has up to 128 letters, digits, '_', '.', '+', '-'"
MODULE_RE = re.compile(r"[A-Za-z0-9_.+/-]{1,255}")
MODULE_RULE = "a module name has up to 255 letters, digits, '_', '.', '+', '/', '-'"

Name = Annotated[str, matching(NAME_RE, NAME_RULE)]  # job, site
Token = Annotated[str, matching(TOKEN_RE, TOKEN_RULE)]  # partition, account, qos, GPU type, gres name


# `module` subcommands written as a module name: `module load purge` would fail on the node
MODULE_SUBCOMMANDS = {
    "purge": "set environment.module_purge: true",
    "use": "list the directory under environment.module_use",
    "load": "list the module's name alone",
}


def _module_name(value: object) -> object:
    word = value.split(" ")[0] if isinstance(value, str) else None
    if word in MODULE_SUBCOMMANDS:
        raise ValueError(f"{shown(value)} is 'module {word}', not a module to load: {MODULE_SUBCOMMANDS[word]}")
    return value


ModuleName = Annotated[str, BeforeValidator(_module_name), matching(MODULE_RE, MODULE_RULE)]
ModelName = Annotated[str, matching(MODEL_NAME_RE, MODEL_NAME_RULE)]
# Variables the bootstrap and Slurm own; a spec that sets them would silently break the job.
MANAGED_ENV = ("TF_CONFIG", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "ROCR_VISIBLE_DEVICES",
               "HIP_VISIBLE_DEVICES")
MANAGED_ENV_PREFIXES = ("SLURM_", "SBATCH_", "HPC_TF_")  # SRUN_: srun options (SRUN_ENV below)
# bash's read-only variables: `export UID=…` fails in the batch script and the job runs without it
BASH_READONLY_ENV = ("BASHOPTS", "BASH_VERSINFO", "EUID", "PPID", "SHELLOPTS", "UID")

# Beyond what any cluster has (the largest nodes: a few hundred cores, 8-16 GPUs; the largest Slurm
# clusters: some ten thousand nodes): such a count is a typo, refused before sbatch takes it literally.
# The site's partitions bound them further (hpc.resolve).
MAX_NODES = 100_000
MAX_CPUS_PER_NODE = 1024
MAX_GPUS_PER_NODE = 64
COUNT_LIMITS = {"nodes": MAX_NODES, "tasks_per_node": MAX_CPUS_PER_NODE, "cpus_per_task": MAX_CPUS_PER_NODE,
                "gpus_per_node": MAX_GPUS_PER_NODE, "gpus_per_task": MAX_GPUS_PER_NODE}

# validated item by item so an error names its index: sbatch_extra[2]; each item is read as sbatch
# reads it and kept in full (``--mail-ty END`` becomes ``--mail-type=END``); site sbatch_defaults too
ExtraFlag = Annotated[str, AfterValidator(check_extra_flag)]


def _no_variables_sbatch(value: str) -> str:
    return no_variables(value, NO_VARIABLES["sbatch"])


# node features (#SBATCH --constraint), the job's or the site's default
Constraint = Annotated[OneLine, AfterValidator(_no_variables_sbatch)]
Strategy = Literal["multi_worker_mirrored", "mirrored", "none"]
GpuBinding = Literal["task", "node", "slurm"]  # hpc/runtime/node/settings.py GPU_BINDINGS
# a whole number as written: not `true` (1 to pydantic), not 2.0, not "2"
Count = Annotated[int, Strict()]


# srun reads these from the environment as options of every step, the setup steps' too (and SRUN_*)
SRUN_ENV = {"SLURM_MPI_TYPE": "mpi", "SLURM_CPU_BIND": "cpu-bind"}


def srun_env_option(key: str) -> str | None:
    """The srun option (long name) that srun reads the environment variable ``key`` as, or None."""
    if key in SRUN_ENV:
        return SRUN_ENV[key]
    return key.removeprefix("SRUN_").lower().replace("_", "-") if key.startswith("SRUN_") else None


def _unmanaged_env(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if option := srun_env_option(key):
            raise ValueError(f"{key} is read by srun as an option: write it under srun_extra (--{option}=…), "
                             "which reaches the tasks' srun only")
        if key in MANAGED_ENV or key.startswith(MANAGED_ENV_PREFIXES):
            raise ValueError(f"{key} is set by hpc-tf/Slurm for each task; choose another name")
        if key in BASH_READONLY_ENV:
            raise ValueError(f"{key} is read-only in bash, which runs the batch script; choose another name")
    return value


# variables exported by the batch script: `export KEY=value`, the key unquoted
EnvVars = Annotated[dict[str, RunTimeText], keys_matching(ENV_NAME_RE, ENV_NAME_RULE), AfterValidator(_unmanaged_env)]


def _slurm_time(value: str) -> str:
    parse_duration(value)
    return value


# a Slurm time limit (1:30:00, 2-00:00:00, 90), refused when written rather than by sbatch
SlurmTime = Annotated[OneLine, AfterValidator(_slurm_time)]


def command_words(value: object) -> object:
    """A command as argv: a list stays a list, a string is split as a shell would (no expansion)."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as err:
            raise ValueError(f"cannot split the command like a shell would: {err}") from None
    if isinstance(value, list | tuple) and not value:
        raise ValueError("must name a program or script to run")
    return value


GRES_RE = re.compile(r"[A-Za-z0-9_.+-]{1,128}(:[A-Za-z0-9_.+-]{1,128})?:[0-9]{1,9}")
GRES_RULE = "a gres is NAME:COUNT or NAME:TYPE:COUNT (e.g. nvme:200)"


def _not_gpus(value: str) -> str:
    if value.split(":", 1)[0] in ("gpu", "gpus"):
        raise ValueError(f"{shown(value)} asks for GPUs: set resources.gpus_per_node or gpus_per_task (and gpu_type)")
    return value


# an extra generic resource on the job's --gres line, next to the GPUs
GresItem = Annotated[str, matching(GRES_RE, GRES_RULE), AfterValidator(_not_gpus)]


# argv of a program: written as a YAML list, or as one string split like a shell would (a line break
# between words separates them; one inside a word is refused with the word's index)
Command = Annotated[tuple[RunTimeText, ...], BeforeValidator(command_words)]


class Resources(StrictModel):
    nodes: Count = Field(1, ge=1)
    tasks_per_node: Count = Field(1, ge=1, description="TensorFlow workers per node")
    gpus_per_node: Count | None = Field(None, ge=0)
    gpus_per_task: Count | None = Field(None, ge=0)
    gpu_type: Token | None = None
    cpus_per_task: Count | None = Field(None, ge=1)
    mem: OneLine | None = Field(None, description=f"memory per node, e.g. 32G, or '{ALL_MEMORY}' (all of each node's)")
    mem_per_gpu: OneLine | None = Field(None, description="memory per allocated GPU, e.g. 8G (instead of mem)")
    mem_per_cpu: OneLine | None = Field(None, description="memory per allocated CPU, e.g. 2G (instead of mem)")
    gres: list[GresItem] = Field(default_factory=list, description="extra gres beside the GPUs, e.g. nvme:200")
    time: SlurmTime | None = Field(None, description="time limit, e.g. 2:00:00 or 1-00:00:00")
    partition: Token | None = None
    account: Token | None = None
    qos: Token | None = None
    constraint: Constraint | None = None
    exclusive: bool = False
    gpu_binding: GpuBinding = Field(
        "task", description="task: each task sees its own GPUs as GPU:0..; node: every task sees its node's GPUs "
        "(the script picks one by local rank); slurm: exactly what Slurm set (srun_extra --gpu-bind=...)")

    @field_validator(*COUNT_LIMITS)
    @classmethod
    def _count(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = COUNT_LIMITS[str(info.field_name)]
        if value is not None and value > limit:
            raise ValueError(f"{value} is more than any cluster has; at most {limit}")
        return value

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() == ALL_MEMORY:
            return ALL_MEMORY
        if value is not None:
            parse_memory_mb(value)
        return value

    @field_validator("mem_per_gpu", "mem_per_cpu")
    @classmethod
    def _mem_per(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory_mb(value)
        return value

    @model_validator(mode="after")
    def _one_memory_field(self) -> Resources:
        # sbatch takes one of --mem, --mem-per-cpu, --mem-per-gpu: they are mutually exclusive
        given = [key for key in ("mem", "mem_per_cpu", "mem_per_gpu") if getattr(self, key) is not None]
        if len(given) > 1:
            raise ValueError(f"set one of mem, mem_per_cpu, mem_per_gpu, not {' and '.join(given)}")
        if self.mem_per_gpu is not None and not self.gpus_on_each_node:
            raise ValueError("mem_per_gpu needs gpus_per_node or gpus_per_task: use mem or mem_per_cpu for a CPU job")
        return self

    @model_validator(mode="after")
    def _per_node(self) -> Resources:
        # each bounded alone above; their product is what one node must hold
        cpus = self.tasks_per_node * (self.cpus_per_task or 1)
        if cpus > MAX_CPUS_PER_NODE:
            raise ValueError(f"{self.tasks_per_node} tasks x {self.cpus_per_task or 1} CPUs = {cpus} CPUs on each "
                             f"node, more than any node has; at most {MAX_CPUS_PER_NODE}")
        if self.gpus_on_each_node > MAX_GPUS_PER_NODE:
            raise ValueError(f"{self.tasks_per_node} tasks x {self.gpus_per_worker} GPUs = {self.gpus_on_each_node} "
                             f"GPUs on each node, more than any node has; at most {MAX_GPUS_PER_NODE}")
        return self

    @model_validator(mode="after")
    def _gpu_fields(self) -> Resources:
        if self.gpus_per_node is not None and self.gpus_per_task is not None:
            raise ValueError("set gpus_per_node or gpus_per_task, not both")
        if self.gpu_type is not None and not (self.gpus_per_node or self.gpus_per_task):
            raise ValueError("gpu_type needs gpus_per_node or gpus_per_task")
        if self.gpus_per_node and self.gpus_per_node % self.tasks_per_node:
            raise ValueError(
                f"gpus_per_node ({self.gpus_per_node}) must be a multiple of tasks_per_node "
                f"({self.tasks_per_node}) so every worker gets the same number of GPUs"
            )
        return self

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def gpus_per_worker(self) -> int:
        if self.gpus_per_task is not None:
            return self.gpus_per_task
        return (self.gpus_per_node or 0) // self.tasks_per_node

    @property
    def gpus_on_each_node(self) -> int:
        return self.gpus_per_worker * self.tasks_per_node

    @property
    def total_gpus(self) -> int:
        return self.gpus_on_each_node * self.nodes

    @property
    def time_seconds(self) -> int | None:
        return None if self.time is None else parse_duration(self.time)


class Environment(StrictModel):
    modules: list[ModuleName] = Field(default_factory=list)
    module_purge: bool = Field(False, description="'module purge' before the site's and the job's modules")
    module_use: list[RunTimeText] = Field(default_factory=list,
                                          description="'module use PATH' before the modules load")
    conda: RunTimeText | None = Field(None, description="name or path of a conda environment to activate")
    venv: RunTimeText | None = Field(None, description="path of a Python virtual environment to activate")
    container: Container | None = None
    python: RunTimeText | None = Field(None, description="interpreter that starts the bootstrap (default: site's)")

    @model_validator(mode="after")
    def _one_activation(self) -> Environment:
        if self.conda and self.venv:
            raise ValueError("set conda or venv, not both")
        return self


# the runtime's defaults (hpc/runtime/node/settings.py): declared there once, read by the node
_RUNTIME = RuntimeSettings()


class TFOptions(StrictModel):
    strategy: Strategy | None = Field(
        None, description="default: multi_worker_mirrored when nodes x tasks_per_node > 1"
    )
    port_range: tuple[int, int] = _RUNTIME.port_range
    coordination_timeout: int = Field(_RUNTIME.coordination_timeout_s, ge=10,
                                      description="seconds to wait for every worker to join")
    memory_growth: bool = _RUNTIME.memory_growth
    gpu_allocator: Literal["cuda_malloc_async", "bfc"] | None = None
    keras_mwms_fix: bool = _RUNTIME.keras_mwms_fix

    @field_validator("port_range")
    @classmethod
    def _ports(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not valid_port_range(*value):
            raise ValueError(f"must be {PORT_RANGE_RULE}")
        return value


class Checkpoint(StrictModel):
    dir: RunTimeText | None = Field(None, description="default: <output_dir>/checkpoints")
    every_steps: int | None = Field(None, ge=1)
    keep: int = Field(_RUNTIME.checkpoint_keep, ge=1)


class Preemption(StrictModel):
    enabled: bool = False
    warning_seconds: int = Field(300, ge=10, le=65535)
    max_restarts: int = Field(_RUNTIME.max_restarts, ge=0)


class Metrics(StrictModel):
    enabled: bool = Field(_RUNTIME.metrics, description="record what model.fit logs into <run_dir>/metrics.jsonl")
    every_steps: int | None = Field(None, ge=1, description="a row every N training steps too (default: epochs only)")
    tensorboard: bool = Field(_RUNTIME.metrics_tensorboard,
                              description="also as TensorBoard event files, in <run_dir>/tensorboard")


class Handoff(StrictModel):
    model: ModelName
    format: Literal["onnx", "savedmodel", "python", "python-onnx", "auto"] | None = None
    savedmodel: OneLine = Field("export", description="SavedModel directory, relative to output_dir")


# validated item by item like sbatch_extra, read as srun reads it
SrunFlag = Annotated[str, AfterValidator(check_srun_flag)]


class JobSpec(StrictModel):
    name: Name
    command: Command = Field(description="the unmodified training command: a list, or a shell-like string")
    workdir: RunTimeText | None = None
    env: EnvVars = Field(default_factory=dict)
    output_dir: RunTimeText | None = None
    resources: Resources = Field(default_factory=lambda: Resources())
    environment: Environment = Field(default_factory=lambda: Environment())
    tf: TFOptions = Field(default_factory=lambda: TFOptions())
    checkpoint: Checkpoint = Field(default_factory=lambda: Checkpoint())
    preemption: Preemption = Field(default_factory=lambda: Preemption())
    metrics: Metrics = Field(default_factory=lambda: Metrics())
    handoff: Handoff | None = None
    sbatch_extra: list[ExtraFlag] = Field(default_factory=list)
    setup: list[SetupStep] = Field(default_factory=list, description="shell lines run before the tasks start")
    srun_extra: list[SrunFlag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _strategy(self) -> JobSpec:
        if self.tf.strategy == "mirrored" and self.resources.world_size > 1:
            raise ValueError(
                "tf.strategy 'mirrored' runs one process; with nodes x tasks_per_node > 1 use multi_worker_mirrored"
            )
        return self

    @property
    def strategy(self) -> Strategy:
        if self.tf.strategy is not None:
            return self.tf.strategy
        if self.resources.world_size > 1:
            return "multi_worker_mirrored"
        return "mirrored" if self.resources.gpus_per_worker > 1 else "none"
