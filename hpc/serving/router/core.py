"""The router's state and its one forwarding path, shared by the HTTP and the gRPC front.

Bound on a replica that dies (SIGKILL, scancel, node lost): the router stops sending to it at the first
request to it that fails at the connection level (that request is retried once on another replica, so
clients see no failure for it), and at the latest one probe interval plus the probe timeout after it
stops answering (defaults 1 s + 2 s; a probe's two calls share the timeout) when no request reaches it
first. Inference through the router is therefore at-least-once: stateful (sequence) models are not
supported.
"""

from __future__ import annotations

import asyncio
import hmac
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from hpc.errors import ServingError
from hpc.serving.canary import Canaries
from hpc.serving.repository import Repository
from hpc.serving.router.metrics import Metrics, Series
from hpc.serving.router.pool import Pool, Replica
from hpc.serving.router.split import Split, choose
from hpc.serving.router.window import TrafficWindow
from hpc.serving.secret import INFERENCE_HEADER, NodeSecret
from hpc.serving.state import ServingState, split_to_dict, update_state

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
T = TypeVar("T")


class ReplicaDown(Exception):
    """A request could not reach its replica (refused, reset, closed): it may go to another one."""


class NoReplica(ServingError):
    """No healthy replica to send a request to."""


@dataclass(frozen=True)
class Route:
    """Where one request goes: the name the client used and the model/version that answers it."""

    public: str
    model: str
    version: str  # '' = the version(s) the model serves


