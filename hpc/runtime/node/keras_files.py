"""What every worker of an unmodified Keras 3 script writes ends up as the user expects (post-import hooks).

Under MultiWorkerMirroredStrategy every worker runs the whole script, so every worker calls the same
callbacks with the same paths. tf.keras 2.x sent the writes of workers other than the chief to
private temporary directories (its ``distributed_file_utils``); Keras 3 does not, and on a shared
filesystem two workers write one file: BackupAndRestore dies in h5py ("unable to lock file"), two
``makedirs`` race to ``FileExistsError``, a ``.keras`` zip written by two processes at once can be
corrupt (lab notes §4). This module restores tf.keras 2.x's rule, inside the user's process:

* the chief (worker 0, as TF_CONFIG says) writes the paths the script named; whole files
  (``model.save``, ``save_weights``, ``export``, so every ModelCheckpoint and backup) go to a hidden
  temporary file beside the target and are renamed over it, so a file is never half-written;
* every other worker writes into a private place (a directory under the node's temporary directory,
  mode 0700) that is removed right after the write, or, for what stays open during training
  (CSVLogger's file, TensorBoard's event files), at the end of training;
* every worker *reads* the real paths: BackupAndRestore restores each worker from the chief's backup
  (under MWMS the workers hold the same state), after checking that they all see the same backup,
  unless hpc-tf's own checkpoint resumed the fit call (keras_resume.py: exact to the step);
* Keras's ``makedirs`` tolerates a directory that appeared meanwhile (a user's own ``makedirs`` on
  another worker).

The callbacks' paths are private attributes of Keras 3.15, so the patch is applied only to the Keras
versions keras_fix.py was tested with, and refuses to start when a patched method no longer looks
the way it was written for (:data:`LANDMARKS`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import inspect
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from types import ModuleType
from typing import Any

from . import keras_resume
from ._errors import RuntimeSetupError
from .keras_fix import TESTED_KERAS_VERSIONS, check_version
from .preemption import Cluster, agree, log
from .processes import alive

SAVING_MODULE = "keras.src.saving.saving_api"
FILE_UTILS_MODULE = "keras.src.utils.file_utils"
MODEL_MODULE = "keras.src.models.model"
PRIVATE_PREFIX = "hpc-tf-"


class Redirect:
    """Where a callback's own paths point on a worker that is not the chief, and for how long.

    ``attributes``: the instance's path attributes, the first one the anchor (the others are
    inside it or beside it); ``during``: the methods that see private paths instead; ``discard_after``:
    the methods after which the private places are removed.
    """

    def __init__(self, module: str, name: str, attributes: tuple[str, ...], during: tuple[str, ...],
                 discard_after: tuple[str, ...]) -> None:
        self.module = module
        self.name = name
        self.attributes = attributes
        self.during = during
        self.discard_after = discard_after


REDIRECTS = (
    Redirect("keras.src.callbacks.backup_and_restore", "BackupAndRestore",
             ("backup_dir", "_weights_path", "_training_metadata_path", "_prev_weights_path",
              "_prev_training_metadata_path"),
             during=("_save_model", "on_train_end"), discard_after=("_save_model", "on_train_end")),
    Redirect("keras.src.callbacks.model_checkpoint", "ModelCheckpoint", ("filepath",),
             during=("_save_model",), discard_after=("_save_model",)),
    Redirect("keras.src.callbacks.csv_logger", "CSVLogger", ("filename",),
             during=("on_train_begin",), discard_after=("on_train_end",)),
    Redirect("keras.src.callbacks.tensorboard", "TensorBoard", ("log_dir",),
             during=("set_model",), discard_after=("on_train_end",)),
)

# What each patched function must still contain for the patch to mean what it did with Keras 3.15.
LANDMARKS: dict[tuple[str, str], tuple[str, ...]] = {
    (SAVING_MODULE, "save_model"): ("def save_model(model, filepath, overwrite=True, zipped=None, **kwargs)",),
    (SAVING_MODULE, "save_weights"): ("def save_weights(\n    model, filepath, overwrite=True, max_shard_size=None",),
    (FILE_UTILS_MODULE, "makedirs"): ("return os.makedirs(path)",),
    (MODEL_MODULE, "Model.export"): ("self,\n        filepath,",),
    ("keras.src.callbacks.backup_and_restore", "BackupAndRestore._save_model"): (
        "file_utils.makedirs(self.backup_dir)", "self.model.save_weights(filepath=self._weights_path",
        "file_utils.File(self._training_metadata_path, \"w\")", "self._prev_weights_path"),
    ("keras.src.callbacks.backup_and_restore", "BackupAndRestore.on_train_begin"): ("self._load_model()",),
    ("keras.src.callbacks.backup_and_restore", "BackupAndRestore._load_model"): (
        "file_utils.exists(self._weights_path)", "file_utils.File(self._training_metadata_path, \"r\")"),
    ("keras.src.callbacks.backup_and_restore", "BackupAndRestore.on_train_end"): (
        "file_utils.rmtree(self.backup_dir)",),
    ("keras.src.callbacks.model_checkpoint", "ModelCheckpoint._save_model"): (
        "self._get_file_path(epoch, batch, logs)", "self.model.save_weights(filepath", "self.model.save(filepath"),
    ("keras.src.callbacks.model_checkpoint", "ModelCheckpoint._get_file_path"): ("self.filepath.format(",),
    ("keras.src.callbacks.csv_logger", "CSVLogger.on_train_begin"): ("file_utils.File(self.filename, mode)",),
    ("keras.src.callbacks.tensorboard", "TensorBoard.set_model"): (
        "self._log_write_dir = self.log_dir", 'os.path.join(self._log_write_dir, "train")'),
    ("keras.src.callbacks.tensorboard", "TensorBoard.on_train_end"): ("self._close_writers()",),
}


def check_landmarks(module: ModuleType, version: str) -> None:
    """Refuse a Keras whose patched functions changed: the patch could silently stop protecting files."""
    changed = []
    for (module_name, qualname), landmarks in LANDMARKS.items():
        if module_name != module.__name__:
            continue
        target: Any = module
        for part in qualname.split("."):
            target = getattr(target, part, None)
        try:
            source = inspect.getsource(target) if target is not None else ""
        except (OSError, TypeError):
            continue  # no source shipped: the version check is all there is
        if any(landmark not in source for landmark in landmarks):
            changed.append(f"{module_name}.{qualname}")
    if changed:
        raise RuntimeSetupError(
            f"Keras {version} changed what hpc-tf's multi-worker file handling patches ({', '.join(changed)})",
            hint=f"pin a Keras 3 version hpc-tf was tested with ({', '.join(sorted(TESTED_KERAS_VERSIONS))}), "
            "or run one worker",
        )


# ---------------------------------------------------------------- where this worker writes

class PrivateSpace:
    """A worker's private temporary places, under one directory made on first use, removed at exit.

    The directory's name carries the host and the pid, so a start can remove what a killed process on
    this host left behind (and never a live worker's on another host, where $TMPDIR is shared).
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._root: str | None = None

    @property
    def root(self) -> str:
        if self._root is None:
            remove_stale_places(tempfile.gettempdir())
            job = os.environ.get("SLURM_JOB_ID") or "job"
            host = socket.gethostname()
            self._root = tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{job}-{host}-worker{self.rank}-p{os.getpid()}-")
            atexit.register(shutil.rmtree, self._root, True)
        return self._root

    def new_place(self) -> str:
        return tempfile.mkdtemp(dir=self.root)

    def holds(self, path: str) -> bool:
        return self._root is not None and os.path.abspath(path).startswith(self._root + os.sep)


_STALE = re.compile(rf"{PRIVATE_PREFIX}[^-]+-(?P<host>.+)-worker\d+-p(?P<pid>\d+)-[^/]*")


def remove_stale_places(directory: str) -> None:
    """Remove this user's private directories on this host whose process is gone (a kill skips the exit
    handler). Best effort: another job of the user may remove an entry meanwhile."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    host = socket.gethostname()
    for entry in entries:
        match = _STALE.fullmatch(entry.name)
        if match is None or match["host"] != host:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not alive(int(match["pid"])):
            shutil.rmtree(entry.path, ignore_errors=True)


def _discard(place: str) -> None:
    shutil.rmtree(place, ignore_errors=True)


def _remote(path: str) -> bool:
    return "://" in path


class Writer:
    """How this worker writes a path the script named: the chief in place, every other worker privately."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.space = None if cluster.is_chief else PrivateSpace(cluster.task_id)

    def write(self, save: Callable[[str], Any], filepath: Any, *, whole_file: bool, overwrite: bool = True) -> Any:
        """Call ``save(path)`` with the path this worker writes ``filepath`` through."""
        path = str(filepath)
        if self.space is not None and not self.space.holds(path):
            place = self.space.new_place()
            try:
                return save(os.path.join(place, os.path.basename(path.rstrip("/")) or "file"))
            finally:
                _discard(place)
        if self.space is not None or not whole_file or _remote(path) or (not overwrite and os.path.exists(path)):
            # a private place already; or the chief and Keras writes a directory, a remote file, or asks first
            return save(filepath)
        directory, name = os.path.split(path)
        temporary = os.path.join(directory, f".{PRIVATE_PREFIX}{os.getpid()}-{name}")
        try:
            result = save(temporary)
            if os.path.exists(temporary):
                os.replace(temporary, path)
            return result
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)

    @contextlib.contextmanager
    def redirected(self, instance: Any, redirect: Redirect) -> Iterator[None]:
        """On a worker other than the chief: ``instance``'s paths point into a new private place meanwhile."""
        if self.space is None:
            yield
            return
        saved = {name: getattr(instance, name) for name in redirect.attributes}
        base = os.path.dirname(str(saved[redirect.attributes[0]]).rstrip("/")) or os.curdir
        place = self.space.new_place()
        places: list[str] = instance.__dict__.setdefault("_hpc_tf_places", [])
        places.append(place)
        for name, value in saved.items():  # the same layout inside the place: a backup's files stay in its dir
            setattr(instance, name, os.path.join(place, os.path.relpath(str(value), base)))
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(instance, name, value)

    def discard(self, instance: Any) -> None:
        for place in instance.__dict__.pop("_hpc_tf_places", []):
            _discard(place)


