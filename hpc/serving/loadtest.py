"""``hpc-tf serve bench``: a short, bounded load test against the service, the numbers a user needs before
announcing an endpoint (throughput, p50/p90/p99 latency and failures per concurrency).

Closed loop: each of N clients sends its next request when the previous one answered (tritonclient's asyncio
client of the protocol asked for). The endpoint is the repository's router when one is registered, else its
serving node, or the one ``--url`` names; the report says which. Inputs are the newest hand-off's parity
samples when the repository has them for the model, else random data of the dtypes and shapes the model's
metadata (from Triton, through the router too) declares. Bounded by a duration and a request cap per
concurrency, each request by a timeout; Ctrl-C ends the run and reports what was measured until then.
Never imports TensorFlow: the client is all this needs.

Only the owner's inference token is sent (when the service asks for one), never the control key, and only to
the endpoints the repository registered: a ``--url`` elsewhere gets no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hpc.errors import HpcTfError, InputError, ServingError
from hpc.serving import secret as node_secret
from hpc.serving.load_inputs import request_inputs
from hpc.serving.repository import Repository
from hpc.text import shown
from hpc.units import parse_short_duration

PROTOCOLS = ("grpc", "http")
DEFAULT_CONCURRENCY = "1,8"
DEFAULT_DURATION = "10s"
MAX_DURATION_S = 600.0  # per concurrency: a load test, not a soak test
DEFAULT_MAX_REQUESTS = 100_000  # per concurrency
MAX_CONCURRENCY = 256
REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
WARMUP_REQUESTS = 1  # one request before timing: checks the inputs fit and loads lazy parts of the model
_ERROR_KINDS = 5  # distinct error messages kept per concurrency


@dataclass(frozen=True)
class BenchSettings:
    """What to measure, checked: ``--concurrency``, ``--duration``, ``--protocol``, ``--batch``, the cap."""

    concurrency: tuple[int, ...]
    duration_s: float
    protocol: str
    batch: int
    max_requests: int


def bench_settings(concurrency: str = DEFAULT_CONCURRENCY, duration: str = DEFAULT_DURATION,
                   protocol: str = "grpc", batch: int = 1, max_requests: int = DEFAULT_MAX_REQUESTS) -> BenchSettings:
    """The CLI's words checked (InputError, one line naming the option)."""
    try:
        levels = tuple(int(word) for word in concurrency.split(","))
    except ValueError:
        raise InputError(f"--concurrency: {shown(concurrency)} is not a list of client counts (e.g. 1,8)") from None
    if not levels or any(not 1 <= n <= MAX_CONCURRENCY for n in levels):
        raise InputError(f"--concurrency: each count must be 1 to {MAX_CONCURRENCY} (got {shown(concurrency)})")
    try:
        seconds = parse_short_duration(duration)
    except ValueError as err:
        raise InputError(f"--duration: {err}") from None
    if not 0 < seconds <= MAX_DURATION_S:
        raise InputError(f"--duration: {shown(duration)} is not above 0 and at most {MAX_DURATION_S:g} s "
                         "(it is per concurrency)")
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol: {shown(protocol)} is not one of {', '.join(PROTOCOLS)}")
    if batch < 1 or max_requests < 1:
        raise InputError("--batch and --max-requests must be at least 1")
    return BenchSettings(levels, seconds, protocol, batch, max_requests)


@dataclass(frozen=True)
class Target:
    """The endpoint measured: what it is (router, serving node, --url), how it is reached, and the headers
    sent with every request (the inference token, or none)."""

    what: str
    protocol: str
    address: str  # host:port, as tritonclient takes it for either protocol
    headers: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.address}" if self.protocol == "http" else self.address


def resolve_target(repo: Repository, protocol: str, url: str | None = None) -> Target:
    """The router if one is registered, else the serving node; or ``url``. The inference token goes only
    to an endpoint the repository registered."""
    from hpc.serving.router.service import registered_router
    from hpc.serving.server import read_endpoint, registered_node

    known: dict[str, str] = {}  # address -> what, for this protocol
    node = registered_node(repo)
    if node is not None:
        known[node.grpc_url if protocol == "grpc" else node.http_url.removeprefix("http://")] = "serving node"
    router = registered_router(repo)
    if router is not None:
        known[router.grpc_url if protocol == "grpc" else router.http_url.removeprefix("http://")] = "router"
    if url is not None:
        address = _address(url)
        what = known.get(address, "--url")
    elif router is not None:
        what, address = "router", next(a for a, w in known.items() if w == "router")
    else:
        endpoint = read_endpoint(repo)  # nothing registered: its error says what to start
        what, address = "serving node", endpoint.grpc_url if protocol == "grpc" else \
            endpoint.http_url.removeprefix("http://")
    return Target(what, protocol, address, _inference_headers(repo, protocol) if what != "--url" else {})


