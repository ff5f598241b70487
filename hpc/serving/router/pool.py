"""The replicas behind the router and which one answers the next request (no I/O here).

A request goes to the eligible replica with the fewest requests in flight (ties broken at random):
eligible = healthy, not draining, and, as far as the last probe knows, with the model (at the version)
READY. When no replica has it ready, any healthy one is tried, so that the client gets Triton's own
answer ("unknown model") instead of the router's guess.

A replica becomes unhealthy at once when a request to it fails at the connection level, and when a probe
fails; it becomes healthy again when a probe succeeds. Draining: no new requests, in-flight ones finish.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from hpc.errors import ServingError


class ReplicaBusy(ServingError):
    """A replica that still has requests in flight cannot be removed."""


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")


@dataclass
class Replica:
    """One Triton server: where it listens and what the router knows about it."""

    name: str
    host: str
    http_port: int
    grpc_port: int
    healthy: bool = False  # until its first probe
    draining: bool = False
    in_flight: int = 0
    ready: frozenset[tuple[str, str]] = frozenset()  # (model, version) READY at the last probe
    problem: str = ""  # why it is unhealthy, for the state and the log

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def serves(self, model: str, version: str) -> bool:
        if version:
            return (model, version) in self.ready
        return any(name == model for name, _ in self.ready)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "host": self.host, "http_port": self.http_port, "grpc_port": self.grpc_port,
                "healthy": self.healthy, "draining": self.draining, "in_flight": self.in_flight,
                "ready": sorted(f"{m}:{v}" for m, v in self.ready), "problem": self.problem}


def parse_replica(data: object) -> Replica:
    """A replica from its JSON form ``{"host", "http_port", "grpc_port", "name"?}``; else one line."""
    if not isinstance(data, dict) or set(data) - {"host", "http_port", "grpc_port", "name"}:
        raise ServingError(f"a replica is {{host, http_port, grpc_port, name?}}, got {data!r}")
    host, http, grpc = data.get("host"), data.get("http_port"), data.get("grpc_port")
    if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}", host):
        raise ServingError(f"replica host must be a host name or address, got {host!r}")
    for key, port in (("http_port", http), ("grpc_port", grpc)):
        if type(port) is not int or not 0 < port < 65536:
            raise ServingError(f"replica {key} must be a port number (1-65535), got {port!r}")
    name = data.get("name", f"{host}:{http}")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ServingError(f"replica name must be letters, digits, '_', '.', ':', '-', got {name!r}")
    assert isinstance(http, int) and isinstance(grpc, int)  # checked above; for mypy
    return Replica(name, host, http, grpc)


@dataclass
class Pool:
    replicas: dict[str, Replica] = field(default_factory=dict)

    def add(self, replica: Replica) -> None:
        if replica.name in self.replicas:
            raise ServingError(f"replica {replica.name} is already in the pool",
                               hint="remove it first, or give the new one another name")
        self.replicas[replica.name] = replica

    def get(self, name: str) -> Replica:
        try:
            return self.replicas[name]
        except KeyError:
            raise ServingError(f"no replica named {name!r} (replicas: {', '.join(self.replicas) or 'none'})") from None

    def drain(self, name: str) -> Replica:
        replica = self.get(name)
        replica.draining = True
        return replica

    def remove(self, name: str) -> Replica:
        """Take a replica out; refused while requests are in flight on it (drain it and wait first)."""
        replica = self.get(name)
        if replica.in_flight:
            raise ReplicaBusy(f"replica {name} has {replica.in_flight} request(s) in flight",
                               hint="drain it first and wait until they finish")
        return self.replicas.pop(name)

    def pick(self, model: str, version: str, exclude: frozenset[str] = frozenset()) -> Replica | None:
        """The replica for the next request for ``model`` at ``version`` ('' = any), or None."""
        usable = [r for r in self.replicas.values() if r.healthy and not r.draining and r.name not in exclude]
        eligible = [r for r in usable if r.serves(model, version)] or usable
        if not eligible:
            return None
        least = min(r.in_flight for r in eligible)
        return random.choice([r for r in eligible if r.in_flight == least])

    def failed(self, replica: Replica, problem: str) -> None:
        replica.healthy, replica.problem = False, problem

    def probed(self, replica: Replica, ready: frozenset[tuple[str, str]] | None, problem: str = "") -> None:
        """A probe's result: the models READY on it, or None with the problem when it did not answer."""
        if ready is None:
            self.failed(replica, problem)
        else:
            replica.healthy, replica.ready, replica.problem = True, ready, ""

    def any_ready(self) -> bool:
        return any(r.healthy and not r.draining for r in self.replicas.values())


def replica_from_spec(text: str) -> Replica:
    """A replica from ``HOST:HTTP_PORT:GRPC_PORT`` (the CLI's form)."""
    host, _, ports = text.rpartition(":")
    host, _, http = host.rpartition(":")
    if not host or not http.isdigit() or not ports.isdigit():
        raise ServingError(f"a replica is HOST:HTTP_PORT:GRPC_PORT, got {text!r}")
    return parse_replica({"host": host, "http_port": int(http), "grpc_port": int(ports)})
