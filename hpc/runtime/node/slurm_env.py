"""A typed, read-only view of what Slurm tells one task of a job step.

``read_slurm_step(environ)`` takes a plain mapping (``os.environ`` on a node, a recorded
dump in tests) and returns a frozen ``SlurmStep``, or raises RuntimeSetupError naming the
variable that is missing or malformed. Nothing here reads the process environment itself.

Only step-level variables are trusted for the layout (``SLURM_STEP_NODELIST``,
``SLURM_STEP_TASKS_PER_NODE``): a step may use a subset of the job's nodes, and the
batch script itself is not a step (it has no ``SLURM_STEP_*``), hence "run under srun".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ._errors import RuntimeSetupError
from .hostlist import expand_hostlist, expand_tasks_per_node
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, TypeVar

    _T = TypeVar("_T")

_RUN_UNDER_SRUN = (
    "run under srun: start the command as `srun ... python3 <run_dir>/runtime/bootstrap.py ...` "
    "inside an allocation (sbatch or salloc); the batch script itself is not a job step"
)


class SlurmStep(Record):
    """One task's view of its job step. Indices are 0-based, as Slurm gives them."""

    __slots__ = (
        "cuda_visible_devices",
        "distribution",
        "gpus_on_node",
        "gpus_per_task",
        "job_id",
        "local_rank",
        "node_index",
        "node_name",
        "node_ranks",
        "nodes",
        "num_tasks",
        "plane_size",
        "rank",
        "rocr_visible_devices",
        "step_id",
        "tasks_per_node",
    )

    def __init__(
        self,
        job_id: int,
        step_id: str,
        rank: int,
        local_rank: int,
        node_index: int,
        num_tasks: int,
        nodes: tuple[str, ...],
        tasks_per_node: tuple[int, ...],
        node_name: str | None,
        distribution: str | None,
        plane_size: int | None,
        node_ranks: tuple[int, ...] | None,
        cuda_visible_devices: tuple[str, ...] | None,
        gpus_per_task: int | None,
        gpus_on_node: int | None,
        rocr_visible_devices: tuple[str, ...] | None = None,
    ) -> None:
        self.job_id: Final = job_id
        self.step_id: Final = step_id
        self.rank: Final = rank  # SLURM_PROCID: the task's rank in the step
        self.local_rank: Final = local_rank  # SLURM_LOCALID: the task's index among the step's tasks on its node
        self.node_index: Final = node_index  # SLURM_NODEID: the task's node, as an index into ``nodes``
        self.num_tasks: Final = num_tasks
        self.nodes: Final = nodes  # the step's nodes, in Slurm's order
        self.tasks_per_node: Final = tasks_per_node  # parallel to ``nodes``
        self.node_name: Final = node_name  # SLURMD_NODENAME, to cross-check ``nodes[node_index]``
        self.distribution: Final = distribution  # SLURM_DISTRIBUTION, e.g. "block", "cyclic", "plane"
        self.plane_size: Final = plane_size  # SLURM_DIST_PLANESIZE
        self.node_ranks: Final = node_ranks  # SLURM_GTIDS: the ranks of the step on this node
        self.cuda_visible_devices: Final = cuda_visible_devices  # None when unset; () when empty
        # AMD GPUs: Slurm sets ROCR_VISIBLE_DEVICES instead (gres.conf Flags=amd_gpu_env, AutoDetect=rsmi)
        self.rocr_visible_devices: Final = rocr_visible_devices
        self.gpus_per_task: Final = gpus_per_task  # SLURM_GPUS_PER_TASK (srun --gpus-per-task)
        self.gpus_on_node: Final = gpus_on_node  # SLURM_GPUS_ON_NODE

    @property
    def node(self) -> str:
        return self.nodes[self.node_index]

    @property
    def tasks_on_node(self) -> int:
        return self.tasks_per_node[self.node_index]


