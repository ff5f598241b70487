"""Serving as the CLI sees it: the site's repository and format, and the node's status."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.errors import ConfigError, HpcTfError
from hpc.paths import expand_path
from hpc.serving import secret as node_secret
from hpc.serving.config import Format
from hpc.serving.repository import STATE_DIR, Repository
from hpc.serving.server import read_endpoint
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
        root = Path(expand_path(config.serving.model_repository, Path.cwd(), dict(os.environ)))
    return ServingTarget(Repository.at(root), config.serving.format, config.serving.partition or config.cpu_partition,
                         config.serving.inference_token)


def node_status(repo: Repository) -> dict[str, Any]:
    """Endpoint, readiness and every model version's state, as one JSON-able dict."""
    from hpc.serving.control import ModelControl, not_answering

    endpoint = read_endpoint(repo)
    status: dict[str, Any] = {"repository": str(repo.root), "endpoint": endpoint.__dict__ | {
        "grpc_url": endpoint.grpc_url, "http_url": endpoint.http_url}, "ready": False, "models": []}
    control = ModelControl(endpoint.grpc_url, node_secret.load(repo.root))
    try:
        status["ready"] = control.server_ready()
        if status["ready"]:
            # the repository's own state directory is listed by Triton, but is no model
            status["models"] = [m.__dict__ for m in control.index() if m.name != STATE_DIR]
        else:
            status["error"] = not_answering(endpoint.grpc_url).message
    except HpcTfError as err:
        status["error"] = err.message
    finally:
        control.close()
    return status