def _address(url: str) -> str:
    """``host:port`` from ``host:port``, ``http://host:port`` or ``grpc://host:port``."""
    rest = url.strip()
    for scheme in ("http://", "grpc://"):
        rest = rest.removeprefix(scheme)
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or "/" in rest.rstrip("/") or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--url: {shown(url)} is not HOST:PORT (e.g. 127.0.0.1:8001, or http://HOST:PORT)")
    return f"{host}:{port}"


def _inference_headers(repo: Repository, protocol: str) -> dict[str, str]:
    """The inference token as this protocol carries it, when the owner's key holds one."""
    try:
        token = node_secret.load(repo.root).inference
    except HpcTfError:
        return {}  # not the owner: inference is open, or the service says it needs a token
    if token is None:
        return {}
    prefix = node_secret.GRPC_HEADER_PREFIX if protocol == "grpc" else ""
    return {prefix + node_secret.INFERENCE_HEADER: token}


@dataclass
class Level:
    """What one concurrency measured: successful requests' latencies (ms), failures by message."""

    concurrency: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    abandoned: int = 0  # in flight when Ctrl-C ended the run: neither counted as answered nor as failed

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile of the successful requests' latency (None: none succeeded)."""
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else None

    def to_dict(self) -> dict[str, Any]:
        succeeded = len(self.latencies_ms)
        return {"concurrency": self.concurrency, "seconds": round(self.seconds, 3),
                "requests": succeeded + self.failed, "succeeded": succeeded, "failed": self.failed,
                "throughput": succeeded / self.seconds if self.seconds > 0 else 0.0,
                "p50_ms": self.percentile(50), "p90_ms": self.percentile(90), "p99_ms": self.percentile(99),
                "errors": dict(self.errors), "abandoned": self.abandoned}


@dataclass
class BenchReport:
    model: str
    target: Target
    settings: BenchSettings
    inputs: str  # where the inputs came from
    warmup_requests: int = 0
    levels: list[Level] = field(default_factory=list)
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """What ``--json`` prints."""
        return {"model": self.model,
                "endpoint": {"what": self.target.what, "protocol": self.target.protocol, "url": self.target.url},
                "batch": self.settings.batch, "inputs": self.inputs, "duration_s": self.settings.duration_s,
                "max_requests": self.settings.max_requests, "warmup_requests": self.warmup_requests,
                "interrupted": self.interrupted, "levels": [level.to_dict() for level in self.levels]}


def run_bench(repo: Repository, model: str, settings: BenchSettings, url: str | None = None) -> BenchReport:
    """Measure ``model`` at each concurrency, one after the other, on the resolved endpoint."""
    from hpc.serving.names import check_model_name

    check_model_name(model)
    target = resolve_target(repo, settings.protocol, url)
    return asyncio.run(_bench(repo, model, settings, target))


async def _bench(repo: Repository, model: str, settings: BenchSettings, target: Target) -> BenchReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ValueError, RuntimeError):  # not the main thread: Ctrl-C stays KeyboardInterrupt
        loop.add_signal_handler(signal.SIGINT, stop.set)
    client = _Client(target)
    try:
        inputs, source = request_inputs(await client.metadata(model), repo, model, settings.batch)
        report = BenchReport(model, target, settings, source)
        await client.warm_up(model, inputs)
        report.warmup_requests = WARMUP_REQUESTS
        for concurrency in settings.concurrency:
            if stop.is_set():
                break
            report.levels.append(await _measure(client, model, concurrency, settings, stop))
        report.interrupted = stop.is_set()
        return report
    finally:
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        await client.close()


async def _measure(client: _Client, model: str, concurrency: int, settings: BenchSettings,
                   stop: asyncio.Event) -> Level:
    """``concurrency`` closed-loop clients until the duration, the request cap or Ctrl-C."""
    level = Level(concurrency)
    started = 0
    in_flight = 0
    t_start = time.perf_counter()
    deadline = t_start + settings.duration_s

    async def worker() -> None:
        nonlocal started, in_flight
        while not stop.is_set() and started < settings.max_requests and time.perf_counter() < deadline:
            started += 1
            in_flight += 1
            t0 = time.perf_counter()
            try:
                await client.infer(model)
            except Exception as err:  # every failure is counted, by its message
                _count_error(level.errors, err)
            else:
                level.latencies_ms.append((time.perf_counter() - t0) * 1000)
            finally:
                in_flight -= 1

    workers: asyncio.Future[Any] = asyncio.gather(*(worker() for _ in range(concurrency)))
    interrupted: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([workers, interrupted], return_when=asyncio.FIRST_COMPLETED)
    finally:
        interrupted.cancel()
        if not workers.done():  # Ctrl-C: what is in flight is abandoned, not waited for
            level.abandoned = in_flight
            workers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await workers
    level.seconds = time.perf_counter() - t_start
    return level


