"""Checkpoints and exact resume for an unmodified Keras 3 ``model.fit`` (a post-import hook).

When the job has checkpointing or preemption on, ``TensorFlowTrainer.fit`` is wrapped so each
call runs with one more callback, first in the list, and with its train function wrapped:

* ``on_train_begin`` (the model and optimizer are built by then): find the newest complete
  checkpoint every worker agrees on; if it was taken during this fit call, restore the model,
  the optimizer and the position, start at the saved epoch (``model._initial_epoch``, the hook
  Keras' own BackupAndRestore uses) and skip the steps of that epoch already done;
* before every training step (the wrapped train function, right after
  ``on_train_batch_begin``: the lab notes §4 found ``on_train_batch_end`` off by one): a
  periodic checkpoint when one is due, then the preemption check, which saves at the step all
  workers agreed on and exits for the requeue;
* skipped steps draw their batches from the input iterator without training, so the data
  position after a resume is where it was (exact when the input order is deterministic, e.g.
  with ``keras.utils.set_random_seed``; Keras reuses the same shuffle order every epoch then).

The wrapper depends on how Keras' fit loop calls the callbacks and the train function, so it
checks the loop's source once and refuses, loudly, to wire itself into a loop it does not know.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import itertools
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

from . import preemption
from ._errors import RuntimeSetupError
from .hook_config import PreemptionConfig
from .preemption import CheckpointStore, Cluster, Position, crossed_save_point, log, restore_action

TRAINER_MODULE = "keras.src.backend.tensorflow.trainer"

# What TensorFlowTrainer.fit must contain for the resume to be exact.
FIT_LOOP_LANDMARKS = (
    "initial_epoch = self._initial_epoch or initial_epoch",
    "callbacks.on_train_batch_begin(begin_step)",
    "logs = self.train_function(iterator)",
)

_fit_calls = itertools.count()
_resumed: weakref.WeakSet[Any] = weakref.WeakSet()  # models whose running fit call restored a checkpoint


def resumed(model: Any) -> bool:
    """Whether ``model``'s running fit call resumed from an hpc-tf checkpoint (exact to the step)."""
    return model in _resumed


def check_fit_loop(fit: Callable[..., Any], version: str) -> None:
    try:
        source = inspect.getsource(fit)
    except (OSError, TypeError):
        log(f"cannot read Keras {version}'s fit loop to check it; resuming as for Keras 3.15")
        return
    missing = [landmark for landmark in FIT_LOOP_LANDMARKS if landmark not in source]
    if missing:
        raise RuntimeSetupError(
            f"Keras {version}'s fit loop is not the one hpc-tf's checkpoint resume was built for "
            f"(missing: {'; '.join(missing)})",
            hint="pin a Keras 3 version hpc-tf supports, or turn checkpoint.every_steps and preemption off",
        )


def apply(trainer: ModuleType, *, config: PreemptionConfig) -> None:
    """Wrap the just-imported trainer module's ``fit`` (a post-import hook)."""
    version = importlib.import_module("keras.src.version").__version__
    cls = trainer.TensorFlowTrainer
    original = cls.fit
    check_fit_loop(original, version)
    signature = inspect.signature(original)
    callback_base = importlib.import_module("keras.src.callbacks.callback").Callback
    callback_list = importlib.import_module("keras.src.callbacks.callback_list").CallbackList

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        resume = FitResume(self, config, fit_call=next(_fit_calls))
        add_callback(bound, resume.callback(callback_base), self, callback_list, first=True)
        try:
            return original(*bound.args, **bound.kwargs)
        finally:
            resume.finish()

    cls.fit = fit


def add_callback(bound: inspect.BoundArguments, callback: Any, model: Any, callback_list: Any, *, first: bool) -> None:
    """Add ``callback`` to the ``callbacks`` argument of a bound ``fit`` call, first or last in the
    user's list (a list, or a CallbackList the user built)."""
    given = bound.arguments.get("callbacks")
    if isinstance(given, callback_list):
        given.callbacks.insert(0 if first else len(given.callbacks), callback)
        callback.set_model(model)
    else:
        given = list(given or [])
        bound.arguments["callbacks"] = [callback, *given] if first else [*given, callback]


