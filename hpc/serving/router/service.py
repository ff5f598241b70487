"""The router as part of the service: started by ``hpc-tf serve up --router`` as a Slurm job on the
site's serving partition (rendered and submitted as the serving node is) or as a local process,
stopped by ``serve down``, shown by ``serve status``.

Either way it runs :func:`run_router_service`: it listens on its node's address (a job) or the given
one, takes the repository's serving node as its replica when one is registered, routes by the splits
recorded in serving.json, and registers ``router.json`` (0600). Its control API answers only the
owner's key, the serving node's secret, read from the owner's config directory (never on a command line).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc.atomic import write_text_atomic
from hpc.backends import Backend
from hpc.errors import ConfigError, HpcTfError, ServingError
from hpc.render.cpu_jobs import ServeJob, render_router_script
from hpc.resolve import ResolvedJob
from hpc.runtime.node.processes import alive
from hpc.scheduler import JobState
from hpc.serving.repository import Repository
from hpc.serving.router.launchers import launcher_for
from hpc.serving.router.pool import Replica, replica_from_spec
from hpc.serving.router.replicas import REPLACE_MARGIN_S, ReplicaController
from hpc.serving.router.run import RouterEndpoint, read_router, run_router
from hpc.serving.server import read_endpoint
from hpc.serving.slurm_node import SERVE_CPUS, UP_TIMEOUT_S, node_address, resolve_serving_job, wait_for_job
from hpc.serving.state import ServingState
from hpc.site.load import load_site
from hpc.units import parse_duration

if TYPE_CHECKING:
    from hpc.serving.router.core import Router

ROUTER_JOB_NAME = "hpc-tf-router"
STOP_REPLICAS_S = 120.0  # drain (in-flight requests finish) and scancel each replica
ROUTER_MEM = "1000M"  # one asyncio process (aiohttp, grpcio): ~200 MB under load, no model in it
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RouterPlan:
    repository: Repository
    job: ServeJob
    script: str
    resolved: ResolvedJob  # for the backend's quota preflight

    @property
    def script_path(self) -> Path:
        return self.repository.server_dir / "router.sbatch"


def plan_router_job(site: str | None, overrides: Sequence[str], repo: Repository,
                    time_limit: str | None = None) -> RouterPlan:
    """The router's job for ``repo``, resolved (the serving partition's limits apply) and rendered."""
    loaded = load_site(site, overrides)
    try:
        time_seconds = parse_duration(time_limit or loaded.config.default_time)
    except ValueError as err:
        raise ConfigError(f"--time: {err}") from None
    job = resolve_serving_job(loaded, repo, time_seconds, ROUTER_JOB_NAME, "router-node", ROUTER_MEM,
                              site_argv(site, overrides))
    serve = ServeJob(site=loaded.config.name, repository=str(repo.root), command=job.command,
                     log=str(repo.server_dir / "router-slurm"), partition=job.partition, account=job.account,
                     qos=job.qos, time_seconds=job.time_seconds, cpus=SERVE_CPUS, mem=job.mem,
                     module_init=job.module_init, modules=job.modules, name=ROUTER_JOB_NAME)
    return RouterPlan(repo, serve, render_router_script(serve), job)


def site_argv(site: str | None, overrides: Sequence[str]) -> list[str]:
    """The site as ``serve up`` was given it, for the router's command line: the router reads it as the
    command did."""
    return [*(("--site", site) if site is not None else ()), *(word for o in overrides for word in ("--set", o))]


def registered_router(repo: Repository) -> RouterEndpoint | None:
    """The repository's router when one is registered and readable (None: nothing, or a damaged file that
    :func:`read_router` names)."""
    if not repo.router_file.is_file():
        return None
    try:
        return read_router(repo)
    except HpcTfError:
        return None


def router_runs(endpoint: RouterEndpoint, backend: Backend | None) -> bool:
    """Whether a registered router still runs: its job is not over, or its local process (on this host)
    is alive and a router (a killed one's pid may be a zombie, or reused)."""
    if endpoint.job_id is None:
        return endpoint.hostname == socket.gethostname() and alive(endpoint.pid) and _is_router(endpoint.pid)
    if backend is None:
        return True
    status = backend.query([endpoint.job_id]).get(endpoint.job_id)
    return status is not None and not status.state.is_terminal


def start_router_job(plan: RouterPlan, backend: Backend,
                     on_submitted: Callable[[str, Path], None] | None = None,
                     timeout: float = UP_TIMEOUT_S) -> RouterEndpoint:
    """Submit the router's job through the backend (its quota preflight, its submit) and wait until the
    router registered; refused while a router of the repository still runs."""
    backend.check_quota(plan.resolved)
    _refuse_running(plan.repository, backend)
    plan.repository.make_server_dir()
    write_text_atomic(plan.script_path, plan.script, mode=0o755)
    with backend.submitting(plan.script_path):
        job_id = backend.submit(plan.script_path)
    if on_submitted is not None:
        on_submitted(job_id, plan.script_path)

    def registered() -> RouterEndpoint | None:
        found = registered_router(plan.repository)
        return found if found is not None and found.job_id == job_id else None

    return wait_for_job(registered, job_id, backend.scheduler, "router",
                        plan.repository.server_dir / f"router-slurm-{job_id}.out", timeout)


def start_local_router(repo: Repository, host: str = "127.0.0.1", site: Sequence[str] = (),
                       timeout: float = 60.0) -> RouterEndpoint:
    """Start the router as a local process of its own session (it outlives this command); wait until it
    registered (``site``: :func:`site_argv`). Its output goes to ``<repository>/.hpc-tf/server/router.log``."""
    _refuse_running(repo, None)
    log = repo.make_server_dir() / "router.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hpc.cli", "serve", "router-node", "--repository",
                                 str(repo.root), "--host", host, *site], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = registered_router(repo)
        if found is not None and found.pid == proc.pid:
            return found
        if proc.poll() is not None:
            raise ServingError(f"the router exited ({proc.returncode}) before it was ready", hint=f"its log: {log}")
        time.sleep(0.2)
    proc.terminate()
    raise ServingError(f"the router is not ready after {timeout:.0f} s", hint=f"its log: {log}")


