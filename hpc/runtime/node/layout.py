"""Where every rank of a job step runs: rank → (node index, local rank).

TF_CONFIG needs the address of every worker, but a task only sees its own placement
(SLURM_PROCID, SLURM_NODEID, SLURM_LOCALID). Slurm places ranks with a deterministic
rule from the step's per-node task counts and the distribution (slurm_step_layout.c):

* block  – node 0 gets ranks 0..n0-1, node 1 the next n1, ... (Slurm's default)
* cyclic – one rank per node per round, skipping nodes that are full
* plane=P – P consecutive ranks per node per round, skipping nodes that are full

All three are "plane" with P = ∞, 1 and P. A node's local ranks are its ranks in
increasing order, so local rank k on a node is that node's k-th smallest rank.

Why this is safe rather than a guess: every task computes the same table from the
same step-wide variables, then checks its own row against what Slurm told it (its
node, its local rank, and SLURM_GTIDS — all ranks on its node — where set). Each rank
is checked by the one task that holds it, so if no task complains, every row is right;
if the rule does not match (``--distribution=arbitrary``, a future Slurm), the task
whose row is wrong stops with an error instead of handing TensorFlow a wrong address.
Hostnames are never sorted: node i is the i-th entry of SLURM_STEP_NODELIST.
"""

from __future__ import annotations

from ._errors import RuntimeSetupError
from .record import Record
from .slurm_env import SlurmStep

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final


class Placement(Record):
    __slots__ = ("local_rank", "node_index")

    def __init__(self, node_index: int, local_rank: int) -> None:
        self.node_index: Final = node_index
        self.local_rank: Final = local_rank


def rank_layout(tasks_per_node: tuple[int, ...], plane: int | None) -> tuple[Placement, ...]:
    """Placement of rank r at index r. ``plane`` None = block, 1 = cyclic, P = plane=P."""
    placements: list[Placement] = []
    if plane is None:
        for node_index, count in enumerate(tasks_per_node):
            placements.extend(Placement(node_index, local) for local in range(count))
        return tuple(placements)
    if plane < 1:
        raise ValueError(f"plane size must be >= 1, got {plane}")
    for start in range(0, max(tasks_per_node, default=0), plane):
        for node_index, count in enumerate(tasks_per_node):
            stop = min(start + plane, count)
            placements.extend(Placement(node_index, local) for local in range(start, stop))
    return tuple(placements)


def step_layout(step: SlurmStep) -> tuple[Placement, ...]:
    """The layout of ``step``, checked against this task's own placement (see module doc)."""
    layout = rank_layout(step.tasks_per_node, _plane_size(step))
    mine = Placement(step.node_index, step.local_rank)
    if layout[step.rank] != mine:
        raise _mismatch(step, f"rank {step.rank} should be {layout[step.rank]} but Slurm placed it at {mine}")
    if step.node_ranks is not None:
        expected = tuple(rank for rank, where in enumerate(layout) if where.node_index == step.node_index)
        if tuple(sorted(step.node_ranks)) != expected:
            detail = f"node {step.node} should hold ranks {expected}, SLURM_GTIDS says {step.node_ranks}"
            raise _mismatch(step, detail)
    return layout


def _plane_size(step: SlurmStep) -> int | None:
    # "block:cyclic,Pack": the part before ':' places tasks on nodes, the rest is per-socket.
    distribution = (step.distribution or "block").split(",")[0].split(":")[0].strip().lower()
    if distribution in ("block", "*", ""):
        return None
    if distribution == "cyclic":
        return 1
    if distribution.startswith("plane"):
        size = distribution.partition("=")[2] or (str(step.plane_size) if step.plane_size else "")
        if size.isdigit() and int(size) > 0:
            return int(size)
        raise RuntimeSetupError(f"SLURM_DISTRIBUTION={step.distribution!r} without a plane size")
    raise RuntimeSetupError(
        f"cannot tell where the ranks of a step with SLURM_DISTRIBUTION={step.distribution!r} run",
        hint="use --distribution=block (the default), cyclic or plane=N",
    )


def _mismatch(step: SlurmStep, detail: str) -> RuntimeSetupError:
    return RuntimeSetupError(
        f"the rank layout derived from SLURM_STEP_TASKS_PER_NODE and SLURM_DISTRIBUTION "
        f"({step.distribution or 'block'}) does not match Slurm's placement: {detail}",
        hint="use --distribution=block (the default), cyclic or plane=N",
    )