# ---------------------------------------------------------------- the patches

def patches(environ: Mapping[str, str]) -> list[tuple[str, Callable[[ModuleType], None]]]:
    """The post-import hooks for this worker: (module, patch) pairs; none for a single worker."""
    cluster = Cluster.from_tf_config(environ.get("TF_CONFIG", ""))
    if cluster.num_workers < 2:
        return []
    writer = Writer(cluster)
    found: list[tuple[str, Callable[[ModuleType], None]]] = [
        (SAVING_MODULE, functools.partial(_patch_saving, writer=writer)),
        (MODEL_MODULE, functools.partial(_patch_export, writer=writer)),
        (FILE_UTILS_MODULE, _patch_makedirs),
    ]
    found += [(redirect.module, functools.partial(_patch_callback, redirect=redirect, writer=writer))
              for redirect in REDIRECTS]
    return found


def _checked(module: ModuleType) -> None:
    version = importlib.import_module("keras.src.version").__version__
    check_version(version)
    check_landmarks(module, version)


def _patch_saving(saving_api: ModuleType, *, writer: Writer) -> None:
    _checked(saving_api)
    save_model, save_weights = saving_api.save_model, saving_api.save_weights

    @functools.wraps(save_model)
    def save_model_safely(model: Any, filepath: Any, overwrite: bool = True, zipped: Any = None, **kwargs: Any) -> Any:
        return writer.write(lambda path: save_model(model, path, overwrite, zipped, **kwargs), filepath,
                            whole_file=zipped is not False, overwrite=overwrite)

    @functools.wraps(save_weights)
    def save_weights_safely(model: Any, filepath: Any, overwrite: bool = True, max_shard_size: Any = None,
                            **kwargs: Any) -> Any:
        return writer.write(lambda path: save_weights(model, path, overwrite, max_shard_size, **kwargs), filepath,
                            whole_file=max_shard_size is None, overwrite=overwrite)

    setattr(saving_api, "save_model", save_model_safely)  # noqa: B010 (module globals)
    setattr(saving_api, "save_weights", save_weights_safely)  # noqa: B010


