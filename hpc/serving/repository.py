"""The one owner of paths in a Triton model repository, and the only code that changes it.

::

    <repository>/
      <model>/config.pbtxt          one config for the model (version_policy latest{1})
      <model>/<N>/                   integer versions assigned by hpc-tf, highest = served
      .hpc-tf/server.json            the serving node's endpoint (written by ``hpc-tf serve up``; 0600)
      .hpc-tf/serving.json           what is serving: versions per model, splits (hpc.serving.state)
      .hpc-tf/router.json            the router's endpoint (``hpc-tf serve router``; 0600)
      .hpc-tf/server/                the serving node's script, logs, backends (0700: the owner's only)
      .hpc-tf/staging/               versions being built (same filesystem: renamed into place)
      .hpc-tf/handoffs/<model>/      one JSON record per hand-off
      .hpc-tf/locks/<model>.lock     one hand-off per model at a time
      .hpc-tf/locks/serving.lock     one change of serving.json at a time
      .hpc-tf/versions/<model>       highest version ever published (numbers of rolled-back versions
                                     are never reused, so a record's version names one model only)

Triton never sees a half-written version: it is built under ``.hpc-tf/staging`` and renamed into
``<model>/<N>``; removal renames it out first. ``.hpc-tf`` is not a valid model name, so it is never
loaded (Triton's repository index still lists it; ``serve status`` shows only :meth:`Repository.models`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hpc.atomic import write_text_atomic
from hpc.errors import InputError, ServingError
from hpc.paths import Layout, Under
from hpc.serving.names import check_model_name, named_model
from hpc.text import shown

STATE_DIR = ".hpc-tf"


class Repository(Layout):
    state_dir = Under(STATE_DIR)
    endpoint_file = Under(STATE_DIR, "server.json")
    serving_file = Under(STATE_DIR, "serving.json")
    server_dir = Under(STATE_DIR, "server")
    router_file = Under(STATE_DIR, "router.json")
    replicas_dir = Under(STATE_DIR, "replicas")  # the router's replicas: <name>.json endpoints, <name>/ work dirs
    staging_dir = Under(STATE_DIR, "staging")

    @classmethod
    def at(cls, root: str | Path) -> Repository:
        return cls(Path(root).expanduser())

    # ---------------------------------------------------------------- paths
    def model_dir(self, model: str) -> Path:
        return self.root / check_model_name(model)

    def config_file(self, model: str) -> Path:
        return self.model_dir(model) / "config.pbtxt"

    def version_dir(self, model: str, version: int) -> Path:
        return self.model_dir(model) / str(version)

    def records_dir(self, model: str) -> Path:
        return self.state_dir / "handoffs" / check_model_name(model)

    # ---------------------------------------------------------------- reading
    def models(self) -> list[str]:
        """The models in the repository: directories named by a model name (never ``.hpc-tf``)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and named_model(p.name))

    def versions(self, model: str) -> list[int]:
        """Published versions, ascending (directories named by a positive integer)."""
        mdir = self.model_dir(model)
        if not mdir.is_dir():
            return []
        return sorted(int(p.name) for p in mdir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)

    def last_assigned(self, model: str) -> int:
        path = self.state_dir / "versions" / check_model_name(model)
        try:
            return int(path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return 0

    def next_version(self, model: str) -> int:
        versions = self.versions(model)
        return max(versions[-1] if versions else 0, self.last_assigned(model)) + 1

    def handoff_records(self, model: str) -> list[Path]:
        """The model's hand-off records, oldest first (their names begin with a UTC time stamp)."""
        directory = self.records_dir(model)
        return sorted(directory.glob("*.json")) if directory.is_dir() else []

    def read_config(self, model: str) -> str | None:
        path = self.config_file(model)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    # ---------------------------------------------------------------- changing
    def replica_file(self, name: str) -> Path:
        """The endpoint of the router's replica ``name`` (as the node's server.json, 0600)."""
        return self.replicas_dir / f"{check_replica_name(name)}.json"

    def make_server_dir(self, replica: str | None = None) -> Path:
        """The serving node's own directory (or replica ``replica``'s), for its owner alone (its logs name
        the node's address)."""
        directory = self.server_dir if replica is None else self.replicas_dir / check_replica_name(replica)
        try:
            for path in (directory,) if replica is None else (self.replicas_dir, directory):
                path.mkdir(parents=True, exist_ok=True)
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():  # planted by someone else
                    raise PermissionError(errno.EPERM, "it is not your own directory")
                path.chmod(0o700)
        except OSError as err:
            raise ServingError(f"cannot make the serving node's directory {directory} yours alone: "
                               f"{err.strerror}", hint="serve a repository of your own (--repository DIR)") from None
        return directory

    @contextlib.contextmanager
    def lock(self, model: str, patience: float = 0.0) -> Iterator[None]:
        """Exclusive per-model lock (flock) for the whole hand-off: versions are assigned one at a time.
        ``patience``: seconds to keep trying while another holds it (replicas restoring at once)."""
        path = self.state_dir / "locks" / f"{check_model_name(model)}.lock"
        deadline = time.monotonic() + patience
        with contextlib.ExitStack() as held:
            while True:
                try:
                    held.enter_context(_flock(path, wait=False))
                    break
                except LockBusy:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.2)
            yield

    @contextlib.contextmanager
    def state_lock(self) -> Iterator[None]:
        """Exclusive lock for a read-change-write of serving.json (short: waits for the holder)."""
        with _flock(self.state_dir / "locks" / "serving.lock", wait=True):
            yield

    def write_config(self, model: str, text: str) -> None:
        write_text_atomic(self.config_file(model), text)

    def publish(self, model: str, version: int, build: Callable[[Path], None]) -> Path:
        """Build version ``version`` with ``build(staging_dir)`` and rename it into ``<model>/<version>``."""
        final = self.version_dir(model, version)
        if final.exists():
            raise ServingError(f"version {version} of '{model}' already exists at {final}")
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=self.staging_dir, prefix=f"{model}-{version}-"))
        try:
            build(stage)
            stage.chmod(0o755)
            if version > self.last_assigned(model):
                write_text_atomic(self.state_dir / "versions" / model, f"{version}\n")
            os.rename(stage, final)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return final

    def remove_version(self, model: str, version: int) -> None:
        """Take ``<model>/<version>`` out of the repository (renamed away first, then deleted)."""
        final = self.version_dir(model, version)
        if not final.exists():
            return
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        trash = Path(tempfile.mkdtemp(dir=self.staging_dir, prefix=f"removed-{model}-{version}-"))
        os.rename(final, trash / "v")
        shutil.rmtree(trash, ignore_errors=True)


REPLICA_NAME_RE = re.compile(r"r-[0-9a-f]{6}")  # the router's names for its replicas (file names)


def check_replica_name(name: str) -> str:
    if REPLICA_NAME_RE.fullmatch(name) is None:
        raise InputError(f"a replica's name is r- and 6 hex digits (the router names them), got {shown(name)}")
    return name


class LockBusy(ServingError):
    """Another process holds the lock."""


@contextlib.contextmanager
def _flock(path: Path, *, wait: bool) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(f"another hand-off of model '{path.stem}' is running (lock {path})") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