def read_slurm_step(environ: Mapping[str, str]) -> SlurmStep:
    """Build the view, checking that the variables agree with each other."""
    env = _Env(environ)
    if "SLURM_JOB_ID" not in environ:
        raise RuntimeSetupError("not inside a Slurm job: SLURM_JOB_ID is not set", hint=_RUN_UNDER_SRUN)
    if "SLURM_STEP_NODELIST" not in environ or "SLURM_STEP_TASKS_PER_NODE" not in environ:
        raise RuntimeSetupError(
            "not inside a Slurm job step: SLURM_STEP_NODELIST/SLURM_STEP_TASKS_PER_NODE are not set",
            hint=_RUN_UNDER_SRUN,
        )
    nodes = tuple(env.parsed("SLURM_STEP_NODELIST", expand_hostlist))
    tasks_per_node = tuple(env.parsed("SLURM_STEP_TASKS_PER_NODE", expand_tasks_per_node))
    num_tasks = env.optional_count("SLURM_STEP_NUM_TASKS")
    if num_tasks is None:
        num_tasks = sum(tasks_per_node)
    step = SlurmStep(
        job_id=env.count("SLURM_JOB_ID"),
        step_id=env.text("SLURM_STEP_ID"),
        rank=env.count("SLURM_PROCID"),
        local_rank=env.count("SLURM_LOCALID"),
        node_index=env.count("SLURM_NODEID"),
        num_tasks=num_tasks,
        nodes=nodes,
        tasks_per_node=tasks_per_node,
        node_name=environ.get("SLURMD_NODENAME") or None,
        distribution=environ.get("SLURM_DISTRIBUTION") or None,
        plane_size=env.optional_count("SLURM_DIST_PLANESIZE"),
        node_ranks=env.optional_parsed("SLURM_GTIDS", _int_tuple),
        cuda_visible_devices=_device_list(environ.get("CUDA_VISIBLE_DEVICES")),
        rocr_visible_devices=_device_list(environ.get("ROCR_VISIBLE_DEVICES")),
        gpus_per_task=env.optional_parsed("SLURM_GPUS_PER_TASK", _gpu_count),
        gpus_on_node=env.optional_count("SLURM_GPUS_ON_NODE"),
    )
    _check_consistent(step, environ)
    return step


def _check_consistent(step: SlurmStep, environ: Mapping[str, str]) -> None:
    def fail(message: str) -> RuntimeSetupError:
        shown = {key: environ.get(key) for key in _LAYOUT_VARIABLES if key in environ}
        return RuntimeSetupError(f"inconsistent Slurm environment: {message} ({shown})")

    if len(step.nodes) != len(step.tasks_per_node):
        raise fail(f"{len(step.nodes)} step nodes but {len(step.tasks_per_node)} task counts")
    if "SLURM_STEP_NUM_NODES" in environ and _Env(environ).count("SLURM_STEP_NUM_NODES") != len(step.nodes):
        raise fail("SLURM_STEP_NUM_NODES does not match SLURM_STEP_NODELIST")
    if sum(step.tasks_per_node) != step.num_tasks:
        raise fail(f"the task counts add up to {sum(step.tasks_per_node)}, not {step.num_tasks}")
    if not 0 <= step.rank < step.num_tasks:
        raise fail(f"rank {step.rank} is outside 0..{step.num_tasks - 1}")
    if not 0 <= step.node_index < len(step.nodes):
        raise fail(f"node index {step.node_index} is outside the step's {len(step.nodes)} nodes")
    if not 0 <= step.local_rank < step.tasks_on_node:
        raise fail(f"local rank {step.local_rank} but only {step.tasks_on_node} tasks on node {step.node}")
    if step.node_name is not None and step.node_name != step.node:
        raise fail(f"this is node {step.node_name} but node index {step.node_index} names {step.node}")


_LAYOUT_VARIABLES = (
    "SLURM_STEP_NODELIST",
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_STEP_NUM_NODES",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_PROCID",
    "SLURM_NODEID",
    "SLURM_LOCALID",
    "SLURMD_NODENAME",
)


def _device_list(value: str | None) -> tuple[str, ...] | None:
    """CUDA_/ROCR_VISIBLE_DEVICES values, kept as strings (they may be UUIDs or MIG names)."""
    if value is None:
        return None
    # Slurm writes NoDevFiles when a GPU gres has no device files behind it.
    if value.strip() in ("", "NoDevFiles"):
        return ()
    return tuple(item.strip() for item in value.split(","))


def _gpu_count(value: str) -> int:
    """``--gpus-per-task`` is ``N`` or ``type:N``."""
    return _natural(value.rpartition(":")[2])


def _int_tuple(value: str) -> tuple[int, ...]:
    return tuple(_natural(item) for item in value.split(","))


def _natural(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


class _Env:
    """Typed reads from the mapping; errors name the variable and its value."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, key: str) -> str:
        value = self._environ.get(key)
        if value is None:
            raise RuntimeSetupError(f"{key} is not set", hint=_RUN_UNDER_SRUN)
        return value

    def count(self, key: str) -> int:
        return self.parsed(key, _natural)

    def optional_count(self, key: str) -> int | None:
        return self.optional_parsed(key, _natural)

    def parsed(self, key: str, parse: Callable[[str], _T]) -> _T:
        value = self.text(key)
        try:
            return parse(value)
        except ValueError as err:
            raise RuntimeSetupError(f"{key}={value!r} cannot be read: {err}") from err

    def optional_parsed(self, key: str, parse: Callable[[str], _T]) -> _T | None:
        if not self._environ.get(key):
            return None
        return self.parsed(key, parse)
