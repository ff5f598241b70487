"""The job spec: what a researcher writes in job.yaml. It knows nothing of Slurm syntax.

Rules that need only the spec are checked here, at load time; rules that need the cluster
(does the partition have that many GPUs per node?) are checked in :mod:`hpc.resolve`.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from hpc.modelbase import StrictModel
from hpc.scheduler.managed import check_extra_flag
from hpc.units import ALL_MEMORY, parse_duration, parse_memory_mb

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")  # partition, account, qos, gpu type, module names
# Variables the bootstrap and Slurm own; a spec that sets them would silently break the job.
MANAGED_ENV = ("TF_CONFIG", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
MANAGED_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "HPC_TF_")

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
Strategy = Literal["multi_worker_mirrored", "mirrored", "none"]


def _no_control_chars(value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("must not contain newlines or NUL characters")
    return value


def _token(value: str | None) -> str | None:
    if value is not None and not TOKEN_RE.match(value):
        raise ValueError(f"'{value}' is not a valid name (letters, digits, '_', '.', '+', '-')")
    return value


def command_words(value: object) -> object:
    """A command as argv: a list stays a list, a string is split as a shell would (no expansion)."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as err:
            raise ValueError(f"cannot split the command like a shell would: {err}") from None
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("must name a program or script to run")
        for arg in value:
            if isinstance(arg, str):
                _no_control_chars(arg)
    return value


# argv of a program: written as a YAML list, or as one string split like a shell would
Command = Annotated[tuple[str, ...], BeforeValidator(command_words)]


class Resources(StrictModel):
    nodes: int = Field(1, ge=1)
    tasks_per_node: int = Field(1, ge=1, description="TensorFlow workers per node")
    gpus_per_node: int | None = Field(None, ge=0)
    gpus_per_task: int | None = Field(None, ge=0)
    gpu_type: str | None = None
    cpus_per_task: int | None = Field(None, ge=1)
    mem: str | None = Field(None, description=f"memory per node, e.g. 32G, or '{ALL_MEMORY}' (all of each node's)")
    time: str | None = Field(None, description="time limit, e.g. 2:00:00 or 1-00:00:00")
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclusive: bool = False

    _tokens = field_validator("gpu_type", "partition", "account", "qos")(_token)

    @field_validator(*COUNT_LIMITS)
    @classmethod
    def _count(cls, value: int | None, info: ValidationInfo) -> int | None:
        limit = COUNT_LIMITS[str(info.field_name)]
        if value is not None and value > limit:
            raise ValueError(f"{value} is more than any cluster has; at most {limit}")
        return value

    @field_validator("constraint")
    @classmethod
    def _constraint(cls, value: str | None) -> str | None:
        return None if value is None else _no_control_chars(value)

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() == ALL_MEMORY:
            return ALL_MEMORY
        if value is not None:
            parse_memory_mb(value)
        return value

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

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


class Container(StrictModel):
    image: str
    runtime: Literal["apptainer", "singularity"] = "apptainer"
    binds: list[str] = Field(default_factory=list)
    nv: bool = Field(True, description="pass --nv so the container sees the host's NVIDIA driver")

    _plain = field_validator("image")(_no_control_chars)

    @field_validator("binds")
    @classmethod
    def _binds(cls, value: list[str]) -> list[str]:
        for bind in value:
            _no_control_chars(bind)
            if "," in bind:
                raise ValueError(f"bind '{bind}' must not contain ',' (list each bind separately)")
        return value


class Environment(StrictModel):
    modules: list[str] = Field(default_factory=list)
    conda: str | None = Field(None, description="name or path of a conda environment to activate")
    venv: str | None = Field(None, description="path of a Python virtual environment to activate")
    container: Container | None = None
    python: str | None = Field(None, description="interpreter that starts the bootstrap (default: site's)")

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        for module in value:
            if not re.match(r"^[A-Za-z0-9_.+/-]+$", module):
                raise ValueError(f"'{module}' is not a module name")
        return value

    @field_validator("conda", "venv", "python")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else _no_control_chars(value)

    @model_validator(mode="after")
    def _one_activation(self) -> Environment:
        if self.conda and self.venv:
            raise ValueError("set conda or venv, not both")
        return self


class TFOptions(StrictModel):
    strategy: Strategy | None = Field(
        None, description="default: multi_worker_mirrored when nodes x tasks_per_node > 1"
    )
    port_range: tuple[int, int] = (20000, 29999)
    coordination_timeout: int = Field(300, ge=10, description="seconds to wait for every worker to join")
    memory_growth: bool = True
    gpu_allocator: Literal["cuda_malloc_async", "bfc"] | None = None
    keras_mwms_fix: bool = True

    @field_validator("port_range")
    @classmethod
    def _ports(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1024 <= low < high <= 65535:
            raise ValueError("must be [low, high] with 1024 <= low < high <= 65535")
        return value


class Checkpoint(StrictModel):
    dir: str | None = Field(None, description="default: <output_dir>/checkpoints")
    every_steps: int | None = Field(None, ge=1)
    keep: int = Field(3, ge=1)

    _plain = field_validator("dir")(lambda v: None if v is None else _no_control_chars(v))


class Preemption(StrictModel):
    enabled: bool = False
    warning_seconds: int = Field(300, ge=10, le=65535)
    max_restarts: int = Field(3, ge=0)


class Handoff(StrictModel):
    model: str
    format: Literal["onnx", "savedmodel", "python"] | None = None
    savedmodel: str = Field("export", description="SavedModel directory, relative to output_dir")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("model names use letters, digits, '_', '.', '-' and start with a letter or digit")
        return value


class JobSpec(StrictModel):
    name: str
    command: Command = Field(description="the unmodified training command: a list, or a shell-like string")
    workdir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    output_dir: str | None = None
    resources: Resources = Field(default_factory=lambda: Resources())
    environment: Environment = Field(default_factory=lambda: Environment())
    tf: TFOptions = Field(default_factory=lambda: TFOptions())
    checkpoint: Checkpoint = Field(default_factory=lambda: Checkpoint())
    preemption: Preemption = Field(default_factory=lambda: Preemption())
    handoff: Handoff | None = None
    sbatch_extra: list[ExtraFlag] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                f"'{value}' is not a job name: use up to 64 letters, digits, '_', '.', '-', "
                "starting with a letter or digit"
            )
        return value


    @field_validator("workdir", "output_dir")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else _no_control_chars(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not ENV_NAME_RE.match(key):
                raise ValueError(f"'{key}' is not an environment variable name")
            if key in MANAGED_ENV or key.startswith(MANAGED_ENV_PREFIXES):
                raise ValueError(f"{key} is set by hpc-tf/Slurm for each task; remove it from env")
            _no_control_chars(val)
        return value

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
