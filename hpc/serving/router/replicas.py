"""The router's replica controller: keeps the service at N Triton replicas (``service.replicas`` in
serving.json, so that a restarted router keeps the count; ``hpc-tf serve scale``).

A replica is a serving node (``hpc-tf serve node --replica NAME``): a Slurm job on the site's serving
partition (submitted through the GPU quota preflight like any job), or a local process on a site without
Slurm. It restores the recorded versions before it writes its own endpoint file
(``.hpc-tf/replicas/<name>.json``, 0600). Once per cycle the controller:

- asks the scheduler about all its jobs in one batched query (state, time left);
- removes a replica whose job or process ended unexpectedly (a replacement follows from the count);
- admits a coming replica to the pool only when its endpoint exists, it is ready, every recorded version
  is READY on it and the hand-off's parity samples give the trained model's outputs on it (no samples
  recorded: readiness is the gate, and the log says so);
- gives a replica with less than :data:`REPLACE_MARGIN_S` left a replacement first, and drains and
  cancels it once the replacement takes traffic;
- starts replicas up to N (a pending job counts as coming), and scales down by draining (no new requests,
  in-flight ones finish) before it cancels: coming ones first, then the newest.

A quota refusal is recorded, logged and shown in the state; it is not retried until the count changes.
Every decision is one line on the router's stderr, with its inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hpc.atomic import write_text_atomic
from hpc.errors import HpcTfError, InputError, QuotaRefused, ServingError
from hpc.records import read_record
from hpc.serving.repository import Repository, check_replica_name
from hpc.serving.router.core import Router
from hpc.serving.router.launchers import Launcher, Managed
from hpc.serving.router.pool import Replica
from hpc.serving.state import ServingState, update_state

if TYPE_CHECKING:
    from hpc.serving.router.autoscale import Autoscaler

CYCLE_S = 1.0
# time left under which a replica gets a replacement: one replica's start (queue wait, tritonserver,
# restoring the recorded versions) takes well under this on the clusters we know
REPLACE_MARGIN_S = 180.0
STARTED = "started.json"  # in a replica's directory: its job id or process id, for a router started later


def log(message: str) -> None:
    print(f"hpc-tf router: replicas: {message}", file=sys.stderr, flush=True)


class ReplicaController:
    def __init__(self, router: Router, repo: Repository, launcher: Launcher, cycle: float = CYCLE_S,
                 margin: float = REPLACE_MARGIN_S) -> None:
        self.router, self.repo, self.launcher = router, repo, launcher
        self.cycle, self.margin = cycle, margin
        service = ServingState.read(repo).service
        self.wanted: int | None = None if service is None else service.replicas  # None: manages nothing
        self.managed: dict[str, Managed] = {}
        self.refused: tuple[int, str] | None = None  # (count it was refused at, why)
        self._changed = asyncio.Event()
        self.autoscaler: Autoscaler | None = None  # serving.autoscale: sets the count on load
        self.stopping = False  # serve down: the count it set stays (the autoscaler no longer changes it)

    # ------------------------------------------------------------------ control
    def scale(self, replicas: int, record: bool = True) -> None:
        """Record the count in serving.json (a restarted router keeps it), then act on it. ``record`` False
        (``serve down``): act on it only, so the next ``serve up --router`` starts the recorded count again."""
        if record:
            update_state(self.repo, lambda state: state.with_service(replicas))
        log(f"scale to {replicas} (was {self.wanted}){'' if record else ', not recorded: the service stops'}")
        self.stopping = not record
        self.wanted = replicas
        self._changed.set()

    def state(self) -> dict[str, object]:
        auto = self.autoscaler.options if self.autoscaler is not None else None
        return {"replicas": self.wanted, "refused": self.refused[1] if self.refused else None,
                "margin_s": self.margin, "managed": [m.to_dict() for m in self.managed.values()],
                # the bounds the autoscaler keeps the count in: a count set by hand holds until its next decision
                "autoscale": None if auto is None else {"min_replicas": 0 if auto.scale_to_zero else auto.min_replicas,
                                                        "max_replicas": auto.max_replicas}}

    def add_routes(self, app: web.Application) -> None:
        """``GET|PUT /hpc-tf/router/service`` (the owner only, as every control route)."""
        from hpc.serving.router.http_front import CONTROL_PREFIX, _json

        async def get(_: web.Request) -> web.Response:
            return web.json_response(self.state())

        async def put(request: web.Request) -> web.Response:
            body = await _json(request)
            count = body.get("replicas") if isinstance(body, dict) else None
            record = body.get("record", True) if isinstance(body, dict) else True
            if not isinstance(count, int) or isinstance(count, bool) or not isinstance(record, bool):
                raise InputError(f"the body is {{\"replicas\": N, \"record\": true|false}}, got {body!r}")
            await asyncio.to_thread(self.scale, count, record)
            return web.json_response(self.state())

        app.add_routes([web.get(f"{CONTROL_PREFIX}/service", get), web.put(f"{CONTROL_PREFIX}/service", put)])

    # ------------------------------------------------------------------ the loop
    async def run(self) -> None:
        await asyncio.to_thread(self.adopt)
        while True:
            try:
                await self.step()
            except HpcTfError as err:  # the scheduler did not answer, ...: next cycle tries again
                log(f"cycle failed: {err.message}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.cycle)

    def adopt(self) -> None:
        """Take over the replicas a router before this one started and did not stop (``started.json`` in
        each one's directory): serving, or still coming (a pending job); the first poll drops those that ended."""
        if self.wanted is None or not self.repo.replicas_dir.is_dir():
            return
        for path in sorted(self.repo.replicas_dir.glob(f"r-*/{STARTED}")):
            try:
                name = check_replica_name(path.parent.name)
                job_id, pid = read_record(path, "a replica's start record", parse=_started, owned=True,
                                          fix="remove it (and stop the replica's job or process if it still runs)")
            except HpcTfError as err:
                log(f"not adopting {path.parent.name}: {err.message}")
                continue
            self.managed[name] = Managed(name, job_id, pid=pid)
            log(f"adopting {name} (job {job_id or '-'}, pid {pid or '-'}): it takes traffic after its gate")

    async def step(self) -> None:
        seen = await asyncio.to_thread(self.launcher.poll, list(self.managed.values()))
        for managed in list(self.managed.values()):
            managed.seen = seen.get(managed.name, managed.seen)
            if managed.seen is not None and not managed.seen.running:
                self._ended(managed)
        for managed in [m for m in self.managed.values() if m.state == "coming"]:
            await self._try_admit(managed)
        self._retire_near_limit()
        await self._reconcile()
        await self._finish_drains()

    def _ended(self, managed: Managed) -> None:
        seen = managed.seen
        if managed.state != "draining":
            log(f"{managed.name} ended unexpectedly (job {managed.job_id or '-'}, state {seen.state if seen else '?'},"
                f" was {managed.state}): removed; the count brings a replacement")
        if managed.replica is not None:
            self.router.pool.failed(managed.replica, "its job ended")
            self.router.pool.drain(managed.name)
            with contextlib.suppress(ServingError):  # in-flight requests on it fail and are retried elsewhere
                self.router.pool.remove(managed.name)
        self._forget(managed)
        self.repo.replica_file(managed.name).unlink(missing_ok=True)

    async def _try_admit(self, managed: Managed) -> None:
        waiting = await self._gate(managed)
        if waiting:
            if waiting != managed.waiting:
                log(f"{managed.name} not admitted yet: {waiting}")
            managed.waiting = waiting
            return
        assert managed.replica is not None
        self.router.pool.add(managed.replica)
        managed.state, managed.waiting = "serving", ""
        log(f"{managed.name} takes traffic ({managed.replica.http_url}, job {managed.job_id or '-'}; "
            f"gate: ready, {managed.gate})")

    async def _gate(self, managed: Managed) -> str:
        """Why ``managed`` may not take traffic yet ("" = it may)."""
        from hpc.serving.server import read_endpoint

        if not self.repo.replica_file(managed.name).is_file():
            return "no endpoint yet (starting, restoring the recorded versions)"
        try:
            endpoint = await asyncio.to_thread(read_endpoint, self.repo, managed.name)
        except HpcTfError as err:
            return err.message
        if managed.job_id is not None and endpoint.job_id != managed.job_id:
            return f"its endpoint names job {endpoint.job_id}, not {managed.job_id}"
        managed.pid = endpoint.pid
        replica = Replica(managed.name, endpoint.host, endpoint.http_port, endpoint.grpc_port)
        await self.router.probe(replica)
        if not replica.healthy:
            return f"not ready: {replica.problem}"
        load = ServingState.read(self.repo).to_load()
        missing = [f"{m} v{v}" for m, versions in load.items() for v in versions if not replica.serves(m, str(v))]
        if missing:
            return f"recorded version(s) not READY on it: {', '.join(missing)}"
        problem, checked = await asyncio.to_thread(parity, self.repo, endpoint.grpc_url, self.router, load)
        if problem:
            return problem
        managed.replica, managed.gate = replica, "; ".join(checked) or "nothing recorded as serving"
        return ""

    def _retire_near_limit(self) -> None:
        for managed in self.managed.values():
            left = managed.seen.time_left if managed.seen else None
            if managed.state == "serving" and left is not None and left < self.margin:
                managed.state = "retiring"
                log(f"{managed.name} has {left:.0f} s left (< margin {self.margin:.0f} s): replacement first, "
                    "then it drains")

    async def _reconcile(self) -> None:
        if self.wanted is None:
            return
        active = [m for m in self.managed.values() if m.state in ("coming", "serving")]
        serving = [m for m in active if m.state == "serving"]
        if len(active) < self.wanted:
            if self.refused is not None and self.refused[0] == self.wanted:
                return  # refused at this count: shown in the state, not retried in a loop
            for _ in range(self.wanted - len(active)):
                if not await self._start(len(active), len(serving)):
                    break
        elif len(active) > self.wanted:
            extra = len(active) - self.wanted
            # coming ones first (nothing to drain), then the newest serving ones
            victims = sorted(active, key=lambda m: (m.state == "serving", -m.started))[:extra]
            for managed in victims:
                self._drain(managed, f"scale down: {len(active)} active > {self.wanted} wanted")
        if len(serving) >= self.wanted:
            for managed in [m for m in self.managed.values() if m.state == "retiring"]:
                self._drain(managed, f"its replacement takes traffic ({len(serving)} serving)")

    async def _start(self, active: int, serving: int) -> bool:
        name = f"r-{secrets.token_hex(3)}"
        self.repo.replica_file(name).unlink(missing_ok=True)
        try:
            job_id, pid = await asyncio.to_thread(self.launcher.start, name)
        except QuotaRefused as err:
            self.refused = (self.wanted or 0, err.message)
            log(f"start refused by the quota preflight at {self.wanted} wanted: {err.message} (not retried "
                "until the count changes)")
            return False
        except HpcTfError as err:
            log(f"start of {name} failed: {err.message}")
            return False
        self.refused = None
        self.managed[name] = Managed(name, job_id, pid=pid)
        # a router started later takes it over, even while its job waits in the queue
        write_text_atomic(self.repo.make_server_dir(name) / STARTED, json.dumps({"job_id": job_id, "pid": pid}) + "\n",
                          mode=0o600)
        log(f"start {name} (job {job_id or 'local process'}): {active} active, {serving} serving, "
            f"{self.wanted} wanted")
        return True

    def _drain(self, managed: Managed, why: str) -> None:
        log(f"drain {managed.name} ({managed.state}, in flight "
            f"{managed.replica.in_flight if managed.replica else 0}): {why}")
        managed.state = "draining"
        if managed.replica is not None:
            self.router.pool.drain(managed.name)

    async def _finish_drains(self) -> None:
        for managed in [m for m in self.managed.values() if m.state == "draining"]:
            if managed.replica is not None:
                if managed.replica.in_flight:
                    continue
                self.router.pool.remove(managed.name)
            log(f"stop {managed.name} (job {managed.job_id or 'local process'}): drained")
            await asyncio.to_thread(self.launcher.stop, managed)
            self._forget(managed)

    def _forget(self, managed: Managed) -> None:
        self.managed.pop(managed.name)
        (self.repo.replicas_dir / managed.name / STARTED).unlink(missing_ok=True)


def parity(repo: Repository, grpc_url: str, router: Router,
           load: Mapping[str, Sequence[int]]) -> tuple[str, list[str]]:
    """The hand-off's parity check on one replica: each recorded version answers its stored samples as
    the trained model did. The problem ("" = none) and what was checked, per version (one without
    recorded samples: readiness is its gate, and that is said)."""
    from hpc.serving.control import ModelControl
    from hpc.serving.samples import compare, load_samples

    checked = []
    control = ModelControl(grpc_url, router.secret)
    try:
        for model, versions in load.items():
            for version in versions:
                found = _samples_of(repo, model, version)
                if found is None:
                    checked.append(f"{model} v{version} READY, no parity samples recorded: readiness is its gate")
                    continue
                samples_path, tolerance = found
                samples = load_samples(samples_path)
                outputs, answered = control.infer(model, samples.inputs, version=version)
                ok, _, detail = compare(samples.outputs, outputs, tolerance)
                if not ok or answered != str(version):
                    return f"parity failed for {model} v{version}: {detail}", checked
                checked.append(f"{model} v{version} READY, parity {detail}")
    except HpcTfError as err:
        return f"parity check failed: {err.message}", checked
    finally:
        control.close()
    return "", checked


def _started(data: dict[str, Any]) -> tuple[str | None, int | None]:
    job_id, pid = data["job_id"], data["pid"]
    if not (job_id is None or (isinstance(job_id, str) and job_id.isdigit())):
        raise ValueError(f"job_id: not a job id: {job_id!r}")
    if not (pid is None or (isinstance(pid, int) and not isinstance(pid, bool) and pid > 1)):
        raise ValueError(f"pid: not a process id: {pid!r}")
    return job_id, pid


def _samples_of(repo: Repository, model: str, version: int) -> tuple[Path, float] | None:
    """The samples and tolerance of the newest successful hand-off of ``model`` ``version``."""
    for path in reversed(repo.handoff_records(model)):
        try:
            record: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("ok") and record.get("version") == version \
                and isinstance(record.get("samples"), str) and Path(record["samples"]).is_file():
            triton = record.get("parity", {}).get("triton", {})
            return Path(record["samples"]), float(triton.get("tolerance", 0.0))
    return None
