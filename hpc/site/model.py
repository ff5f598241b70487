"""A site configuration: what hpc-tf needs to know about one cluster (or this machine)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from hpc.modelbase import StrictModel
from hpc.spec.model import ExtraFlag
from hpc.units import parse_duration


class Partition(StrictModel):
    gpus_per_node: int = Field(0, ge=0)
    gpu_types: list[str] = Field(default_factory=list)
    cpus_per_node: int | None = Field(None, ge=1)
    mem_per_node: str | None = None
    max_time: str | None = None
    max_nodes: int | None = Field(None, ge=1)

    @field_validator("max_time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def has_gpus(self) -> bool:
        return self.gpus_per_node > 0


class Serving(StrictModel):
    model_repository: str | None = None
    format: Literal["onnx", "savedmodel", "python"] = "python"
    partition: str | None = None
    inference_token: bool = Field(False, description="serving nodes answer inference only with the owner's token")


class SiteConfig(StrictModel):
    name: str
    description: str = ""
    launcher: Literal["slurm", "local"] = "slurm"
    partitions: dict[str, Partition] = Field(default_factory=dict)
    default_partition: str | None = None
    cpu_partition: str | None = Field(None, description="partition for CPU stages (preprocessing, hand-off)")
    account: str | None = None
    qos: str | None = None
    gres_name: str = "gpu"
    default_time: str = "1:00:00"
    runs_dir: str = Field("~/hpc-tf-runs", description="where run directories are created (a shared filesystem)")
    python: str = Field("python3", description="interpreter that starts the bootstrap on compute nodes")
    modules: list[str] = Field(default_factory=list, description="modules every job loads first")
    module_init: str | None = Field(None, description="file to source before 'module load' (e.g. lmod init)")
    container_binds: list[str] = Field(default_factory=list)
    sbatch_defaults: list[ExtraFlag] = Field(default_factory=list)
    serving: Serving = Field(default_factory=lambda: Serving())

    @field_validator("default_time")
    @classmethod
    def _time(cls, value: str) -> str:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _partitions_exist(self) -> SiteConfig:
        for key in ("default_partition", "cpu_partition"):
            name = getattr(self, key)
            if name is not None and self.partitions and name not in self.partitions:
                raise ValueError(f"{key} '{name}' is not among partitions: {', '.join(self.partitions)}")
        return self
