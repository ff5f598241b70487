"""Checkpoint at a step every worker agrees on when Slurm warns, and resume exactly after a requeue.

Runs inside the user's own Python process (installed by hooks.py at start-up); standard
library only at import, TensorFlow is reached lazily through ``importlib`` once the user's
code has imported it. The facts behind the design are in the lab notes (§4):

* Slurm warns the batch shell (``--signal=B:USR1@N``); its trap forwards USR1 through srun to
  every task. ``install`` puts a flag-setting USR1 handler in place at interpreter start (the
  default action would kill the task); once a strategy exists :func:`coordinator` adds one
  for TERM (``scontrol requeue``, preemption), which MultiWorkerMirroredStrategy otherwise
  swallows.
* TF's ``PreemptionCheckpointHandler`` turns "some worker was warned" into a step number all
  workers agree on (coordination service); hpc-tf gives it the flag as its watcher, its own
  save function and an exit function: the chief writes the checkpoint, every worker waits at
  a barrier (so no one is killed mid-save by ``srun --kill-on-bad-exit``), then every task
  exits with :data:`REQUEUE_EXIT_CODE`, on which the batch driver (batch.py) requeues the job.
* Checkpoints are ``tf.train.Checkpoint``\\ s through a ``CheckpointManager`` (its state file is
  replaced atomically, so a half-written checkpoint is never "latest"), numbered by global
  step, with the position of the next step (:class:`Position`) stored beside the weights.
  Before restoring, the workers compare the checkpoint each would restore and refuse to start
  if they differ.

``keras_resume.py`` drives this from ``model.fit`` with no change to the user's script; a
custom training loop uses :class:`Resumable` (``from hpc_tf_runtime.preemption import
Resumable`` inside a job).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from ._errors import RuntimeSetupError
from .hook_config import RUN_DIR_VARIABLE, PreemptionConfig
from .requeue import REQUEUE_EXIT_CODE as REQUEUE_EXIT_CODE  # the batch driver requeues the job on it

CHECKPOINT_NAME = "ckpt"
POSITION_KEY = "hpc_tf_position"
AGREEMENT_TIMEOUT_MS = 300_000
EXIT_BARRIER_TIMEOUT_MS = 120_000
LOG_PREFIX = "hpc-tf: "


@dataclass(frozen=True)
class Position:
    """Where training stands just before a step: what a checkpoint restores to.

    ``fit_call`` counts the process's ``fit`` calls (a script may call fit more than once);
    ``batch`` is the step's index within ``epoch``; ``consumed`` is how many batches the current
    input iterator had delivered (equal to ``batch`` unless the iterator runs on across epochs,
    as it does with ``steps_per_epoch`` over an endless dataset); ``global_step`` counts every
    batch trained in this process's timeline and numbers the checkpoint.
    """

    fit_call: int = 0
    epoch: int = 0
    batch: int = 0
    consumed: int = 0
    global_step: int = 0

    def as_list(self) -> list[int]:
        return [self.fit_call, self.epoch, self.batch, self.consumed, self.global_step]

    @classmethod
    def from_list(cls, values: Sequence[int]) -> Position:
        fit_call, epoch, batch, consumed, global_step = (int(v) for v in values)
        return cls(fit_call, epoch, batch, consumed, global_step)


Action = Literal["fresh", "resume", "replay"]


def restore_action(saved: Position | None, fit_call: int) -> Action:
    """What fit call ``fit_call`` does given the newest checkpoint's position.

    * ``resume``: the checkpoint was taken during this fit call: restore it, skip what was done.
    * ``replay``: it belongs to a later fit call: train this one as before (deterministically),
      but save nothing, so the newer checkpoint stays the newest.
    * ``fresh``: no checkpoint, or one from an earlier fit call that has since finished.
    """
    if saved is None or saved.fit_call < fit_call:
        return "fresh"
    return "resume" if saved.fit_call == fit_call else "replay"


def crossed_save_point(last_saved: int, now: int, every: int | None) -> bool:
    """A periodic checkpoint is due when ``now`` reached a multiple of ``every`` past ``last_saved``."""
    return every is not None and every > 0 and now // every > last_saved // every


# ---------------------------------------------------------------- configuration and signals

_config: PreemptionConfig | None = None
_warning = threading.Event()
_warning_signal: list[str] = []


def install(config: PreemptionConfig) -> None:
    """At interpreter start: remember the configuration; catch Slurm's warning (USR1) from now on."""
    global _config
    _config = config
    if config.handle_signals:
        signal.signal(signal.SIGUSR1, _on_warning)


def configured() -> PreemptionConfig | None:
    return _config


def warned() -> bool:
    return _warning.is_set()


def _on_warning(signum: int, frame: FrameType | None) -> None:
    if not _warning.is_set():
        _warning_signal.append(signal.Signals(signum).name)
        _warning.set()
        # os.write, not print: the handler may interrupt a print of the main thread
        name = signal.Signals(signum).name
        os.write(2, f"{LOG_PREFIX}{name} received: checkpointing at the next step all workers agree on\n".encode())