def stop_router(repo: Repository, backend: Backend | None) -> RouterEndpoint:
    """Cancel the router's job (``backend``: Slurm's) or stop its local process by its pid; wait until it
    ended; drop its registration if it could not do so itself."""
    endpoint = read_router(repo)
    if endpoint.job_id is not None:
        if backend is None:
            raise ServingError(f"the router runs as Slurm job {endpoint.job_id}",
                               hint=f"hpc-tf cancel {endpoint.job_id}")
        job_id = endpoint.job_id
        backend.cancel([job_id])

        def ended() -> bool:
            return _job_over(backend, job_id)
    else:
        if alive(endpoint.pid) and _is_router(endpoint.pid):
            os.kill(endpoint.pid, signal.SIGTERM)

        def ended() -> bool:
            return not alive(endpoint.pid) or not _is_router(endpoint.pid)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while not ended():
        if time.monotonic() > deadline:
            raise ServingError(f"the router ({endpoint.job_id or endpoint.pid}) did not stop within "
                               f"{STOP_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
    current = registered_router(repo)
    if current is not None and (current.pid, current.job_id) == (endpoint.pid, endpoint.job_id):
        repo.router_file.unlink(missing_ok=True)  # killed before it could unregister itself
    return endpoint


def run_router_service(repository: Path, host: str | None = None, site: str | None = None,
                       overrides: Sequence[str] = ()) -> int:
    """Inside the router's job or local process: route for ``repository`` until signalled. ``site`` and
    ``overrides``: the site ``serve up --router`` was given (checked here, as the replicas the router
    starts are planned on it)."""
    load_site(site, overrides)
    repo = Repository.at(repository)
    pool, replicas_by = router_targets(repo, (), site, overrides)
    job_id = os.environ.get("SLURM_JOB_ID")
    return run_router(repo, pool, host=host or (node_address() if job_id else "127.0.0.1"), job_id=job_id,
                      replicas_by=replicas_by)


def router_targets(repo: Repository, named: Sequence[str], site: str | None, overrides: Sequence[str],
                   replica_time: str | None = None, margin: float | None = None,
                   ) -> tuple[list[Replica], Callable[[Router], ReplicaController]]:
    """What a router sends requests to: the replicas ``named`` (HOST:HTTP:GRPC), else its own replicas when
    a count is recorded (``serve scale``, ``--replicas``), else the repository's serving node; and the
    controller that keeps the recorded count (Slurm jobs on a Slurm site, else local processes)."""
    autoscale = load_site(site, overrides).config.serving.autoscale
    if named:
        pool = [replica_from_spec(spec) for spec in named]
    elif ServingState.read(repo).service is not None or autoscale is not None:
        pool = []  # the router's own replicas only
    else:
        node = read_endpoint(repo)
        pool = [replica_from_spec(f"{node.host}:{node.http_port}:{node.grpc_port}")]
    launcher = launcher_for(repo, site, overrides, replica_time, no_queue=autoscale is not None)

    def controller(router: Router) -> ReplicaController:
        made = ReplicaController(router, repo, launcher, margin=REPLACE_MARGIN_S if margin is None else margin)
        if autoscale is not None:
            from hpc.serving.router.autoscale import Autoscaler

            made.autoscaler = Autoscaler(router, made, autoscale)
        return made
    return pool, controller


def stop_replicas(repo: Repository, timeout: float = STOP_REPLICAS_S) -> None:
    """``serve down``: the router drains and stops the replicas it started, leaving their recorded count for
    the next ``serve up --router``; returns once none is left (or says which are, after ``timeout``)."""
    from hpc.serving.router import client

    try:
        service = client.service(repo)
    except ServingError:  # no controller (a router in front of the node only), or no router answering
        return
    if service.get("replicas") is None:
        return
    client.scale(repo, 0, record=False)
    deadline = time.monotonic() + timeout
    while (left := client.service(repo)["managed"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        raise ServingError(f"the router did not stop its replicas within {timeout:.0f} s: "
                           f"{', '.join(m['name'] for m in left)}",
                           hint="see the router's log; their jobs are named hpc-tf-replica (scancel them)")


def router_lines(info: dict[str, Any]) -> list[str]:
    """``serve status``'s lines for the router's state (its control API's /state): each split, each
    variant's traffic over the router's window, each replica."""
    lines = []
    for public, split in info.get("splits", {}).items():
        total = sum(v["weight"] for v in split["variants"]) or 1
        shares = ", ".join(f"{v['model']}:{v['version'] or 'served'} {100 * v['weight'] / total:g}%"
                           for v in split["variants"])
        sticky = f" (sticky by {split['sticky_header']})" if split.get("sticky_header") else ""
        lines.append(f"  split {public}: {shares}{sticky}")
    for entry in info.get("traffic", []):
        lines.append(f"  traffic {entry['public']} -> {entry['model']}:{entry['version']}: {entry['requests']} "
                     f"requests in the last {entry['window_s']} s ({entry['rate']:.1f}/s), errors "
                     f"{100 * entry['error_rate']:.1f}%, p50 {_ms(entry['p50_s'])}, p99 {_ms(entry['p99_s'])}")
    for replica in info.get("replicas", []):
        state = "draining" if replica["draining"] else "healthy" if replica["healthy"] else "UNHEALTHY"
        job = f" job {replica['job']}" if replica.get("job") else ""
        problem = f": {replica['problem']}" if replica.get("problem") else ""
        lines.append(f"  replica {replica['name']}{job} on {replica['host']}: {state}{problem}, "
                     f"{replica['in_flight']} in flight")
    auto = info.get("autoscale")
    if isinstance(auto, dict) and auto.get("options"):
        options = auto["options"]
        lines.append(f"  autoscale: {options['min_replicas']}-{options['max_replicas']} replica(s)"
                     f"{' (to zero when idle)' if options['scale_to_zero'] else ''}, target "
                     f"{options['target_in_flight']:g} in flight each; now {auto.get('average_in_flight', 0):g} "
                     f"in flight on average, {auto.get('wanted', '-')} wanted: {auto.get('why', 'starting')}")
        if auto.get("refused"):
            lines.append(f"  {auto['refused']}")
    service = info.get("service")
    if isinstance(service, dict):
        lines.append(f"  service: {service.get('replicas')} replica(s) wanted"
                     + (f"; refused: {service['refused']}" if service.get("refused") else ""))
        for managed in service.get("managed", []):
            job = f"job {managed['job_id']}" if managed.get("job_id") else "local process"
            scheduler = [str(managed["scheduler_state"])] if managed.get("scheduler_state") else []
            if managed.get("time_left_s") is not None:
                scheduler.append(f"{managed['time_left_s']} s left")
            shown = f" ({', '.join(scheduler)})" if scheduler else ""
            lines.append(f"  replica {managed['name']} ({job} on {managed.get('node') or '?'}): "
                         f"{managed['state']}{shown}, {managed.get('in_flight', 0)} in flight")
    return lines


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else "> 10 s" if seconds == float("inf") else f"<= {1000 * seconds:g} ms"


def _refuse_running(repo: Repository, backend: Backend | None) -> None:
    """Refuse while the registered router runs; forget one that no longer does (killed, it could not
    unregister: its pid must not pass for the new router's)."""
    old = registered_router(repo)
    if old is None:
        return
    if router_runs(old, backend):
        where = f"Slurm job {old.job_id}" if old.job_id else f"pid {old.pid}"
        raise ServingError(f"a router for {repo.root} already runs as {where} ({old.http_url})",
                           hint="use it, or stop it first: hpc-tf serve down")
    repo.router_file.unlink(missing_ok=True)


def _job_over(backend: Backend, job_id: str) -> bool:
    status = backend.query([job_id]).get(job_id)
    return status is not None and (status.state.is_terminal or status.state is JobState.UNKNOWN)


def _is_router(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return b"router-node" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False
