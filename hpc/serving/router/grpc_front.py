"""The router's gRPC front: Triton's ``inference.GRPCInferenceService`` through grpcio's generic handlers.

Messages stay bytes: of a request only the model name and version are read and, when a split chose
another model or version, rewritten (:mod:`hpc.serving.router.wire`); answers pass through unchanged
(so they name the model and version that answered). ServerLive/ServerReady answer for the router.
Control RPCs (repository load/unload, statistics, logging, trace, shared memory) are not served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio

from hpc.serving.router import wire
from hpc.serving.router.core import NoReplica, ReplicaDown, Router
from hpc.serving.router.pool import Replica
from hpc.serving.secret import CONTROL_HEADER, GRPC_HEADER_PREFIX, INFERENCE_HEADER

SERVICE = "inference.GRPCInferenceService"
ROUTED = ("ModelInfer", "ModelMetadata", "ModelConfig", "ModelReady")
_TRUE = b"\x08\x01"  # ServerLiveResponse / ServerReadyResponse {live|ready: true}: field 1, varint 1


class GrpcFront:
    """Channels to the replicas (one per replica, reused) and the handlers of the routed RPCs."""

    def __init__(self, router: Router, request_timeout: float = 60.0) -> None:
        self.router, self.request_timeout = router, request_timeout
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        self._closing: set[asyncio.Future[None]] = set()

    def channel(self, replica: Replica) -> grpc.aio.Channel:
        known = self._channels.get(replica.name)
        if known is None or known[0] != replica.grpc_target:
            for gone in set(self._channels) - set(self.router.pool.replicas):  # removed replicas' channels
                closing = asyncio.ensure_future(self._channels.pop(gone)[1].close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            known = (replica.grpc_target, grpc.aio.insecure_channel(
                replica.grpc_target, options=[("grpc.max_send_message_length", -1),
                                              ("grpc.max_receive_message_length", -1)]))
            self._channels[replica.name] = known
        return known[1]

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        await asyncio.gather(*self._closing)

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {name: grpc.unary_unary_rpc_method_handler(self._routed(name)) for name in ROUTED}
        methods["ServerLive"] = grpc.unary_unary_rpc_method_handler(self._live)
        methods["ServerReady"] = grpc.unary_unary_rpc_method_handler(self._ready)
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    async def _live(self, _request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return _TRUE

    async def _ready(self, _request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return _TRUE if self.router.pool.any_ready() else b""

    def _routed(self, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        control = method == "ModelConfig"
        path = f"/{SERVICE}/{method}"

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            router = self.router
            meta = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            if control and not router.is_owner(meta.get(GRPC_HEADER_PREFIX + CONTROL_HEADER)):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "model config needs the owner's key")
            if method == "ModelInfer" and not router.may_infer(meta.get(GRPC_HEADER_PREFIX + INFERENCE_HEADER)):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"inference needs the owner's inference token ({GRPC_HEADER_PREFIX}"
                                    f"{INFERENCE_HEADER})")
            try:
                name, version = wire.model_of(request)
            except wire.WireError as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a {method} request: {err}")
            route = router.route(name, version, meta.get)
            body = request if (route.model, route.version) == (name, version) else \
                wire.with_model(request, route.model, route.version)
            upstream = [(GRPC_HEADER_PREFIX + k, v) for k, v in router.upstream_headers(control).items()]
            remaining = context.time_remaining()
            timeout = self.request_timeout if remaining is None else min(remaining, self.request_timeout)
            failure: list[grpc.aio.AioRpcError] = []

            async def send(replica: Replica) -> tuple[bytes, bool]:
                call = self.channel(replica).unary_unary(path)
                try:
                    return await call(body, metadata=upstream, timeout=timeout), True
                except grpc.aio.AioRpcError as err:
                    if err.code() == grpc.StatusCode.UNAVAILABLE and not await self._answers(replica):
                        raise ReplicaDown(err.details() or "unavailable") from None
                    failure.append(err)
                    return b"", False

            try:
                answer = await router.forward(route, send, inference=method == "ModelInfer")
            except NoReplica as err:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
            if failure:
                await context.abort(failure[-1].code(), failure[-1].details() or "")
            return answer

        return handle

    async def _answers(self, replica: Replica) -> bool:
        """Whether a replica that answered UNAVAILABLE is up (Triton says so for a model it cannot serve)
        or gone (the connection failed): its HTTP liveness tells."""
        import aiohttp

        try:
            async with self.router.session.get(f"{replica.http_url}/v2/health/live",
                                               timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False
