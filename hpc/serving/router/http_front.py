"""The router's HTTP front: KServe v2 / Triton HTTP inference, its control API, and /metrics.

Inference paths (``/v2/models/<name>[/versions/<v>][/infer|/ready|/config]``) go to a replica with the
name (and version) a split chose; bodies and the headers that describe them pass through as bytes.
``/v2/health/*`` answer for the router (ready: a replica is). The control API under ``/hpc-tf/router``
answers only the owner's key (header ``hpc-tf-key``); so does ``/config`` (a control API in Triton).
Paths the router does not route (repository load/unload, statistics, logging, trace) are refused:
nothing reaches a replica's control plane through the router.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from hpc.errors import HpcTfError
from hpc.serving.router.core import NoReplica, ReplicaDown, Route, Router
from hpc.serving.router.pool import Replica, ReplicaBusy, parse_replica
from hpc.serving.secret import CONTROL_HEADER, INFERENCE_HEADER
from hpc.serving.state import canary_to_dict, split_from_dict

CONTROL_PREFIX = "/hpc-tf/router"
# request and response headers that describe a body (binary tensor extension, compression)
_BODY_HEADERS = ("Content-Type", "Content-Encoding", "Inference-Header-Content-Length")
_REQUEST_HEADERS = (*_BODY_HEADERS, "Accept-Encoding")
_ACTIONS = ("", "infer", "ready", "config")
DRAIN_WAIT_MAX_S = 600.0


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(router: Router, request_timeout: float = 60.0) -> web.Application:
    timeout = aiohttp.ClientTimeout(total=request_timeout)

    async def live(_: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(_: web.Request) -> web.Response:
        return web.Response(status=200 if router.pool.any_ready() else 400)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=router.metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def model(request: web.Request) -> web.StreamResponse:
        name, version = request.match_info["name"], request.match_info.get("version", "")
        action = request.match_info.get("action", "")
        if action not in _ACTIONS:
            return _error(403, f"the router does not pass /{action} to the replicas")
        control = action == "config"
        if control and not router.is_owner(request.headers.get(CONTROL_HEADER)):
            return _error(403, "model config needs the owner's key")
        if action == "infer" and not router.may_infer(request.headers.get(INFERENCE_HEADER)):
            return _error(403, f"inference needs the owner's inference token (header {INFERENCE_HEADER})")
        body = await request.read()
        route = router.route(name, version, request.headers.get)
        headers = {k: request.headers[k] for k in _REQUEST_HEADERS if k in request.headers}
        headers.update(router.upstream_headers(control))
        path = _model_path(route, action)

        async def send(replica: Replica) -> tuple[web.Response, bool]:
            try:
                async with router.session.request(request.method, replica.http_url + path, data=body,
                                                  headers=headers, timeout=timeout) as resp:
                    answer = await resp.read()
                    kept = {k: resp.headers[k] for k in _BODY_HEADERS if k in resp.headers}
                    return web.Response(status=resp.status, body=answer, headers=kept), resp.status < 400
            except aiohttp.ClientConnectionError as err:
                raise ReplicaDown(str(err) or type(err).__name__) from None

        try:
            return await router.forward(route, send, inference=action == "infer")
        except NoReplica as err:
            return _error(503, str(err))
        except asyncio.TimeoutError:
            return _error(504, f"no answer from the replica within {request_timeout:g} s")

    async def server_metadata(_: web.Request) -> web.Response:
        replica = router.pool.pick("", "")
        if replica is None:
            return _error(503, "no healthy replica")
        try:
            async with router.session.get(replica.http_url + "/v2", timeout=timeout) as resp:
                return web.Response(status=resp.status, body=await resp.read(), content_type="application/json")
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            return _error(503, f"replica {replica.name} does not answer: {err}")

    # ---------------------------------------------------------------- control
    @web.middleware
    async def owner_only(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            if not router.is_owner(request.headers.get(CONTROL_HEADER)):
                return _error(403, f"the router's control API needs the owner's key (header {CONTROL_HEADER})")
            try:
                return await handler(request)  # type: ignore[no-any-return]
            except HpcTfError as err:
                return _error(409 if isinstance(err, ReplicaBusy) else 400,
                              err.message + (f" ({err.hint})" if err.hint else ""))
        return await handler(request)  # type: ignore[no-any-return]

    async def state(_: web.Request) -> web.Response:
        return web.json_response(router.state())

    async def set_split(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        split = split_from_dict(name, await _json(request))
        await asyncio.to_thread(router.set_split, name, split)  # a file write under the repository's lock
        return web.json_response(router.state())

    async def delete_split(request: web.Request) -> web.Response:
        await asyncio.to_thread(router.set_split, request.match_info["name"], None)
        return web.json_response(router.state())

    async def add_replica(request: web.Request) -> web.Response:
        replica = parse_replica(await _json(request))
        router.pool.add(replica)
        await router.probe(replica)  # takes traffic once a probe found it ready
        return web.json_response(replica.to_dict())

    async def drain_replica(request: web.Request) -> web.Response:
        replica = router.pool.drain(request.match_info["replica"])
        try:
            wait = min(float(request.query.get("wait", "0")), DRAIN_WAIT_MAX_S)
        except ValueError:
            return _error(400, f"wait must be a number of seconds, got {request.query['wait']!r}")
        deadline = time.monotonic() + wait
        while replica.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return web.json_response(replica.to_dict())

    async def start_canary(request: web.Request) -> web.Response:
        model, body = request.match_info["model"], await _json(request)
        canary = await asyncio.to_thread(router.canaries.record_new, model, body)
        router.canaries.run(model)
        return web.json_response(canary_to_dict(canary))

    async def canaries(_: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(router.canaries.recorded))

    async def remove_replica(request: web.Request) -> web.Response:
        return web.json_response(router.pool.remove(request.match_info["replica"]).to_dict())

    app = web.Application(middlewares=[owner_only], client_max_size=1 << 30)
    app.add_routes([
        web.get("/v2/health/live", live), web.get("/v2/health/ready", ready), web.get("/metrics", metrics),
        web.get("/v2", server_metadata),
        web.route("*", "/v2/models/{name}", model),
        web.route("*", "/v2/models/{name}/{action}", model),
        web.route("*", "/v2/models/{name}/versions/{version}", model),
        web.route("*", "/v2/models/{name}/versions/{version}/{action}", model),
        web.get(f"{CONTROL_PREFIX}/state", state),
        web.put(f"{CONTROL_PREFIX}/splits/{{name}}", set_split),
        web.delete(f"{CONTROL_PREFIX}/splits/{{name}}", delete_split),
        web.post(f"{CONTROL_PREFIX}/replicas", add_replica),
        web.post(f"{CONTROL_PREFIX}/replicas/{{replica}}/drain", drain_replica),
        web.delete(f"{CONTROL_PREFIX}/replicas/{{replica}}", remove_replica),
        web.get(f"{CONTROL_PREFIX}/canaries", canaries),
        web.put(f"{CONTROL_PREFIX}/canaries/{{model}}", start_canary),
    ])
    return app


def _model_path(route: Route, action: str) -> str:
    path = f"/v2/models/{route.model}" + (f"/versions/{route.version}" if route.version else "")
    return path + (f"/{action}" if action else "")


async def _json(request: web.Request) -> object:
    try:
        return json.loads(await request.read())
    except ValueError:
        raise HpcTfError("the request body is not JSON") from None
