"""Fixes that must run inside the user's own Python process, installed lazily.

The bootstrap execs the user's unmodified command, so anything that has to patch
TensorFlow or Keras happens in that process: sitecustomize.py (put first on PYTHONPATH
by the bootstrap) calls ``install_from_environ`` at interpreter start-up. That imports
nothing heavy; it registers post-import hooks, and each fix runs right after the user's
code imports the module it concerns:

* ``keras.src.backend.tensorflow.trainer`` → keras_fix.apply (Keras 3 + MWMS fit)
* ``tensorflow.python.distribute.collective_all_reduce_strategy`` → formation.apply
  (bounded cluster formation, a message naming a worker that never joined)
* Keras's saving API, ``Model``, ``file_utils`` and the file-writing callbacks → keras_files
  (what every worker writes: the chief at the named paths, the others privately)

On by default, in the chief's process only: ``keras.src.backend.tensorflow.trainer`` →
metrics.apply (what ``model.fit`` logs, into the run's metrics.jsonl).

The others only matter with two or more workers. With checkpointing or preemption on (any
number of workers), preemption.install catches Slurm's warning signal from start-up and
``keras.src.backend.tensorflow.trainer`` → keras_resume.apply (checkpoints and exact
resume for ``model.fit``). The hook settings travel in HPC_TF_HOOKS (hook_config.py).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from . import formation, keras_files, keras_fix, keras_resume, metrics, preemption
from .hook_config import HOOKS_VARIABLE, HookConfig

Callback = Callable[[ModuleType], None]


def install_from_environ(environ: Mapping[str, str]) -> None:
    text = environ.get(HOOKS_VARIABLE)
    if not text:
        return
    config = HookConfig.from_json(text).for_task(environ)
    if config.metrics is not None:
        metrics.install(config.metrics)
        when_imported(metrics.TRAINER_MODULE, metrics.apply)
    if config.preemption is not None:
        preemption.install(config.preemption)
        when_imported(keras_resume.TRAINER_MODULE, functools.partial(keras_resume.apply, config=config.preemption))
    if len(config.worker_nodes) < 2:
        return
    if config.keras_mwms_fix:
        when_imported(keras_fix.TRAINER_MODULE, keras_fix.apply)
        for module, patch in keras_files.patches(environ):
            when_imported(module, patch)
    when_imported(formation.STRATEGY_MODULE, functools.partial(formation.apply, config=config))


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once ``name`` has been imported (now, if it already is)."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    _finder().add(name, callback)


def _finder() -> _PostImportFinder:
    for finder in sys.meta_path:
        if isinstance(finder, _PostImportFinder):
            return finder
    finder = _PostImportFinder()
    sys.meta_path.insert(0, finder)
    return finder


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds watched modules through the other finders and wraps their loader."""

    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {}

    def add(self, name: str, callback: Callback) -> None:
        self._callbacks.setdefault(name, []).append(callback)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        callbacks = self._callbacks.pop(fullname, None)
        if callbacks is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec: importlib.machinery.ModuleSpec | None = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _CallbackLoader(spec.loader, callbacks)
                return spec
        self._callbacks[fullname] = callbacks  # not found: keep waiting
        return None


class _CallbackLoader(importlib.abc.Loader):
    """Runs the real loader, puts it back on the module, then runs the callbacks."""

    def __init__(self, inner: importlib.abc.Loader, callbacks: list[Callback]) -> None:
        self._inner = inner
        self._callbacks = callbacks

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        module.__loader__ = self._inner
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        for callback in self._callbacks:
            callback(module)

    def __getattr__(self, name: str) -> Any:
        # get_resource_reader, is_package, get_source ...: whatever the real loader offers
        return getattr(self._inner, name)
