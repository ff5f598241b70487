"""Slurm outages without touching the shared cluster: a slurm.conf copy that points a tool at a
controller or slurmdbd that is closed (a free port) or hung (a listener that never answers)."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path


class SilentListener:
    """A TCP listener that accepts connections and never answers: a hung slurmctld or slurmdbd."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                self.held.append(self.sock.accept()[0])

    def __enter__(self) -> SilentListener:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        for conn in self.held:
            conn.close()
        self.sock.close()


def conf_copy(original: Path, into: Path, **changes: str) -> Path:
    """A copy of the cluster's config directory, readable by the cluster user, with some slurm.conf
    settings replaced. MessageTimeout=1 keeps each failure short (the tools retry ~2 x MessageTimeout)."""
    into.mkdir()
    for name in ("gres.conf", "cgroup.conf", "plugstack.conf"):
        if (original.parent / name).is_file():
            (into / name).write_bytes((original.parent / name).read_bytes())
    changes = {"MessageTimeout": "1", **changes}
    lines = [line for line in original.read_text().splitlines() if line.split("=", 1)[0] not in changes]
    (into / "slurm.conf").write_text("\n".join([*lines, *(f"{k}={v}" for k, v in changes.items())]) + "\n")
    for path in (into, *into.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return into / "slurm.conf"


def free_port() -> int:
    """A local port nothing listens on (bound and released: nobody else will take it this instant)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