def log(message: str) -> None:
    print(LOG_PREFIX + message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the cluster view

@dataclass(frozen=True)
class Cluster:
    """This task's place among the workers, from the strategy's cluster resolver."""

    task_id: int
    num_workers: int
    is_chief: bool

    @classmethod
    def of(cls, strategy: Any) -> Cluster:
        resolver: Any = getattr(strategy, "cluster_resolver", None)
        if resolver is None:
            return cls.place({}, None, 0)
        return cls.place(resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id)

    @classmethod
    def from_tf_config(cls, text: str) -> Cluster:
        """The same view from TF_CONFIG, the way the strategy reads it (no TensorFlow needed)."""
        config = json.loads(text) if text else {}
        task = config.get("task", {})
        return cls.place(config.get("cluster", {}), task.get("type"), task.get("index", 0))

    @classmethod
    def place(cls, spec: Mapping[str, Any], task_type: str | None, task_id: int) -> Cluster:
        jobs = {name: len(tasks) if isinstance(tasks, list) else len(dict(tasks)) for name, tasks in spec.items()}
        workers = jobs.get("chief", 0) + jobs.get("worker", 0)
        if workers <= 1:
            return cls(task_id=0, num_workers=1, is_chief=True)
        task_id = int(task_id)
        # with a "chief" job the chief is chief:0; otherwise worker 0 is
        index = task_id if task_type == "chief" or "chief" not in jobs else task_id + jobs["chief"]
        is_chief = task_type == "chief" or ("chief" not in jobs and task_id == 0)
        return cls(task_id=index, num_workers=workers, is_chief=is_chief)


def _context() -> Any:
    return importlib.import_module("tensorflow.python.eager.context").context()


_agreements = itertools.count()


def agree(cluster: Cluster, key: str, value: str) -> list[str]:
    """Every worker's ``value`` for ``key`` (the coordination service's key-value store).

    Keys can be set once per cluster; the workers make the same calls in the same order, so a
    call counter keeps repeated questions apart.
    """
    if cluster.num_workers == 1:
        return [value]
    key = f"{key}/{next(_agreements)}"
    context = _context()
    context.set_config_key_value(f"{key}/{cluster.task_id}", value)
    return [context.get_config_key_value(f"{key}/{i}", AGREEMENT_TIMEOUT_MS) for i in range(cluster.num_workers)]


# ---------------------------------------------------------------- checkpoints

class CheckpointStore:
    """One training run's checkpoints: the user's objects plus the position, in ``checkpoint_dir``."""

    def __init__(self, config: PreemptionConfig, cluster: Cluster, objects: Mapping[str, Any]) -> None:
        tf: Any = importlib.import_module("tensorflow")
        self._tf = tf
        self.config = config
        self.cluster = cluster
        with tf.init_scope():
            self.position = tf.Variable(Position().as_list(), dtype=tf.int64, trainable=False, name=POSITION_KEY)
        self.checkpoint = tf.train.Checkpoint(**objects, **{POSITION_KEY: self.position})
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, config.checkpoint_dir, max_to_keep=config.keep, checkpoint_name=CHECKPOINT_NAME
        )

    def newest(self, agreement_key: str) -> tuple[str, Position] | None:
        """The newest complete checkpoint and its position, after checking every worker sees the same."""
        found = self._newest_readable()
        seen = agree(self.cluster, agreement_key, json.dumps(found[0] if found else None))
        if len(set(seen)) > 1:
            views = "; ".join(f"worker {i}: {json.loads(view) or 'none'}" for i, view in enumerate(seen))
            raise RuntimeSetupError(
                f"the workers do not see the same newest checkpoint in {self.config.checkpoint_dir} ({views})",
                hint="the checkpoint directory must be on a file system every node sees the same way",
            )
        return found

    def _newest_readable(self) -> tuple[str, Position] | None:
        state = self._tf.train.get_checkpoint_state(self.config.checkpoint_dir)
        paths = list(state.all_model_checkpoint_paths) if state is not None else []
        for path in reversed(paths):  # newest last in the state file
            try:
                reader = self._tf.train.load_checkpoint(path)
                values = reader.get_tensor(f"{POSITION_KEY}/.ATTRIBUTES/VARIABLE_VALUE")
            except Exception as err:  # missing or unreadable files: fall back to the one before
                log(f"skipping checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0]}")
                continue
            return os.path.basename(path), Position.from_list(list(values))
        return None

    def restore(self, name: str) -> None:
        path = os.path.join(self.config.checkpoint_dir, name)
        status = self.checkpoint.restore(path)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as err:
            raise RuntimeSetupError(
                f"checkpoint {path} does not match this model and optimizer: {str(err).splitlines()[0]}",
                hint="a checkpoint directory belongs to one training run; point checkpoint.dir elsewhere",
            ) from err

    def save(self, position: Position) -> str | None:
        """Write the checkpoint (the chief only; the others hold the same values)."""
        self.position.assign(position.as_list())
        if not self.cluster.is_chief:
            return None
        path: str = self.manager.save(checkpoint_number=position.global_step)
        return path


