"""The settings of the in-process hooks, as they travel from the bootstrap in HPC_TF_HOOKS.

The bootstrap writes them (task_env.py); hooks.py and preemption.py read them inside the
user's process. Kept apart from that code so the bootstrap imports none of it.
"""

from __future__ import annotations

import json
import os

from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Final

HOOKS_VARIABLE = "HPC_TF_HOOKS"
RUN_DIR_VARIABLE = "HPC_TF_RUN_DIR"  # set in every task of an hpc-tf job (the batch script, a function's set-up)
METRICS_FILE = "metrics.jsonl"  # in the run directory (RunPaths.metrics in the library)
TENSORBOARD_DIR = "tensorboard"  # beside the metrics file (RunPaths.tensorboard)
# A task's own files where it shares its run directory with others (the array tasks of a campaign stage:
# hpc/campaign/plan.py sets them per task): the hooks of its process use them instead (HookConfig.for_task).
METRICS_FILE_VARIABLE = "HPC_TF_METRICS_FILE"
# the checkpoint directory as the batch script expanded it for every job (resolved.json holds it as written,
# with any ${NAME} references; hpc.text): the runtime prefers it to runtime.checkpoint_dir (settings.py)
CHECKPOINT_DIR_VARIABLE = "HPC_TF_CHECKPOINT_DIR"


class PreemptionConfig(Record):
    """The ``preemption`` part of HPC_TF_HOOKS."""

    __slots__ = ("checkpoint_dir", "every_steps", "handle_signals", "keep")

    def __init__(self, checkpoint_dir: str, every_steps: int | None, keep: int, handle_signals: bool) -> None:
        self.checkpoint_dir: Final = checkpoint_dir
        self.every_steps: Final = every_steps  # periodic checkpoints; None: only when warned
        self.keep: Final = keep
        self.handle_signals: Final = handle_signals  # USR1/TERM -> agreed checkpoint -> exit REQUEUE_EXIT_CODE

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreemptionConfig:
        every = data.get("every_steps")
        return cls(
            checkpoint_dir=str(data["checkpoint_dir"]),
            every_steps=None if every is None else int(every),
            keep=int(data.get("keep", 3)),
            handle_signals=bool(data.get("handle_signals", True)),
        )


class MetricsConfig(Record):
    """The ``metrics`` part of HPC_TF_HOOKS: given to the chief's process only (metrics.py)."""

    __slots__ = ("every_steps", "path", "tensorboard")

    def __init__(self, path: str, every_steps: int | None = None, tensorboard: bool = False) -> None:
        self.path: Final = path  # <run_dir>/metrics.jsonl
        self.every_steps: Final = every_steps  # a step row every N steps; None: epochs only
        self.tensorboard: Final = tensorboard  # event files too, in TENSORBOARD_DIR beside ``path``

    @property
    def tensorboard_dir(self) -> str | None:
        return os.path.join(os.path.dirname(self.path), TENSORBOARD_DIR) if self.tensorboard else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricsConfig:
        every = data.get("every_steps")
        return cls(path=str(data["path"]), every_steps=None if every is None else int(every),
                   tensorboard=bool(data.get("tensorboard", False)))


class HookConfig(Record):
    __slots__ = ("coordination_timeout_s", "keras_mwms_fix", "metrics", "preemption", "worker_nodes")

    def __init__(
        self,
        coordination_timeout_s: int,
        keras_mwms_fix: bool,
        worker_nodes: tuple[str, ...],
        preemption: PreemptionConfig | None = None,
        metrics: MetricsConfig | None = None,
    ) -> None:
        self.coordination_timeout_s: Final = coordination_timeout_s
        self.keras_mwms_fix: Final = keras_mwms_fix
        self.worker_nodes: Final = worker_nodes  # the Slurm node of each worker, index = rank
        self.preemption: Final = preemption  # checkpoints, resume, Slurm's warning
        self.metrics: Final = metrics  # record what model.fit logs (the chief only)

    def for_task(self, environ: Mapping[str, str]) -> HookConfig:
        """This configuration in one task's process: its own metrics file and checkpoint directory
        where the environment names them (METRICS_FILE_VARIABLE, CHECKPOINT_DIR_VARIABLE)."""
        metrics, preemption = self.metrics, self.preemption
        if metrics is not None and environ.get(METRICS_FILE_VARIABLE):
            metrics = MetricsConfig(environ[METRICS_FILE_VARIABLE], metrics.every_steps, metrics.tensorboard)
        if preemption is not None and environ.get(CHECKPOINT_DIR_VARIABLE):
            preemption = PreemptionConfig(environ[CHECKPOINT_DIR_VARIABLE], preemption.every_steps, preemption.keep,
                                          preemption.handle_signals)
        return HookConfig(self.coordination_timeout_s, self.keras_mwms_fix, self.worker_nodes, preemption, metrics)

    def to_json(self) -> str:
        # the tuple of nodes becomes a list; the nested PreemptionConfig its to_dict()
        return json.dumps(self.to_dict(), default=Record.to_dict, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> HookConfig:
        data = json.loads(text)
        return cls(
            coordination_timeout_s=int(data["coordination_timeout_s"]),
            keras_mwms_fix=bool(data["keras_mwms_fix"]),
            worker_nodes=tuple(str(node) for node in data["worker_nodes"]),
            preemption=None if data.get("preemption") is None else PreemptionConfig.from_dict(data["preemption"]),
            metrics=None if data.get("metrics") is None else MetricsConfig.from_dict(data["metrics"]),
        )
