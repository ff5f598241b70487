"""Serving as the CLI sees it: the site's repository and format, and the node's status."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.errors import ConfigError, HpcTfError
from hpc.paths import expand_path
from hpc.records import read_record
from hpc.serving import secret as node_secret
from hpc.serving.config import Format
from hpc.serving.repository import Repository
from hpc.serving.server import Endpoint, read_endpoint
from hpc.serving.state import ServingState
from hpc.site.load import load_site


@dataclass(frozen=True)
class ServingTarget:
    repository: Repository
    format: Format
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
    return status


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
) -> NodeUp:
    """``hpc-tf serve up``: a Slurm job through Slurm's backend (``slurm`` None: on a Slurm site that
    names a serving partition), else a local process."""
    from hpc.serving import slurm_node  # imports this module

    ServingState.read(serving_target(site, overrides, repository).repository)  # damaged: refused before a start
    if slurm if slurm is not None else slurm_node.uses_slurm(site, overrides):
        from hpc.backends import SlurmBackend, slurm_scheduler
        from hpc.site.load import load_site

        backend = SlurmBackend(slurm_scheduler(load_site(site, overrides).config.scheduler))
        endpoint = slurm_node.start_slurm_node(site, overrides, backend, repository,
                                               time_limit, on_submitted, inference_token)
        return NodeUp(endpoint, f"job {endpoint.job_id} on {endpoint.hostname}")
    from hpc.serving.secret import users_who_can_read_command_lines
    from hpc.serving.server import start_local

    target = serving_target(site, overrides, repository)
    token = target.inference_token if inference_token is None else inference_token
    endpoint = start_local(target.repository, host=host, inference_token=token)
    return NodeUp(endpoint, f"pid {endpoint.pid}", len(users_who_can_read_command_lines()))


def serve_down(site: str | None, overrides: Sequence[str], repository: Path | None = None) -> Endpoint:
    """``hpc-tf serve down``: cancel the node's Slurm job through Slurm's backend, or stop the local process."""
    from hpc.serving.server import stop_server

    repo = serving_target(site, overrides, repository).repository
    endpoint = read_endpoint(repo)
    if endpoint.job_id is None:
        return stop_server(repo)
    from hpc.backends import SlurmBackend, slurm_scheduler
    from hpc.serving.slurm_node import stop_slurm_node
    from hpc.site.load import load_site

    stop_slurm_node(repo, endpoint, SlurmBackend(slurm_scheduler(load_site(site, overrides).config.scheduler)))
    return endpoint
