"""Serving as the CLI sees it: the site's repository and format, and the node's status."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc.errors import ConfigError, HpcTfError
from hpc.paths import expand_path
from hpc.records import read_record
from hpc.serving import secret as node_secret
from hpc.serving.config import FormatChoice
from hpc.serving.repository import Repository
from hpc.serving.server import Endpoint, read_endpoint
from hpc.serving.state import ServingState
from hpc.site.load import load_site

if TYPE_CHECKING:  # the router's modules import aiohttp and grpc: only when a router is asked for
    from hpc.backends import Backend
    from hpc.serving.router.run import RouterEndpoint


@dataclass(frozen=True)
class ServingTarget:
    repository: Repository
    format: FormatChoice
    partition: str | None
    inference_token: bool


def serving_target(site: str | None, overrides: Sequence[str], repository: Path | None = None) -> ServingTarget:
    """Repository, format and partition from the site config (``repository`` overrides the site's)."""
    config = load_site(site, overrides).config
    root = repository
    if root is None:
        if config.serving.model_repository is None:
            raise ConfigError(f"site '{config.name}' sets no serving.model_repository",
                              hint="pass --repository or --set serving.model_repository=PATH")
        root = Path(expand_path(config.serving.model_repository, "serving.model_repository", Path.cwd(),
                                     os.environ))
    return ServingTarget(Repository.at(root), config.serving.format, config.serving.partition or config.cpu_partition,
                         config.serving.inference_token)


def node_status(repo: Repository) -> dict[str, Any]:
    """Endpoint, readiness, the state of every model version in the repository, the versions recorded as
    serving (also while no node runs: what the next node loads) and the versions rolled back since each
    model's last successful hand-off, as one JSON-able dict."""
    from hpc.serving.canary import canary_lines
    from hpc.serving.control import ModelControl, not_answering

    endpoint = read_endpoint(repo) if repo.endpoint_file.is_file() else None
    versions = {model: repo.versions(model) for model in repo.models()}
    status: dict[str, Any] = {
        "repository": str(repo.root), "endpoint": None if endpoint is None else endpoint.to_dict(), "ready": False,
        "models": [], "recorded": [],
        "rolled_back": [entry for model in versions for entry in rolled_back(repo, model)]}
    try:
        state = ServingState.read(repo)
    except HpcTfError as err:
        state = ServingState()
        status["recorded_error"] = err.message
    status["canaries"] = canary_lines(state)  # in progress, rolled back (why) or promoted
    if endpoint is None:
        status["error"] = (f"no serving node runs for {repo.root}; the versions recorded as serving load when "
                           "one starts: hpc-tf serve up")
    else:
        control = ModelControl(endpoint.grpc_url, node_secret.load(repo.root))
        try:
            status["ready"] = control.server_ready()
            if status["ready"]:
                # Triton's index lists every directory of the repository (hpc-tf's own .hpc-tf too) and every
                # version it ever tried, removed (rolled-back) ones included: only what the repository holds
                status["models"] = [m.__dict__ for m in control.index()
                                    if m.name in versions and m.version in ("", *map(str, versions[m.name]))]
            else:
                status["error"] = not_answering(endpoint.grpc_url).message
        except HpcTfError as err:
            status["error"] = err.message
        finally:
            control.close()
    answered = status["ready"] and "error" not in status
    status["recorded"] = recorded(state, versions, status["models"] if answered else None)
    if repo.router_file.is_file():
        status["router"] = router_status(repo)
    return status


def router_status(repo: Repository) -> dict[str, Any]:
    """The router's endpoint and its own view (splits, traffic per variant over its window, replicas), from
    one control call to the router: no replica is asked."""
    from hpc.serving.router import client
    from hpc.serving.router.run import read_router

    try:
        found: dict[str, Any] = {"endpoint": read_router(repo).to_dict(), **client.state(repo)}
    except HpcTfError as err:
        return {"error": err.message}
    with contextlib.suppress(HpcTfError):  # the replicas it keeps (job, node, state), if it has a controller
        found["service"] = client.call(repo, "GET", "/service")
    return found


def recorded(state: ServingState, versions: dict[str, list[int]],
             index: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Each recorded (model, version) with its state on the node (``index``; None: no node answers) or the
    reason it cannot serve."""
    states = {(m["name"], m["version"]): (m["state"], m["reason"]) for m in index or []}
    found = []
    for model, served in sorted(state.models.items()):
        for version in served.versions:
            if version not in versions.get(model, []):
                now, reason = "MISSING", "no longer in the repository"
            elif index is None:
                now, reason = "NOT SERVED", "no serving node answers"
            else:
                now, reason = states.get((model, str(version)), ("UNAVAILABLE", "not loaded"))
            found.append({"model": model, "version": version, "by": served.by, "updated": served.updated,
                          "state": now, "reason": reason})
    return found


def rolled_back(repo: Repository, model: str) -> list[dict[str, Any]]:
    """The versions of ``model`` rolled back since its last successful hand-off (newest first), from the
    hand-off records: model, version, failed stage, error, record path. A damaged record is skipped."""
    found = []
    for path in reversed(repo.handoff_records(model)):
        try:
            record = read_record(path, "the hand-off record", parse=dict, fix="move it aside")
        except HpcTfError:
            continue
        if record.get("ok"):
            break
        if record.get("rolled_back") and isinstance(record.get("version"), int):
            found.append({"model": model, "version": record["version"], "failed_stage": record.get("failed_stage"),
                          "error": record.get("error"), "record": str(path)})
    return found


@dataclass(frozen=True)
class NodeUp:
    endpoint: Endpoint
    where: str  # "job 12 on node1", or "pid 345"
    readers: int = 0  # other users who can read a local node's command line (its control secret)
    router: RouterEndpoint | None = None  # with --router
    reused: bool = False  # --router: the node already ran


def serve_up(
    site: str | None,
    overrides: Sequence[str],
    repository: Path | None = None,
    *,
    slurm: bool | None = None,
    host: str = "127.0.0.1",
    time_limit: str | None = None,
    inference_token: bool | None = None,
    on_submitted: Callable[[str, Path], None] | None = None,
    router: bool = False,
) -> NodeUp:
    """``hpc-tf serve up``: a Slurm job through Slurm's backend (``slurm`` None: on a Slurm site that
    names a serving partition), else a local process. ``router``: the service, i.e. the node (kept when
    it already runs) and the router in front of it, where the node runs (a job, or a local process)."""
    from hpc.serving import slurm_node  # imports this module

    repo = serving_target(site, overrides, repository).repository
    ServingState.read(repo)  # damaged: refused before a start
    backend = None
    if slurm if slurm is not None else slurm_node.uses_slurm(site, overrides):
        from hpc.backends import SlurmBackend, slurm_scheduler

        backend = SlurmBackend(slurm_scheduler(load_site(site, overrides).config.scheduler))
    running = _running_node(repo, backend) if router else None
    if running is not None:
        up = NodeUp(running, f"job {running.job_id} on {running.hostname}" if running.job_id else f"pid {running.pid}",
                    reused=True)
    elif backend is not None:
        endpoint = slurm_node.start_slurm_node(site, overrides, backend, repository,
                                               time_limit, on_submitted, inference_token)
        up = NodeUp(endpoint, f"job {endpoint.job_id} on {endpoint.hostname}")
    else:
        from hpc.serving.secret import users_who_can_read_command_lines
        from hpc.serving.server import start_local

        target = serving_target(site, overrides, repository)
        token = target.inference_token if inference_token is None else inference_token
        endpoint = start_local(target.repository, host=host, inference_token=token)
        up = NodeUp(endpoint, f"pid {endpoint.pid}", len(users_who_can_read_command_lines()))
    if not router:
        return up
    from hpc.serving.router import service as router_service

    if backend is not None:
        plan = router_service.plan_router_job(site, overrides, repo, time_limit)
        started = router_service.start_router_job(plan, backend, on_submitted)
    else:
        started = router_service.start_local_router(repo, host, router_service.site_argv(site, overrides))
    return replace(up, router=started)


def _running_node(repo: Repository, backend: Backend | None) -> Endpoint | None:
    """The repository's registered node if it still runs (its job not over; its local process alive)."""
    from hpc.runtime.node.processes import alive
    from hpc.serving.server import registered_node

    node = registered_node(repo)
    if node is None:
        return None
    if node.job_id is None:
        return node if node.hostname == socket.gethostname() and alive(node.pid) else None
    if backend is None:
        return None
    status = backend.query([node.job_id]).get(node.job_id)
    return node if status is not None and not status.state.is_terminal else None


@dataclass(frozen=True)
class ServiceDown:
    node: Endpoint | None
    router: RouterEndpoint | None


def serve_down(site: str | None, overrides: Sequence[str], repository: Path | None = None) -> ServiceDown:
    """``hpc-tf serve down``: the router first (when one is registered), then the node: a Slurm job is
    cancelled through Slurm's backend, a local process stopped."""
    from hpc.backends import SlurmBackend, slurm_scheduler
    from hpc.serving.router import service as router_service
    from hpc.serving.server import stop_server
    from hpc.serving.slurm_node import stop_slurm_node

    repo = serving_target(site, overrides, repository).repository

    def backend() -> SlurmBackend:
        return SlurmBackend(slurm_scheduler(load_site(site, overrides).config.scheduler))

    router = None
    if repo.router_file.is_file():
        from hpc.serving.router.run import read_router

        router_service.stop_replicas(repo)
        router = router_service.stop_router(repo, backend() if read_router(repo).job_id else None)
        if not repo.endpoint_file.is_file():
            return ServiceDown(None, router)
    endpoint = read_endpoint(repo)
    if endpoint.job_id is None:
        return ServiceDown(stop_server(repo), router)
    stop_slurm_node(repo, endpoint, backend())
    return ServiceDown(endpoint, router)
