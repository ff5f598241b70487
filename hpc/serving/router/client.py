"""The owner's control calls to a repository's router (what ``hpc-tf serve`` commands and tests use):
the endpoint from ``router.json``, the key from the owner's config directory."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from hpc.errors import ServingError
from hpc.serving import secret as node_secret
from hpc.serving.repository import Repository
from hpc.serving.router.http_front import CONTROL_PREFIX
from hpc.serving.router.run import read_router

TIMEOUT_S = 30.0


def call(repo: Repository, method: str, path: str, body: object = None, timeout: float = TIMEOUT_S) -> Any:
    """One control call; the router's refusal is a ServingError with its one line."""
    endpoint = read_router(repo)
    headers = {node_secret.CONTROL_HEADER: node_secret.load(repo.root).control, "Content-Type": "application/json"}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{endpoint.http_url}{CONTROL_PREFIX}{path}", data=data, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read())["error"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {err.code}"
        raise ServingError(f"the router refused: {message}") from None
    except (urllib.error.URLError, OSError) as err:
        raise ServingError(f"the router at {endpoint.http_url} does not answer: {err}",
                           hint="is it running? hpc-tf serve router") from None


def state(repo: Repository) -> Any:
    return call(repo, "GET", "/state")


def set_split(repo: Repository, public: str, split: dict[str, object]) -> Any:
    return call(repo, "PUT", f"/splits/{urllib.parse.quote(public, safe='')}", split)


def remove_split(repo: Repository, public: str) -> Any:
    return call(repo, "DELETE", f"/splits/{urllib.parse.quote(public, safe='')}")


def add_replica(repo: Repository, replica: dict[str, object]) -> Any:
    return call(repo, "POST", "/replicas", replica)


def drain_replica(repo: Repository, name: str, wait: float = 0.0) -> Any:
    return call(repo, "POST", f"/replicas/{urllib.parse.quote(name, safe='')}/drain?wait={wait:g}",
                timeout=TIMEOUT_S + wait)


def start_canary(repo: Repository, model: str, canary: dict[str, object]) -> Any:
    """Start a canary of ``model`` in the router (:mod:`hpc.serving.canary`); its recorded form."""
    return call(repo, "PUT", f"/canaries/{urllib.parse.quote(model, safe='')}", canary)


def remove_replica(repo: Repository, name: str) -> Any:
    return call(repo, "DELETE", f"/replicas/{urllib.parse.quote(name, safe='')}")


def scale(repo: Repository, replicas: int, record: bool = True) -> Any:
    return call(repo, "PUT", "/service", {"replicas": replicas, "record": record})


def service(repo: Repository) -> Any:
    return call(repo, "GET", "/service")