def _patch_export(model_module: ModuleType, *, writer: Writer) -> None:
    _checked(model_module)
    cls = model_module.Model
    export = cls.export

    @functools.wraps(export)
    def export_safely(self: Any, filepath: Any, *args: Any, **kwargs: Any) -> Any:
        # a SavedModel is a directory, which cannot replace another in one step: the chief writes in place
        return writer.write(lambda path: export(self, path, *args, **kwargs), filepath, whole_file=False)

    cls.export = export_safely


def _patch_makedirs(file_utils: ModuleType) -> None:
    _checked(file_utils)
    makedirs = file_utils.makedirs

    @functools.wraps(makedirs)
    def makedirs_tolerantly(path: Any) -> Any:
        if _remote(str(path)):
            return makedirs(path)
        os.makedirs(path, exist_ok=True)  # another worker (or the user's code there) may have made it
        return None

    setattr(file_utils, "makedirs", makedirs_tolerantly)  # noqa: B010 (a module global)


def _patch_callback(module: ModuleType, *, redirect: Redirect, writer: Writer) -> None:
    _checked(module)
    cls = getattr(module, redirect.name)
    for name in sorted(set(redirect.during) | set(redirect.discard_after)):
        original = getattr(cls, name)

        def method(self: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            try:
                if _name not in redirect.during:
                    return _original(self, *args, **kwargs)
                with writer.redirected(self, redirect):
                    return _original(self, *args, **kwargs)
            finally:
                if _name in redirect.discard_after:
                    writer.discard(self)

        setattr(cls, name, functools.wraps(original)(method))
    if redirect.name == "BackupAndRestore":
        on_train_begin = cls.on_train_begin

        @functools.wraps(on_train_begin)
        def on_train_begin_agreed(self: Any, logs: Any = None) -> Any:
            check_same_backup(self)
            if keras_resume.resumed(self.model):  # restoring the older epoch-end backup would undo that
                log(f"BackupAndRestore: fit resumed from hpc-tf's checkpoint, exact to the step; "
                    f"the backup in {self.backup_dir} is not restored")
                return None
            return on_train_begin(self, logs)

        cls.on_train_begin = on_train_begin_agreed


def backup_view(weights_path: str, metadata_path: str) -> str:
    """What a worker would restore: the backup's metadata and the weights file's size (or "none")."""
    try:
        with open(metadata_path, encoding="utf-8") as f:
            metadata = f.read().strip()
    except OSError:
        metadata = "no training_metadata.json"
    try:
        weights = f"{os.path.getsize(weights_path)} bytes of weights"
    except OSError:
        weights = "no weights"
    return f"{metadata}, {weights}"


def check_same_backup(callback: Any) -> None:
    """Every worker restores the chief's backup; one that sees another (a node-local backup_dir) stops all."""
    cluster = Cluster.of(callback.model.distribute_strategy)
    view = backup_view(str(callback._weights_path), str(callback._training_metadata_path))
    seen = agree(cluster, "hpc_tf/backup_and_restore", json.dumps(view))
    if len(set(seen)) > 1:
        views = "; ".join(f"worker {i}: {json.loads(text)}" for i, text in enumerate(seen))
        raise RuntimeSetupError(
            f"BackupAndRestore: the workers do not see the same backup in {callback.backup_dir} ({views})",
            hint="give BackupAndRestore a backup_dir on a file system every node sees the same way "
            "(e.g. under the job's output directory, not /tmp)",
        )
