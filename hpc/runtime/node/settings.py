"""The runtime part of a resolved job (``resolved.json`` → ``"runtime"``), as a frozen object.

The one declaration of the runtime settings and their defaults: the job spec (hpc/spec/model.py)
takes its defaults and the port-range rule from here, resolve (``RuntimePlan``) writes exactly these
keys, and tests/unit/test_runtime_settings.py fails the moment the three disagree.

The file may come from a newer hpc-tf than this copy of the runtime: unknown keys are
ignored, missing keys take the defaults below, wrong types are errors that name the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from ._errors import RuntimeSetupError
from .hook_config import CHECKPOINT_DIR_VARIABLE
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, Literal, TypeVar

    Strategy = Literal["multi_worker_mirrored", "mirrored", "none"]
    GpuBinding = Literal["task", "node", "slurm"]
    _Choice = TypeVar("_Choice", bound=str)

STRATEGIES: tuple[Strategy, ...] = ("multi_worker_mirrored", "mirrored", "none")
# task: each task sees its own share; node: every task sees all its node's GPUs (the script picks by
# local rank); slurm: the variables exactly as Slurm set them (srun --gpu-bind=... decides)
GPU_BINDINGS: tuple[GpuBinding, ...] = ("task", "node", "slurm")

# Below Linux's ephemeral range (32768-60999), so outgoing connections never hold our ports.
DEFAULT_PORT_RANGE = (20000, 29999)
# One port is a range too (one task per node); tf_config.task_port says when a range is too small.
PORT_RANGE_RULE = "[low, high] with 1024 <= low <= high <= 65535"




def checkpoint_dir(settings: RuntimeSettings, environ: Mapping[str, str]) -> str | None:
    return environ.get(CHECKPOINT_DIR_VARIABLE) or settings.checkpoint_dir


def valid_port_range(low: int, high: int) -> bool:
    return 1024 <= low <= high <= 65535


class RuntimeSettings(Record):
    __slots__ = (
        "checkpoint_dir",
        "checkpoint_every_steps",
        "checkpoint_keep",
        "coordination_timeout_s",
        "gpu_allocator",
        "gpu_binding",
        "gpus_per_node",
        "gpus_per_task",
        "keras_mwms_fix",
        "max_restarts",
        "memory_growth",
        "metrics",
        "metrics_every_steps",
        "metrics_tensorboard",
        "port_range",
        "preemption",
        "strategy",
    )

    def __init__(
        self,
        gpus_per_task: int | None = None,
        gpus_per_node: int | None = None,
        port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
        # TF's own default is one hour; a job whose peer never starts should fail long before.
        coordination_timeout_s: int = 300,
        # TF otherwise reserves nearly all memory of every GPU it sees at its first op: a second
        # process on the same GPU (tasks sharing GPUs, a helper or eval process) then fails to start.
        memory_growth: bool = True,
        gpu_allocator: str | None = None,
        strategy: Strategy = "multi_worker_mirrored",
        keras_mwms_fix: bool = True,
        # checkpoints and preemption (preemption.py); no checkpoint_dir: neither
        checkpoint_dir: str | None = None,
        checkpoint_every_steps: int | None = None,
        checkpoint_keep: int = 3,
        preemption: bool = False,
        max_restarts: int = 3,
        gpu_binding: GpuBinding = "task",
        # what model.fit logs, into <run_dir>/metrics.jsonl (metrics.py); every N steps too when set
        metrics: bool = True,
        metrics_every_steps: int | None = None,
        # the same values as TensorBoard event files too, under <run_dir>/tensorboard (tensorboard.py)
        metrics_tensorboard: bool = False,
    ) -> None:
        self.gpus_per_task: Final = gpus_per_task
        self.gpus_per_node: Final = gpus_per_node
        self.port_range: Final = port_range
        self.coordination_timeout_s: Final = coordination_timeout_s
        self.memory_growth: Final = memory_growth
        self.gpu_allocator: Final = gpu_allocator
        self.strategy: Final = strategy
        self.keras_mwms_fix: Final = keras_mwms_fix
        self.checkpoint_dir: Final = checkpoint_dir
        self.checkpoint_every_steps: Final = checkpoint_every_steps
        self.checkpoint_keep: Final = checkpoint_keep
        self.preemption: Final = preemption
        self.max_restarts: Final = max_restarts
        self.gpu_binding: Final = gpu_binding
        self.metrics: Final = metrics
        self.metrics_every_steps: Final = metrics_every_steps
        self.metrics_tensorboard: Final = metrics_tensorboard


def load_settings(path: str | os.PathLike[str]) -> RuntimeSettings:
    """Read ``path`` (a resolved job) and return its runtime settings."""
    return settings_from_mapping(read_resolved(path)[1], source=os.fspath(path))


def read_resolved(path: str | os.PathLike[str]) -> tuple[dict[str, object], dict[str, object]]:
    """The resolved job at ``path`` (a JSON object) and its ``runtime`` object (default ``{}``)."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as file:
            document = json.load(file)
    except OSError as err:
        raise RuntimeSetupError(f"cannot read the resolved job {source}: {err.strerror}") from err
    except (ValueError, RecursionError) as err:  # RecursionError: nested deeper than json can follow
        raise RuntimeSetupError(f"the resolved job {source} is not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise RuntimeSetupError(f"the resolved job {source} is not a JSON object")
    runtime = document.get("runtime", {})
    if not isinstance(runtime, dict):
        raise RuntimeSetupError(f"{source}: runtime: expected an object")
    return document, runtime


def settings_from_mapping(runtime: Mapping[str, object], *, source: str = "runtime") -> RuntimeSettings:
    reader = _Reader(runtime, source)
    defaults = RuntimeSettings()
    low, high = reader.port_range("port_range", defaults.port_range)
    return RuntimeSettings(
        gpus_per_task=reader.optional_count("gpus_per_task"),
        gpus_per_node=reader.optional_count("gpus_per_node"),
        port_range=(low, high),
        coordination_timeout_s=reader.positive_int("coordination_timeout_s", defaults.coordination_timeout_s),
        memory_growth=reader.boolean("memory_growth", defaults.memory_growth),
        gpu_allocator=reader.optional_text("gpu_allocator"),
        strategy=reader.choice("strategy", defaults.strategy, STRATEGIES),
        keras_mwms_fix=reader.boolean("keras_mwms_fix", defaults.keras_mwms_fix),
        checkpoint_dir=reader.optional_text("checkpoint_dir"),
        checkpoint_every_steps=reader.optional_count("checkpoint_every_steps") or None,
        checkpoint_keep=reader.positive_int("checkpoint_keep", defaults.checkpoint_keep),
        preemption=reader.boolean("preemption", defaults.preemption),
        max_restarts=reader.count("max_restarts", defaults.max_restarts),
        gpu_binding=reader.choice("gpu_binding", defaults.gpu_binding, GPU_BINDINGS),
        metrics=reader.boolean("metrics", defaults.metrics),
        metrics_every_steps=reader.optional_count("metrics_every_steps") or None,
        metrics_tensorboard=reader.boolean("metrics_tensorboard", defaults.metrics_tensorboard),
    )


class _Reader:
    """Typed access to the runtime object; every error names ``source: runtime.<key>``."""

    def __init__(self, runtime: Mapping[str, object], source: str) -> None:
        self._runtime = runtime
        self._source = source

    def _fail(self, key: str, expected: str) -> RuntimeSetupError:
        value = json.dumps(self._runtime.get(key))
        return RuntimeSetupError(f"{self._source}: runtime.{key}: expected {expected}, got {value}")

    def optional_count(self, key: str) -> int | None:
        value = self._runtime.get(key)
        if value is None:
            return None
        # bool is an int in Python; true/false here is a mistake, not 1/0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, "a whole number >= 0 or null")
        return value

    def count(self, key: str, default: int) -> int:
        value = self._runtime.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, "a whole number >= 0")
        return value

    def positive_int(self, key: str, default: int) -> int:
        value = self._runtime.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self._fail(key, "a whole number > 0")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._runtime.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self._runtime.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value or "\0" in value or "\n" in value:
            raise self._fail(key, "a non-empty single-line string or null")
        return value

    def choice(self, key: str, default: _Choice, choices: tuple[_Choice, ...]) -> _Choice:
        value = self._runtime.get(key, default)
        for choice in choices:
            if value == choice:
                return choice
        raise self._fail(key, "one of " + ", ".join(choices))

    def port_range(self, key: str, default: tuple[int, int]) -> tuple[int, int]:
        value = self._runtime.get(key, list(default))
        if (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(port, int) and not isinstance(port, bool) for port in value)
        ):
            low, high = value
            if valid_port_range(low, high):
                return low, high
        raise self._fail(key, PORT_RANGE_RULE)