# ---------------------------------------------------------------- agreement on preemption

class Coordinator:
    """The process's one PreemptionCheckpointHandler (it may exist only once per cluster)."""

    def __init__(self, strategy: Any, config: PreemptionConfig) -> None:
        tf: Any = importlib.import_module("tensorflow")
        self.config = config
        self.cluster = Cluster.of(strategy)
        self.saver: Callable[[], str | None] | None = None
        self.saved: str | None = None
        self.handler: Any = None
        if not config.handle_signals:
            return
        signal.signal(signal.SIGTERM, _on_warning)  # after the strategy: it would swallow TERM
        # PCH restores from its manager; hpc-tf restores itself, so give it an empty one
        manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(), os.path.join(config.checkpoint_dir, ".preemption-handler"), max_to_keep=1
        )
        termination = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=_warning.is_set, exit_fn=self._exit, grace_period=0, save_fn=self._save
        )
        resolver = getattr(strategy, "cluster_resolver", None) if self.cluster.num_workers > 1 else None
        with _no_cloud_probe():
            self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
                resolver, manager, termination_config=termination
            )

    def before_step(self, saver: Callable[[], str | None] | None) -> None:
        """Call before every training step: saves and exits when the workers agreed to stop here."""
        if self.handler is None:
            return
        self.saver = saver
        try:
            self.handler.save_checkpoint_if_preempted()
        finally:
            self.saver = None

    def _save(self) -> None:
        self.saved = self.saver() if self.saver is not None else None

    def _exit(self) -> None:
        if self.cluster.num_workers > 1:
            try:  # nobody leaves before the chief's checkpoint is on disk
                _context().wait_at_barrier("hpc_tf_preemption_exit", EXIT_BARRIER_TIMEOUT_MS)
            except Exception as err:
                log(f"not every worker reached the exit barrier ({type(err).__name__}); exiting anyway")
        if self.saved:
            where = f"checkpoint {self.saved}"
        elif self.cluster.is_chief:
            where = "the newest checkpoint (nothing was saved: this fit call is being replayed)"
        else:
            where = "the checkpoint worker 0 wrote"
        log(f"stopping for a requeue; training resumes from {where} (exit code {REQUEUE_EXIT_CODE})")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(REQUEUE_EXIT_CODE)


_coordinator: Coordinator | None = None
_coordinator_lock = threading.Lock()


def coordinator(strategy: Any, config: PreemptionConfig) -> Coordinator:
    global _coordinator
    with _coordinator_lock:
        if _coordinator is None:
            _coordinator = Coordinator(strategy, config)
        return _coordinator


@contextlib.contextmanager
def _no_cloud_probe() -> Iterator[None]:
    """PCH asks http://metadata.google.internal whether it runs on GCP (up to 5 s, and on GCP its
    CPU mode does nothing at all). Point the probe at a closed local port for the constructor."""
    key = "GCE_METADATA_IP"
    before = os.environ.get(key)
    os.environ[key] = "127.0.0.1:9"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


# ---------------------------------------------------------------- custom training loops

class Resumable:
    """Exact resume for a custom training loop, with the checkpoint settings of the job.

    ::

        from hpc_tf_runtime.preemption import Resumable

        resumable = Resumable(strategy, model=model, optimizer=optimizer)  # restores, if there is a checkpoint
        iterator = iter(dataset.skip(resumable.step))                        # the data position is yours
        for step in range(resumable.step, total_steps):
            resumable.before_step(step)   # periodic checkpoints; on a warning: agreed checkpoint, exit 75
            train_step(next(iterator))

    Without checkpointing (a job with neither a ``preemption`` nor a ``checkpoint`` section, or no
    hpc-tf job at all) it does nothing: ``step`` is 0, so the same script still runs; inside an
    hpc-tf job it says so in one line, naming the section to add.
    """

    def __init__(self, strategy: Any, **objects: Any) -> None:
        self.step = 0
        self._config = configured()
        if self._config is None:
            self._store: CheckpointStore | None = None
            if os.environ.get(RUN_DIR_VARIABLE):
                log("Resumable does nothing in this job: it has no preemption or checkpoint section, so nothing is "
                    "checkpointed or resumed (add preemption: {enabled: true} to the job spec)")
            return
        cluster = Cluster.of(strategy)
        self._coordinator = coordinator(strategy, self._config)
        self._store = CheckpointStore(self._config, cluster, objects)
        found = self._store.newest("hpc_tf/restore/loop")
        if found is not None:
            name, position = found
            self._store.restore(name)
            self.step = position.global_step
            log(f"resuming the training loop from checkpoint {name} at step {self.step}")
        self._last_saved = self.step

    def before_step(self, step: int) -> None:
        store = self._store
        if store is None or self._config is None:
            return
        position = Position(batch=step, consumed=step, global_step=step)
        if crossed_save_point(self._last_saved, step, self._config.every_steps):
            path = store.save(position)
            self._last_saved = step
            if path:
                log(f"periodic checkpoint {Path(path).name} at step {step}")
        self._coordinator.before_step(lambda: store.save(position))