def _count_error(errors: Counter[str], err: BaseException) -> None:
    timed_out = isinstance(err, (TimeoutError, asyncio.TimeoutError))
    text = f"no answer within {REQUEST_TIMEOUT_S:g} s" if timed_out else _first_line(err)
    key = text[:200] if text[:200] in errors or len(errors) < _ERROR_KINDS else "(other errors)"
    errors[key] += 1


class _Client:
    """One tritonclient asyncio client of the target's protocol; every call bounded by a timeout."""

    def __init__(self, target: Target) -> None:
        try:
            import tritonclient.grpc.aio as grpcaio
            import tritonclient.http.aio as httpaio
        except ImportError as err:
            raise ServingError(f"tritonclient is not importable ({err})",
                               hint="install the serving extra: pip install 'hpc-tf[serving]'") from None
        self.target = target
        self.mod: Any = grpcaio if target.protocol == "grpc" else httpaio
        self.client: Any = grpcaio.InferenceServerClient(target.address) if target.protocol == "grpc" else \
            httpaio.InferenceServerClient(target.address, conn_limit=MAX_CONCURRENCY, conn_timeout=CONNECT_TIMEOUT_S)
        self.tensors: list[Any] = []

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()

    async def _bounded(self, call: Any, timeout: float = REQUEST_TIMEOUT_S) -> Any:
        return await asyncio.wait_for(call, timeout)

    async def metadata(self, model: str) -> dict[str, Any]:
        """The model's metadata (inputs: name, datatype, shape); one line when the endpoint does not answer
        or does not serve the model."""
        where = f"the {self.target.what} at {self.target.url} ({self.target.protocol})"
        try:
            live = await self._bounded(self.client.is_server_live(headers=self.target.headers), CONNECT_TIMEOUT_S)
        except Exception:
            live = False
        if not live:
            raise ServingError(f"nothing answers at {self.target.url} ({self.target.protocol}, {self.target.what})",
                               hint="hpc-tf serve status shows the service; or check --url and --protocol")
        try:
            if self.target.protocol == "grpc":
                answer = await self._bounded(self.client.get_model_metadata(model, headers=self.target.headers,
                                                                            as_json=True))
            else:
                answer = await self._bounded(self.client.get_model_metadata(model, headers=self.target.headers))
        except Exception as err:
            raise ServingError(f"model '{model}' is not served by {where}: {_first_line(err)}",
                               hint="hpc-tf serve status lists what is served") from None
        return dict(answer)

    async def warm_up(self, model: str, inputs: dict[str, Any]) -> None:
        """Prepare the request's tensors once and send it: a request that fails here fails them all."""
        from tritonclient.utils import np_to_triton_dtype

        self.tensors = []
        for name, array in inputs.items():
            tensor = self.mod.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            self.tensors.append(tensor)
        try:
            await self.infer(model)
        except Exception as err:
            text = _first_line(err)
            hint = ("it needs the owner's inference token, which hpc-tf sends only to the router and node the "
                    "repository registered: measure them by their registered address (hpc-tf serve status)"
                    if "restricted" in text else "hpc-tf serve predict MODEL checks the model answers its samples")
            raise ServingError(f"the first request to '{model}' at {self.target.url} failed: {text}",
                               hint=hint) from None

    async def infer(self, model: str) -> None:
        """One request with the inputs :meth:`warm_up` prepared."""
        await self._bounded(self.client.infer(model, self.tensors, headers=self.target.headers))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def report_lines(report: BenchReport) -> list[str]:
    """The terminal table: which endpoint, then one row per concurrency."""
    t = report.target
    lines = [f"{report.model} through the {t.what} at {t.url} ({t.protocol}), batch {report.settings.batch}, "
             f"inputs: {report.inputs}",
             f"{'concurrency':>11}  {'requests':>8}  {'failed':>6}  {'req/s':>9}  {'p50 ms':>8}  {'p90 ms':>8}  "
             f"{'p99 ms':>8}"]
    for level in report.levels:
        row = level.to_dict()
        ms = [f"{v:8.2f}" if v is not None else f"{'-':>8}" for v in (row["p50_ms"], row["p90_ms"], row["p99_ms"])]
        lines.append(f"{level.concurrency:>11}  {row['requests']:>8}  {row['failed']:>6}  "
                     f"{row['throughput']:>9.1f}  {'  '.join(ms)}")
        lines.extend(f"{'':>11}  {count} failed: {message}" for message, count in level.errors.items())
    if report.interrupted:
        lines.append("interrupted (Ctrl-C): the rows above are what was measured until then"
                     + "".join(f"; {lv.abandoned} request(s) in flight at c={lv.concurrency} not counted"
                               for lv in report.levels if lv.abandoned))
    return lines
