"""Everything the bootstrap exports for one task, computed from a mapping (pure).

``plan_task(environ, settings, site_dir=...)`` is the single definition of "what the
bootstrap sets": the bootstrap applies ``plan.env`` and execs the user's command, and
``hpc-tf node-env`` prints the same ``plan.env``.

Variables, in this order:

* CUDA_VISIBLE_DEVICES – the task's own GPUs (gpus.py); ``""`` for CPU-only tasks
* CUDA_DEVICE_ORDER=PCI_BUS_ID – CUDA ordinals in the order nvidia-smi and Slurm use
  (AMD: ROCR_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES; none of them with
  gpu_binding slurm, which keeps Slurm's)
* TF_FORCE_GPU_ALLOW_GROWTH=true / TF_GPU_ALLOCATOR – the spec's memory options (GPU tasks only)
* TF_CONFIG – multi_worker_mirrored only (tf_config.py)
* HPC_TF_HOOKS – multi_worker_mirrored, checkpoints/preemption on, or metrics on (the default) in
  an hpc-tf run (HPC_TF_RUN_DIR set): the in-process hooks (hooks.py)
* PYTHONPATH – always: the directory holding the sitecustomize.py that installs those hooks and
  makes ``hpc_tf_runtime`` importable in every Python process of the job (``Resumable`` for a
  custom loop is documented whatever the job's checkpoint settings)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ._errors import RuntimeSetupError
from .gpus import GpuAssignment, assign_gpus
from .hook_config import HOOKS_VARIABLE, METRICS_FILE, RUN_DIR_VARIABLE, HookConfig, MetricsConfig, PreemptionConfig
from .layout import step_layout
from .record import Record
from .settings import RuntimeSettings, checkpoint_dir
from .slurm_env import SlurmStep, read_slurm_step
from .tf_config import ADDRESS_MAP_VARIABLE, parse_address_map, tf_config, worker_addresses

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class TaskPlan(Record):
    __slots__ = ("env", "gpus", "step", "workers")

    def __init__(self, step: SlurmStep, gpus: GpuAssignment, workers: tuple[str, ...], env: dict[str, str]) -> None:
        self.step: Final = step
        self.gpus: Final = gpus
        self.workers: Final = workers  # every worker's host:port, index = rank; () without TF_CONFIG
        self.env: Final = env

    @property
    def address(self) -> str | None:
        """This task's own host:port, which TensorFlow will listen on."""
        return self.workers[self.step.rank] if self.workers else None


def plan_task(environ: Mapping[str, str], settings: RuntimeSettings, *, site_dir: str) -> TaskPlan:
    step = read_slurm_step(environ)
    gpus = assign_gpus(step, settings)
    env = gpus.env()
    if gpus.devices and settings.memory_growth:
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    if gpus.devices and settings.gpu_allocator:
        env["TF_GPU_ALLOCATOR"] = settings.gpu_allocator

    workers: tuple[str, ...] = ()
    worker_nodes: tuple[str, ...] = ()
    if settings.strategy == "multi_worker_mirrored":
        layout = step_layout(step)
        try:
            address_map = parse_address_map(environ.get(ADDRESS_MAP_VARIABLE, ""))
            workers = tuple(
                worker_addresses(step, layout, port_range=settings.port_range, address_map=address_map)
            )
        except ValueError as err:
            raise RuntimeSetupError(str(err)) from err
        env["TF_CONFIG"] = tf_config(workers, step.rank)
        worker_nodes = tuple(step.nodes[placement.node_index] for placement in layout)
    checkpoints = preemption_config(settings, environ)
    metrics = metrics_config(settings, environ, step.rank)
    if worker_nodes or checkpoints is not None or metrics is not None:
        hooks = HookConfig(
            coordination_timeout_s=settings.coordination_timeout_s,
            keras_mwms_fix=settings.keras_mwms_fix,
            worker_nodes=worker_nodes,
            preemption=checkpoints,
            metrics=metrics,
        )
        env[HOOKS_VARIABLE] = hooks.to_json()
    env["PYTHONPATH"] = _prepend_path(site_dir, environ.get("PYTHONPATH", ""))
    return TaskPlan(step=step, gpus=gpus, workers=workers, env=env)


def preemption_config(settings: RuntimeSettings, environ: Mapping[str, str]) -> PreemptionConfig | None:
    """Checkpoints are on with preemption or periodic checkpoints, and need a directory."""
    directory = checkpoint_dir(settings, environ)
    if directory is None or not (settings.preemption or settings.checkpoint_every_steps):
        return None
    return PreemptionConfig(
        checkpoint_dir=directory,
        every_steps=settings.checkpoint_every_steps,
        keep=settings.checkpoint_keep,
        handle_signals=settings.preemption,
    )


def metrics_config(settings: RuntimeSettings, environ: Mapping[str, str], rank: int) -> MetricsConfig | None:
    """Metrics go to the run directory, written by the chief (task 0) alone: every worker logs the same
    all-reduced values, and one writer keeps the file's lines whole."""
    run_dir = environ.get(RUN_DIR_VARIABLE)
    if not settings.metrics or not run_dir or rank != 0:
        return None
    return MetricsConfig(path=os.path.join(run_dir, METRICS_FILE), every_steps=settings.metrics_every_steps,
                         tensorboard=settings.metrics_tensorboard)


def _prepend_path(directory: str, current: str) -> str:
    if not current:
        return directory
    entries = [entry for entry in current.split(os.pathsep) if entry != directory]
    return os.pathsep.join([directory, *entries])
