"""Training metrics from the user's process into ``<run_dir>/metrics.jsonl`` (the chief's only).

The file is JSON Lines, one row per epoch (and per N steps when the job asks), appended and never
rewritten, so a crash leaves at most a partial last line, which readers ignore. Every row has the
same keys, null where unknown::

    {"v": 1, "kind": "epoch", "epoch": 0, "step": 32, "epochs": 3, "steps": 96,
     "values": {"loss": 0.41, "val_loss": 0.5, "learning_rate": 0.001}, "time": 1796474620.07,
     "attempt": 0, "job": "1234"}

``epoch`` counts from 0 as Keras does, ``step`` is the global step, ``epochs``/``steps`` the totals
planned, ``attempt`` the job's restart count (a requeued run trains some epochs again; readers keep
the newest attempt's rows, see hpc/metrics). Non-finite values are written as null.

Two ways in, one writer:

* ``model.fit`` needs no code: :func:`apply` (a post-import hook, hooks.py) adds a callback, last
  in the user's list, that records the logs Keras hands every callback (History records the
  same dict), plus the optimizer's learning rate when the logs do not already hold one;
* a custom loop calls ``from hpc_tf_runtime.metrics import log`` ; ``log(step=..., epoch=...,
  loss=...)``: a no-op outside hpc-tf and on the workers that are not the chief (the bootstrap
  gives only task 0 a metrics file, task_env.py).

Standard library only; the callback class is built from Keras' own base once Keras is imported.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import json
import math
import os
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from .hook_config import METRICS_FILE as METRICS_FILE
from .hook_config import MetricsConfig
from .keras_resume import add_callback
from .preemption import crossed_save_point
from .preemption import log as say
from .requeue import restart_count
from .tensorboard import EventWriter

FORMAT_VERSION = 1
LEARNING_RATE = "learning_rate"  # the key Keras' own callbacks (ReduceLROnPlateau, ...) log it under


class MetricsWriter:
    """Appends rows to one metrics file: each row one ``os.write`` of a whole line (O_APPEND).

    A failure to write never stops training: it is said once on stderr and the writer goes quiet.
    ``events``: where the same rows go as TensorBoard events too (tensorboard.py), if asked for.
    """

    def __init__(self, path: str, *, attempt: int, job: str, events: EventWriter | None = None) -> None:
        self.path = path
        self.attempt = attempt
        self.job = job
        self.events = events
        self._fd: int | None = None
        self._broken = False

    def write(self, kind: str, values: Mapping[str, float | None], *, epoch: int | None = None,
              step: int | None = None, epochs: int | None = None, steps: int | None = None,
              sync: bool = False) -> None:
        if self.events is not None:
            self.events.write(kind, values, epoch=epoch, step=step)
        if self._broken:
            return
        row = {"v": FORMAT_VERSION, "kind": kind, "epoch": epoch, "step": step, "epochs": epochs, "steps": steps,
               "values": dict(values), "time": time.time(), "attempt": self.attempt, "job": self.job}
        line = (json.dumps(row, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            if os.write(self._fd, line) != len(line):
                raise OSError(0, "short write (disk full?)")
            if sync:
                os.fsync(self._fd)
        except OSError as err:
            self._broken = True
            say(f"cannot write metrics to {self.path}: {err.strerror or err}; training goes on without them")

    def sync(self) -> None:
        if self._fd is not None and not self._broken:
            with contextlib.suppress(OSError):  # a failure to write was said already
                os.fsync(self._fd)


_config: MetricsConfig | None = None
_writer: MetricsWriter | None = None


def install(config: MetricsConfig) -> None:
    """Called at interpreter start-up (hooks.py): this process records metrics into ``config.path``."""
    global _config, _writer
    _config = config
    events = EventWriter(config.tensorboard_dir) if config.tensorboard_dir is not None else None
    _writer = MetricsWriter(config.path, attempt=restart_count(os.environ), job=os.environ.get("SLURM_JOB_ID", ""),
                            events=events)


def log(step: int | None = None, epoch: int | None = None, *, epochs: int | None = None,
        steps: int | None = None, **values: object) -> None:
    """Record ``values`` (numbers: Python, NumPy or TensorFlow scalars) for a custom training loop.

    A row with ``epoch`` and no ``step`` is an epoch row, any other a step row; ``epochs`` and
    ``steps`` are the planned totals, for progress. Does nothing outside an hpc-tf job and on every
    worker but the chief, so the same script runs anywhere.
    """
    if _writer is None:
        return
    numbers: dict[str, float | None] = {}
    for name, value in values.items():
        try:
            numbers[name] = _number(value)
        except ValueError:
            raise TypeError(f"hpc_tf_runtime.metrics.log: {name}={value!r} is not a number "
                            "(pass floats, ints or scalar tensors)") from None
    kind = "epoch" if step is None and epoch is not None else "step"
    _writer.write(kind, numbers, epoch=epoch, step=step, epochs=epochs, steps=steps, sync=kind == "epoch")


def _number(value: object) -> float | None:
    """``value`` as a finite float, None when NaN or infinite; ValueError when it is not a number."""
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise ValueError(value)
    try:
        number = float(value)  # type: ignore[arg-type]
    except TypeError:
        to_numpy = getattr(value, "numpy", None)  # a variable created under a strategy has no __float__
        if to_numpy is None:
            raise ValueError(value) from None
        return _number(to_numpy())
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------- model.fit

TRAINER_MODULE = "keras.src.backend.tensorflow.trainer"


def apply(trainer: ModuleType) -> None:
    """Wrap the just-imported trainer module's ``fit`` so each call records its logs (a post-import hook)."""
    config, writer = _config, _writer
    if config is None or writer is None:
        return
    cls = trainer.TensorFlowTrainer
    original = cls.fit
    signature = inspect.signature(original)
    callback_base = importlib.import_module("keras.src.callbacks.callback").Callback
    callback_list = importlib.import_module("keras.src.callbacks.callback_list").CallbackList
    recorder = _recorder_class(callback_base)

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        add_callback(bound, recorder(writer, config.every_steps), self, callback_list, first=False)
        return original(*bound.args, **bound.kwargs)

    cls.fit = fit