class FitResume:
    """The state of one ``fit`` call: restore at its start, skip, save, watch for the warning."""

    def __init__(self, model: Any, config: PreemptionConfig, *, fit_call: int) -> None:
        self.model = model
        self.config = config
        self.fit_call = fit_call
        self.epoch = 0
        self.batch = 0
        self.global_step = 0
        self.saving = True
        self.resume_at: Position | None = None
        self.extra_to_skip = 0
        self.last_saved = 0
        self.store: CheckpointStore | None = None
        self.coordinator: preemption.Coordinator | None = None
        self._original_train_function: Any = None
        self._iterator: Any = None
        self._consumed = 0

    def callback(self, base: type) -> Any:
        resume = self

        class HpcTfCheckpointResume(base):  # type: ignore[misc]
            def on_train_begin(self, logs: Any = None) -> None:
                resume.begin()

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                resume.epoch = epoch

            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                resume.batch = batch

            def on_train_end(self, logs: Any = None) -> None:
                resume.finish()

        return HpcTfCheckpointResume()

    # ------------------------------------------------------------ fit start

    def begin(self) -> None:
        model = self.model
        strategy = model.distribute_strategy
        cluster = Cluster.of(strategy)
        self.coordinator = preemption.coordinator(strategy, self.config)
        self.store = CheckpointStore(self.config, cluster, {"model": model, "optimizer": model.optimizer})
        found = self.store.newest(f"hpc_tf/restore/fit{self.fit_call}")
        action = restore_action(found[1] if found else None, self.fit_call)
        if found is not None and action == "resume":
            name, position = found
            self.store.restore(name)
            _resumed.add(model)
            self.resume_at = position
            self.global_step = self.last_saved = position.global_step
            self.extra_to_skip = position.consumed - position.batch
            if position.epoch > 0:
                model._initial_epoch = position.epoch
            log(f"resuming fit from checkpoint {name}: epoch {position.epoch}, step {position.batch} "
                f"({position.global_step} steps done)")
        elif found is not None and action == "replay":
            self.saving = False
            log(f"fit call {self.fit_call} ran to its end before checkpoint {found[0]} (fit call "
                f"{found[1].fit_call}); training it again without saving")
        self._original_train_function = model.train_function
        model.train_function = self.train_function

    def finish(self) -> None:
        if self._original_train_function is not None:
            self.model.train_function = self._original_train_function
            self._original_train_function = None
        if self.resume_at is not None:
            self.model._initial_epoch = None
        _resumed.discard(self.model)
        self._iterator = None

    # ------------------------------------------------------------ every step

    def _skipping(self) -> bool:
        at = self.resume_at
        return at is not None and self.epoch == at.epoch and self.batch < at.batch

    def _draw(self, iterator: Any, count: int) -> None:
        for _ in range(count):
            next(iterator)
        self._consumed += count

    def train_function(self, iterator: Any) -> Any:
        if iterator is not self._iterator:  # Keras made a new iterator (a new epoch, or data ran out)
            self._iterator = iterator
            self._consumed = 0
        per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if self.extra_to_skip:  # the iterator ran on across epochs before the checkpoint
            self._draw(iterator, self.extra_to_skip)
            self.extra_to_skip = 0
        if self._skipping():
            self._draw(iterator, per_call)
            return {}
        if self.resume_at is not None and self.epoch > self.resume_at.epoch:
            self.resume_at = None
        position = Position(self.fit_call, self.epoch, self.batch, self._consumed, self.global_step)
        store = self.store
        assert store is not None and self.coordinator is not None
        if self.saving and crossed_save_point(self.last_saved, self.global_step, self.config.every_steps):
            path = store.save(position)
            self.last_saved = self.global_step
            if path:
                log(f"periodic checkpoint {path.rsplit('/', 1)[-1]} at epoch {self.epoch}, step {self.batch}")
        self.coordinator.before_step((lambda: store.save(position)) if self.saving else None)
        logs = self._original_train_function(iterator)
        self._consumed += per_call
        self.global_step += per_call
        return logs