class Router:
    def __init__(self, secret: NodeSecret, repository: Repository | None = None,
                 probe_interval: float = PROBE_INTERVAL_S, probe_timeout: float = PROBE_TIMEOUT_S) -> None:
        """``repository``: where the splits are recorded (serving.json) and read back from at start; None
        keeps them in memory only (unit tests)."""
        self.secret = secret
        self.repository = repository
        self.pool = Pool()
        self.splits: dict[str, Split] = dict(ServingState.read(repository).splits) if repository else {}
        self.metrics = Metrics()
        self.window = TrafficWindow()  # the last minute per variant, for serve status
        self.probe_interval, self.probe_timeout = probe_interval, probe_timeout
        self._session: aiohttp.ClientSession | None = None
        self.canaries = Canaries(self)
        # set by the autoscaler (serving.autoscale): waits, bounded, for a replica when none serves
        self.hold: Callable[[], Awaitable[None]] | None = None
        self.autoscaler_state: Callable[[], dict[str, object]] | None = None

    # ------------------------------------------------------------------ access
    def is_owner(self, presented: str | None) -> bool:
        """Whether a control request carries the owner's secret (constant-time compare)."""
        return presented is not None and hmac.compare_digest(presented.encode(), self.secret.control.encode())

    def may_infer(self, presented: str | None) -> bool:
        """Inference is open unless the owner asked for an inference token (then only with it), as on the
        node: health, readiness and metadata stay open."""
        token = self.secret.inference
        return token is None or (presented is not None and hmac.compare_digest(presented.encode(), token.encode()))

    def upstream_headers(self, control: bool) -> dict[str, str]:
        """The headers the replicas (locked with the same secret) need: the inference token when they ask
        for one, the control key only for control calls (model config, repository index)."""
        headers = self.secret.http_headers()
        return headers if control else {k: v for k, v in headers.items() if k == INFERENCE_HEADER}

    # ------------------------------------------------------------------ routing
    def route(self, name: str, version: str, header: Callable[[str], str | None]) -> Route:
        split = self.splits.get(name)
        if split is None:
            return Route(name, name, version)
        variant = choose(split, header(split.sticky_header) if split.sticky_header else None)
        return Route(name, variant.model, "" if variant.version is None else str(variant.version))

    async def forward(self, route: Route, send: Callable[[Replica], Awaitable[tuple[T, bool]]],
                      inference: bool = True) -> T:
        """Send one request (``send`` returns its answer and whether it succeeded, or raises
        :class:`ReplicaDown`); a replica that is down is marked at once and the request retried once elsewhere.
        Only inferences count in the variant's series (what canary gates, the autoscaler and ``serve status``
        read); a metadata or readiness call counts on its replica only."""
        variant = self.metrics.variant(route.public, route.model, route.version or "-") if inference else Series()
        variant.start()
        started, ok, tried = time.monotonic(), False, frozenset[str]()
        try:
            for _ in range(2):
                replica = self.pool.pick(route.model, route.version, tried)
                if replica is None and not tried and self.hold is not None:
                    await self.hold()  # NoReplica after its bound
                    replica = self.pool.pick(route.model, route.version, tried)
                if replica is None:
                    raise NoReplica(f"no healthy replica can answer {route.model}"
                                    + (f" version {route.version}" if route.version else ""))
                tried |= {replica.name}
                series = self.metrics.replica(replica.name)
                series.start()
                replica.in_flight += 1
                t0 = time.monotonic()
                try:
                    answer, ok = await send(replica)
                    return answer
                except ReplicaDown as err:
                    self._mark_down(replica, str(err))
                finally:
                    replica.in_flight -= 1
                    series.finish(time.monotonic() - t0, ok)
            raise NoReplica(f"no replica could be reached for {route.model}")
        finally:
            variant.finish(time.monotonic() - started, ok)
            if inference:
                self.window.record(route.public, route.model, route.version, time.monotonic() - started, ok)

    def _mark_down(self, replica: Replica, problem: str) -> None:
        if replica.healthy:
            print(f"hpc-tf router: replica {replica.name} unhealthy: {problem}", file=sys.stderr, flush=True)
        self.pool.failed(replica, problem)

    # ------------------------------------------------------------------ probes
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # auto_decompress off: bodies pass through as the replica sent them
            self._session = aiohttp.ClientSession(auto_decompress=False,
                                                  connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60))
        return self._session

    async def probe(self, replica: Replica) -> None:
        """Ask a replica whether it is ready and which model versions are READY on it (both answers within
        the probe timeout, or it is marked unhealthy)."""
        try:
            ready = await asyncio.wait_for(self._ready_models(replica), self.probe_timeout)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, ReplicaDown) as err:
            self._mark_down(replica, str(err) or type(err).__name__)
            return
        if not replica.healthy:
            print(f"hpc-tf router: replica {replica.name} healthy", file=sys.stderr, flush=True)
        self.pool.probed(replica, ready)

    async def _ready_models(self, replica: Replica) -> frozenset[tuple[str, str]]:
        async with self.session.get(f"{replica.http_url}/v2/health/ready") as resp:
            if resp.status != 200:
                raise ReplicaDown(f"not ready (HTTP {resp.status})")
        # the index is a control API: the replicas are locked with the same owner's key
        async with self.session.post(f"{replica.http_url}/v2/repository/index", json={"ready": True},
                                     headers=self.upstream_headers(control=True)) as resp:
            index: Any = await resp.json(content_type=None) if resp.status == 200 else []
        return frozenset((str(m["name"]), str(m.get("version", ""))) for m in index
                         if isinstance(m, dict) and m.get("state") == "READY" and "name" in m)

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(r) for r in list(self.pool.replicas.values())))

    async def probe_forever(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self.probe_interval)

    async def close(self) -> None:
        await self.canaries.stop()
        if self._session is not None:
            await self.session.close()
            self._session = None

    # ------------------------------------------------------------------ state
    def set_split(self, name: str, split: Split | None) -> None:
        """Record the split of ``name`` (None removes it) in serving.json, then route by it: a router or node
        that starts later serves what was set, and a split that could not be recorded is not applied."""
        if self.repository is not None:
            update_state(self.repository, lambda state: state.with_split(name, split))
        if split is None:
            self.splits.pop(name, None)
        else:
            self.splits[name] = split

    def state(self) -> dict[str, object]:
        return {"replicas": [r.to_dict() for r in self.pool.replicas.values()],
                "splits": {name: split_to_dict(s) for name, s in sorted(self.splits.items())},
                "traffic": self.window.summary(),
                **({} if self.autoscaler_state is None else {"autoscale": self.autoscaler_state()})}