def _recorder_class(base: type) -> type:
    class HpcTfMetrics(base):  # type: ignore[misc]
        """Records what ``fit`` logs; reads the model, never changes it or the logs."""

        def __init__(self, writer: MetricsWriter, every_steps: int | None) -> None:
            super().__init__()
            self.writer = writer
            self.every_steps = every_steps
            self.last_step = 0
            self.epoch: int | None = None

        def _totals(self) -> tuple[int | None, int | None]:
            params = getattr(self, "params", None) or {}
            epochs, steps = params.get("epochs"), params.get("steps")
            epochs = epochs if isinstance(epochs, int) else None
            return epochs, steps * epochs if isinstance(steps, int) and epochs is not None else None

        def _step(self) -> int | None:
            try:
                step = _number(self.model.optimizer.iterations)
            except (AttributeError, ValueError):  # no optimizer, or one without a step counter
                return None
            return None if step is None else int(step)

        def on_train_begin(self, logs: Any = None) -> None:
            self.last_step = self._step() or 0

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if not self.every_steps or not logs:  # a step skipped on resume has no logs
                return
            step = self._step()
            if step is None or not crossed_save_point(self.last_step, step, self.every_steps):
                return
            self.last_step = step
            epochs, steps = self._totals()
            self.writer.write("step", _finite(logs), epoch=self.epoch, step=step, epochs=epochs, steps=steps)

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch = epoch

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            values = _finite(logs or {})
            if LEARNING_RATE not in values:  # the optimizer's current rate (after any schedule), if it has one
                values.update(_finite({LEARNING_RATE: getattr(self.model.optimizer, LEARNING_RATE, None)}))
            epochs, steps = self._totals()
            self.writer.write("epoch", values, epoch=epoch, step=self._step(), epochs=epochs, steps=steps, sync=True)

        def on_train_end(self, logs: Any = None) -> None:
            self.writer.sync()

    return HpcTfMetrics


def _finite(logs: Mapping[str, object]) -> dict[str, float | None]:
    """The numbers among ``logs`` (a callback may log something else: it is left out)."""
    numbers: dict[str, float | None] = {}
    for name, value in logs.items():
        with contextlib.suppress(ValueError):
            numbers[name] = _number(value)
    return numbers
