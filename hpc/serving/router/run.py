"""Running the router as a local process: listen, probe the replicas, register the endpoint, serve until
SIGTERM/SIGINT, unregister. (As a Slurm job: the next part of issue 22, around :func:`serve`.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import grpc.aio
from aiohttp import web

from hpc.atomic import write_text_atomic
from hpc.errors import HpcTfError, ServingError
from hpc.records import read_record
from hpc.serving import secret as node_secret
from hpc.serving.repository import Repository
from hpc.serving.router.core import Router
from hpc.serving.router.grpc_front import GrpcFront
from hpc.serving.router.http_front import build_app
from hpc.serving.router.pool import Replica
from hpc.serving.router.replicas import ReplicaController


@dataclass(frozen=True)
class RouterEndpoint:
    """Where a repository's router listens (``<repository>/.hpc-tf/router.json``, 0600)."""

    host: str
    http_port: int
    grpc_port: int
    pid: int
    hostname: str
    repository: str
    started: float
    job_id: str | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "http_url": self.http_url, "grpc_url": self.grpc_url}


def read_router(repo: Repository) -> RouterEndpoint:
    if not repo.router_file.is_file():
        raise ServingError(f"no router is registered for {repo.root} ({repo.router_file} missing)",
                           hint="start one with: hpc-tf serve router")
    return read_record(repo.router_file, "the router's endpoint", parse=lambda data: RouterEndpoint(**data),
                       owned=True, fix="if its router still runs, stop it; then remove the file")


async def serve(repo: Repository, replicas: Sequence[Replica], host: str, ports: tuple[int, int],
                stop: asyncio.Event, job_id: str | None = None,
                replicas_by: Callable[[Router], ReplicaController] | None = None) -> RouterEndpoint:
    """Run the router until ``stop`` is set, routing by the splits recorded in the repository's serving.json.
    The endpoint is written once both fronts listen and the replicas were probed once (those found ready
    take traffic from the first request). ``replicas_by``: makes the router's replica controller
    (:mod:`hpc.serving.router.replicas`)."""
    router = Router(node_secret.load(repo.root), repo)
    for replica in replicas:
        router.pool.add(replica)
    front = GrpcFront(router)
    app = build_app(router)
    controller = None if replicas_by is None else replicas_by(router)
    if controller is not None:
        controller.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    grpc_server = grpc.aio.server(options=[("grpc.max_send_message_length", -1),
                                           ("grpc.max_receive_message_length", -1)])
    grpc_server.add_generic_rpc_handlers((front.handler(),))
    try:
        site = web.TCPSite(runner, host, ports[0])
        try:
            await site.start()
        except OSError as err:
            raise ServingError(f"the router cannot listen for HTTP on {host}:{ports[0]}: {err.strerror}",
                               hint="choose another --http-port, or --host") from None
        http_port = _bound_port(site)
        grpc_port = grpc_server.add_insecure_port(f"{host}:{ports[1]}")
        if not grpc_port:
            raise ServingError(f"the router cannot listen for gRPC on {host}:{ports[1]}",
                               hint="choose another --grpc-port, or --host")
        await grpc_server.start()
        await router.probe_all()
        endpoint = RouterEndpoint(host, http_port, grpc_port, os.getpid(), socket.gethostname(), str(repo.root),
                                  time.time(), job_id)
        write_text_atomic(repo.router_file, json.dumps(asdict(endpoint), indent=2) + "\n", mode=0o600)
        print(f"router ready: http {endpoint.http_url} grpc {endpoint.grpc_url} pid {endpoint.pid}, "
              f"{len(router.pool.replicas)} replica(s)", flush=True)
        probes = asyncio.create_task(router.probe_forever())
        router.canaries.resume()
        replica_loop = None if controller is None else asyncio.create_task(controller.run())
        autoscaler = None if controller is None or controller.autoscaler is None else \
            asyncio.create_task(controller.autoscaler.run())
        try:
            await stop.wait()
        finally:
            probes.cancel()
            for loop in (replica_loop, autoscaler):
                if loop is not None:
                    loop.cancel()
            with contextlib.suppress(HpcTfError, FileNotFoundError):
                if read_router(repo).pid == endpoint.pid:
                    repo.router_file.unlink(missing_ok=True)
        return endpoint
    finally:
        await grpc_server.stop(grace=5)
        await runner.cleanup()
        await front.close()
        await router.close()


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the listening server here; its sockets say which port was bound
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])


def run_router(repo: Repository, replicas: Sequence[Replica], host: str = "127.0.0.1",
               ports: tuple[int, int] = (0, 0), job_id: str | None = None,
               replicas_by: Callable[[Router], ReplicaController] | None = None) -> int:
    """``hpc-tf serve router``: run in the foreground until SIGTERM or SIGINT."""
    refuse_running(repo)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(repo, replicas, host, ports, stop, job_id, replicas_by)

    asyncio.run(main())
    return 0


def refuse_running(repo: Repository) -> None:
    from hpc.runtime.node.processes import alive

    if repo.router_file.is_file():
        old = read_router(repo)
        if old.hostname == socket.gethostname() and alive(old.pid):
            raise ServingError(f"a router for {repo.root} is already running (pid {old.pid}, {old.http_url})",
                               hint="stop it first (kill its pid), or use it")
