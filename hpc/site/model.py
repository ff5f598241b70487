"""A site configuration: what hpc-tf needs to know about one cluster (or this machine)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from hpc.modelbase import StrictModel
from hpc.spec.container import Bind, ContainerRuntime, GpuVendor
from hpc.spec.model import (
    TOKEN_RE,
    TOKEN_RULE,
    Constraint,
    ExtraFlag,
    ModuleName,
    Name,
    SlurmTime,
    Token,
)
from hpc.text import OneLine, RunTimeText, SubmitTimeText, keys_matching


class Partition(StrictModel):
    gpus_per_node: int = Field(0, ge=0)
    gpu_types: list[Token] = Field(default_factory=list)
    cpus_per_node: int | None = Field(None, ge=1)
    mem_per_node: OneLine | None = None
    max_time: SlurmTime | None = None
    max_nodes: int | None = Field(None, ge=1)
    gpu_vendor: GpuVendor | None = Field(None, description="the GPUs of this partition's nodes (default: the site's)")

    @property
    def has_gpus(self) -> bool:
        return self.gpus_per_node > 0


class Autoscale(StrictModel):
    """``serving.autoscale``: the router scales its replicas on the requests in flight through it
    (:mod:`hpc.serving.router.autoscale` has why each default is what it is)."""

    min_replicas: int = Field(1, ge=1, le=64, description="replicas kept while requests come")
    max_replicas: int = Field(4, ge=1, le=64, description="replicas at most (the GPU quota may stop it earlier)")
    target_in_flight: float = Field(2.0, gt=0, le=10_000, description="requests in flight per replica aimed at")
    window: float = Field(30.0, gt=0, le=3600, description="seconds the in-flight count is averaged over")
    up_delay: float = Field(30.0, ge=0, le=86_400, description="seconds the load must stay high before scaling up")
    down_delay: float = Field(600.0, ge=0, le=86_400,
                              description="seconds the load must stay low before scaling down")
    scale_to_zero: bool = Field(False, description="no replica after down_delay without a request")
    hold: float = Field(300.0, gt=0, le=3600, description="seconds a request waits for a replica when none serves")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscale:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class Serving(StrictModel):
    model_repository: SubmitTimeText | None = Field(
        None, description="where hand-offs put models and the server reads them; ~, $VAR, ${VAR} expand where "
                          "hpc-tf runs (an unset one is an error), $$ is a literal $")
    format: Literal["onnx", "savedmodel", "python", "python-onnx", "auto"] = "python"
    partition: Token | None = None
    inference_token: bool = Field(False, description="serving nodes answer inference only with the owner's token")
    autoscale: Autoscale | None = Field(None, description="scale the router's replicas on load (unset: the "
                                                         "count hpc-tf serve scale sets)")
    replica_gpus: int = Field(0, ge=0, le=64, description="GPUs of each replica job the router starts")


class SiteConfig(StrictModel):
    name: Name
    description: OneLine = ""
    launcher: Literal["slurm", "local"] = "slurm"
    scheduler: Literal["cli", "pyslurm", "auto"] = Field(
        "cli", description="how hpc-tf reaches Slurm: its tools (cli), pyslurm, or pyslurm when it matches (auto)")
    partitions: Annotated[dict[str, Partition], keys_matching(TOKEN_RE, TOKEN_RULE)] = Field(default_factory=dict)
    default_partition: Token | None = None
    cpu_partition: Token | None = Field(None, description="partition for CPU stages (preprocessing, hand-off)")
    account: Token | None = None
    qos: Token | None = None
    gres_name: Token = "gpu"
    default_time: SlurmTime = "1:00:00"
    # Paths hpc-tf creates or reads itself are submit-time text: ~, $VAR and ${VAR} expand where hpc-tf
    # runs, as in the shell an admin tests them from. What reaches the batch script is run-time text like
    # the job's paths: ${NAME} expands on the node (a node's $HOME, $SCRATCH, $MODULESHOME may differ from
    # the login node's), and a bare $VAR is refused rather than kept literal (hpc.text).
    runs_dir: SubmitTimeText = Field(
        "~/hpc-tf-runs", description="where run directories are created (a shared filesystem); ~, $VAR, ${VAR} "
                                     "expand where hpc-tf runs (an unset one is an error), $$ is a literal $")
    python: RunTimeText = Field("python3", description="interpreter that starts the bootstrap on compute nodes; "
                                                       "${NAME} expands on the node, $$ is a literal $")
    modules: list[ModuleName] = Field(default_factory=list, description="modules every job loads first")
    module_init: RunTimeText | None = Field(
        None, description="file to source before 'module load' (e.g. lmod init); ${NAME} expands on the node")
    container_binds: list[Bind] = Field(
        default_factory=list, description="binds of every container job; ${NAME} expands on the node")
    container_runtime: list[ContainerRuntime] = Field(
        default_factory=list, description="the container runtimes the nodes have, the first the default "
                                          "(none listed: apptainer or singularity)")
    gpu_vendor: GpuVendor = Field("nvidia", description="the GPUs of the nodes: a container's gpu: auto follows it")
    constraint: Constraint | None = Field(None, description="node features for jobs that set no resources.constraint")
    sbatch_defaults: list[ExtraFlag] = Field(default_factory=list)
    serving: Serving = Field(default_factory=lambda: Serving())

    @model_validator(mode="after")
    def _partitions_exist(self) -> SiteConfig:
        for key in ("default_partition", "cpu_partition"):
            name = getattr(self, key)
            if name is not None and self.partitions and name not in self.partitions:
                raise ValueError(f"{key} '{name}' is not among partitions: {', '.join(self.partitions)}")
        return self
