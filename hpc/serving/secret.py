"""The owner's secret of a serving node: the one way hpc-tf locks Triton's control plane.

A shared cluster lets every user reach every port, and Triton's load API accepts file content (a
``model.py`` that then runs as the owner). So ``hpc-tf serve up`` generates a fresh secret per node
and tritonserver restricts its control APIs to requests that carry it (``--http-restricted-api``,
``--grpc-restricted-protocol``; lab NOTES "Restricted control APIs"). Optionally a second secret
restricts inference too: a separate one, because an inference token is meant to be handed to the
model's clients, and holding it must never let them load code into the owner's server.

The secrets live only in the owner's config directory, one 0600 file per repository
(``$XDG_CONFIG_HOME/hpc-tf/serving/<digest of the repository path>.key``): never in the model
repository (often group-readable), never in a batch script or on sbatch's command line. Every hpc-tf
command that talks to the node reads it here, and so must a future router or autoscaler.

What remains exposed: tritonserver takes the secret only on its command line, which other users on
the same host can read in /proc. A serving-node job therefore asks Slurm for a node no other user's
job shares (``--exclusive=user``); a local ``serve up`` on a shared login node is not protected
from that host's other users.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hpc.atomic import write_text_atomic
from hpc.errors import ServingError
from hpc.site.load import user_config_dir

# Triton's API groups: everything that changes or inspects the server beyond health, metadata and inference
CONTROL_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")
INFERENCE_APIS = ("inference",)
CONTROL_HEADER = "hpc-tf-key"
INFERENCE_HEADER = "hpc-tf-inference-key"
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"  # Triton expects restricted gRPC metadata under this prefix
SECRET_BYTES = 32


@dataclass(frozen=True)
class NodeSecret:
    """The secrets of one serving node; ``inference`` is None when inference is open."""

    control: str = field(repr=False)
    inference: str | None = field(default=None, repr=False)

    def _pairs(self) -> list[tuple[tuple[str, ...], str, str]]:
        pairs: list[tuple[tuple[str, ...], str, str]] = [(CONTROL_APIS, CONTROL_HEADER, self.control)]
        if self.inference is not None:
            pairs.append((INFERENCE_APIS, INFERENCE_HEADER, self.inference))
        return pairs

    def http_headers(self) -> dict[str, str]:
        """Headers for every HTTP request of the owner."""
        return {header: value for _, header, value in self._pairs()}

    def grpc_headers(self) -> dict[str, str]:
        """Metadata for every gRPC call of the owner (tritonclient's ``headers=``)."""
        return {GRPC_HEADER_PREFIX + header: value for _, header, value in self._pairs()}

    def server_flags(self) -> list[str]:
        """tritonserver's restricted-API arguments (format ``<apis>:<header>=<value>``)."""
        return [f"{flag}={','.join(apis)}:{header}={value}"
                for apis, header, value in self._pairs()
                for flag in ("--http-restricted-api", "--grpc-restricted-protocol")]


def key_file(repository: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Where the owner's secret of the node serving ``repository`` lives (keyed by its real path)."""
    digest = hashlib.sha256(str(Path(repository).expanduser().resolve()).encode()).hexdigest()[:32]
    return user_config_dir(os.environ if environ is None else environ) / "serving" / f"{digest}.key"


def create(repository: Path, *, inference_token: bool = False) -> NodeSecret:
    """A fresh secret for a node about to start on ``repository``, stored for the owner alone."""
    secret = NodeSecret(secrets.token_urlsafe(SECRET_BYTES),
                        secrets.token_urlsafe(SECRET_BYTES) if inference_token else None)
    path = key_file(repository)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = json.dumps({"repository": str(Path(repository).expanduser().resolve()), "control": secret.control,
                       "inference": secret.inference}, indent=2) + "\n"
    write_text_atomic(path, text, mode=0o600)
    return secret


def remove(repository: Path) -> None:
    """Forget the secret of a node that was stopped (``serve down``)."""
    key_file(repository).unlink(missing_ok=True)


def load(repository: Path) -> NodeSecret:
    """The owner's secret for the node serving ``repository``; refused unless only the owner can read it."""
    path = key_file(repository)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ServingError(f"no key for the serving node of {repository} ({path} missing): only the user who "
                           "started it with hpc-tf serve up can control it",
                           hint="start your own node: hpc-tf serve up") from None
    except OSError as err:
        raise ServingError(f"cannot read the serving node key {path}: {err.strerror}",
                           hint=f"remove it and start the node again: rm {path}; hpc-tf serve up") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if info.st_uid != os.geteuid():
            raise ServingError(f"the serving node key {path} belongs to uid {info.st_uid}, not to you",
                               hint=f"remove it and start the node again: rm {path}; hpc-tf serve up")
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise ServingError(f"the serving node key {path} is readable by others "
                               f"(mode {stat.S_IMODE(info.st_mode):04o})",
                               hint=f"chmod 600 {path}, or remove it and start the node again (hpc-tf serve up)")
        raw = fh.read(4096)
    try:
        data = json.loads(raw)
        control, inference = data["control"], data.get("inference")
        if not isinstance(control, str) or not control or not (inference is None or isinstance(inference, str)):
            raise ValueError("bad values")
    except (ValueError, TypeError, KeyError):
        raise ServingError(f"the serving node key {path} is damaged",
                           hint=f"remove it and start the node again: rm {path}; hpc-tf serve up") from None
    return NodeSecret(control, inference)


# /proc mount options that hide other users' processes (and so their command lines) from you
_HIDING = ("hidepid=1", "hidepid=2", "hidepid=4", "hidepid=noaccess", "hidepid=invisible", "hidepid=ptraceable")
ORDINARY_UIDS = range(1000, 60000)  # login.defs' UID_MIN..UID_MAX; system accounts lie outside


def proc_hides_others(mountinfo: str) -> bool:
    """Whether /proc, as described by /proc/self/mountinfo, hides other users' processes (``hidepid``)."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/proc" and " - proc " in line:
            options = line.rsplit(" ", 1)[-1].split(",")
            return any(option in _HIDING for option in options)
    return False


def users_who_can_read_command_lines(proc: Path = Path("/proc")) -> set[int]:
    """The ordinary users (not you) with processes on this host, when /proc shows them every command line:
    on a shared login node they could read a local serving node's secret from tritonserver's."""
    try:
        if proc_hides_others((proc / "self" / "mountinfo").read_text()):
            return set()
        entries = list(proc.iterdir())
    except OSError:
        return set()
    uids = set()
    for entry in entries:
        if entry.name.isdigit():
            try:
                uid = entry.stat().st_uid
            except OSError:  # ended meanwhile
                continue
            if uid in ORDINARY_UIDS and uid != os.geteuid():
                uids.add(uid)
    return uids
