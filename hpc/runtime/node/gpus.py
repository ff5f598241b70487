"""Which GPUs one task may use: PAI-TF's "mapped GPUs", on Slurm.

Every task must see exactly its own GPUs, which TensorFlow then numbers GPU:0..k-1.
The only trustworthy input is the *values* of the CUDA_VISIBLE_DEVICES the task
inherits from Slurm (lab notes, Slurm 22.05):

* with task/cgroup + ConstrainDevices, Slurm renumbers: a job holding physical GPUs
  2,3 sees ``0,1``; with per-task binding every task sees ``0`` (its own device);
* without device cgroups the values are physical: ``2,3``, or ``2`` / ``3`` per task;
* SLURM_STEP_GPUS holds physical ids and is wrong per task under --gpus-per-task
  with cgroups (both tasks see 2), so it is never used here.

The rule: find the task's share k; a task that sees exactly k GPUs keeps them (Slurm
bound them); a task that sees more (``--gres=gpu:4`` with 2 tasks per node, or a
``--gpu-bind`` that binds nothing) takes the k values at ``SLURM_LOCALID * k``; a task
that sees fewer than k is an error. Values are sliced, never renumbered, so ``2,3``
stays physical and CUDA maps them to ordinals 0,1 for the process.

AMD GPUs come in ROCR_VISIBLE_DEVICES (Slurm sets it instead of CUDA_VISIBLE_DEVICES with
gres.conf ``Flags=amd_gpu_env`` or AutoDetect=rsmi) and are sliced the same way.

``resources.gpu_binding`` chooses what a task keeps: ``task`` (the rule above), ``node`` (every
GPU its node's share of the step holds, for scripts that pick one by local rank), ``slurm`` (the
variables untouched: exactly what Slurm's ``--gpu-bind`` gave).
"""

from __future__ import annotations

from ._errors import RuntimeSetupError
from .record import Record
from .settings import RuntimeSettings
from .slurm_env import SlurmStep

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class GpuAssignment(Record):
    __slots__ = ("amd", "devices", "inherited", "keep", "share", "sliced")

    def __init__(
        self,
        devices: tuple[str, ...],
        share: int,
        inherited: tuple[str, ...] | None,
        sliced: bool,
        amd: bool = False,
        keep: bool = False,
    ) -> None:
        self.devices: Final = devices  # the task's visible-devices values; () = CPU only
        self.share: Final = share  # GPUs per task this was computed for
        self.inherited: Final = inherited  # what the task saw before (None = unset)
        self.sliced: Final = sliced  # True when the task saw more than its share
        self.amd: Final = amd  # the values came in ROCR_VISIBLE_DEVICES
        self.keep: Final = keep  # gpu_binding slurm: leave Slurm's variables as they are

    def env(self) -> dict[str, str]:
        """The variables the task gets; {} when Slurm's are kept."""
        if self.keep:
            return {}
        if not self.amd:
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.devices), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        # ROCr exposes only ROCR_VISIBLE_DEVICES' GPUs, numbered 0..k-1; HIP (and HIP's reading of
        # CUDA_VISIBLE_DEVICES) index into those, so an inherited value cannot pick another GPU
        ordinals = ",".join(str(ordinal) for ordinal in range(len(self.devices)))
        return {"ROCR_VISIBLE_DEVICES": ",".join(self.devices), "HIP_VISIBLE_DEVICES": ordinals,
                "CUDA_VISIBLE_DEVICES": ordinals}


def assign_gpus(step: SlurmStep, settings: RuntimeSettings) -> GpuAssignment:
    amd = step.cuda_visible_devices is None and step.rocr_visible_devices is not None
    visible = step.rocr_visible_devices if amd else step.cuda_visible_devices
    variable = "ROCR_VISIBLE_DEVICES" if amd else "CUDA_VISIBLE_DEVICES"
    if settings.gpu_binding == "slurm":
        return GpuAssignment(devices=visible or (), share=len(visible or ()), inherited=visible, sliced=False,
                             amd=amd, keep=True)
    share = _share(step, settings, visible or ())
    if share == 0:
        # CPU-only: hide every GPU, so a CPU task on a GPU node without device cgroups
        # cannot grab a device that another job owns.
        return GpuAssignment(devices=(), share=0, inherited=visible, sliced=False, amd=amd)
    if not visible:
        raise RuntimeSetupError(
            f"rank {step.rank} on {step.node} should get {share} GPU(s) but Slurm gave it none "
            f"({variable}={'unset' if visible is None else repr('')})",
            hint="request GPUs for the step (--gres=gpu:N, --gpus-per-task), or for a CPU job leave "
                 "resources.gpus_per_node and gpus_per_task unset",
        )
    if len(visible) == share or (settings.gpu_binding == "node" and len(visible) > share):
        return GpuAssignment(devices=visible, share=share, inherited=visible, sliced=False, amd=amd)
    if len(visible) < share:
        raise RuntimeSetupError(
            f"rank {step.rank} on {step.node} sees {len(visible)} GPU(s) ({','.join(visible)}) "
            f"but its share is {share}"
        )
    start = step.local_rank * share
    if start + share > len(visible):
        raise RuntimeSetupError(
            f"rank {step.rank} on {step.node} (local rank {step.local_rank}) needs GPUs "
            f"{start}..{start + share - 1} of the node's {len(visible)} ({','.join(visible)})",
            hint="request share x tasks-per-node GPUs per node, or bind one share per task (--gpus-per-task)",
        )
    return GpuAssignment(devices=visible[start : start + share], share=share, inherited=visible, sliced=True, amd=amd)


def _share(step: SlurmStep, settings: RuntimeSettings, visible: tuple[str, ...]) -> int:
    """The spec's gpus_per_task, else Slurm's --gpus-per-task, else the node's GPUs split evenly."""
    if settings.gpus_per_task is not None:
        return settings.gpus_per_task
    if step.gpus_per_task is not None:
        return step.gpus_per_task
    node_gpus = settings.gpus_per_node
    if node_gpus is None:
        node_gpus = step.gpus_on_node if step.gpus_on_node is not None else len(visible)
    if node_gpus == 0:
        return 0
    tasks = step.tasks_on_node
    if node_gpus % tasks:
        raise RuntimeSetupError(
            f"{node_gpus} GPU(s) on {step.node} cannot be split evenly among its {tasks} tasks",
            hint="set gpus_per_task in the job spec, or make GPUs per node a multiple of tasks per node",
        )
    return node_gpus // tasks
