"""The router's parts without a network: the gRPC model-name rewrite on real Triton protobuf messages,
weighted and sticky splits, least-outstanding choice, drain, metrics text, and the control API's lock."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hpc.errors import HpcTfError, ServingError
from hpc.serving.repository import Repository
from hpc.serving.router import wire
from hpc.serving.router.core import Route, Router
from hpc.serving.router.metrics import Metrics
from hpc.serving.router.pool import Pool, Replica, ReplicaBusy, parse_replica, replica_from_spec
from hpc.serving.router.split import Split, Variant, choose, variant_from_spec
from hpc.serving.secret import CONTROL_HEADER, NodeSecret
from hpc.serving.state import ServingState, split_from_dict
from tests._prometheus import parse, total

# ------------------------------------------------------------------ wire


def _infer_request() -> Any:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="public", model_version="", id="req-7")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 16])
    tensor.parameters["binary_data_size"].int64_param = 128
    request.raw_input_contents.append(bytes(range(128)))
    request.outputs.add(name="output_0")
    return request


def test_the_rewrite_changes_only_the_model_name_and_version_of_a_real_infer_request() -> None:
    from tritonclient.grpc import service_pb2

    original = _infer_request()
    raw = original.SerializeToString()
    assert wire.model_of(raw) == ("public", "")
    rewritten = service_pb2.ModelInferRequest.FromString(wire.with_model(raw, "mlp_b", "2"))
    assert (rewritten.model_name, rewritten.model_version) == ("mlp_b", "2")
    original.model_name, original.model_version = "mlp_b", "2"
    assert rewritten == original  # tensors, id, outputs, parameters: the same


@pytest.mark.parametrize("message", ["ModelMetadataRequest", "ModelConfigRequest", "ModelReadyRequest"])
def test_the_rewrite_reads_every_routed_request_s_name_and_version(message: str) -> None:
    from tritonclient.grpc import service_pb2

    cls = getattr(service_pb2, message)
    raw = cls(name="m", version="3").SerializeToString()
    assert wire.model_of(raw) == ("m", "3")
    assert cls.FromString(wire.with_model(raw, "other", "")) == cls(name="other")


@pytest.mark.parametrize("raw", [b"\x0a\x05ab", b"\x0a", b"\x0f\x00", b"\x80"])
def test_bytes_that_are_not_a_message_are_refused(raw: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.model_of(raw)


# ------------------------------------------------------------------ split

TEN_NINETY = Split((Variant("a", None, 10), Variant("b", 2, 90)))


def test_a_weighted_split_draws_by_its_weights_and_never_picks_a_zero_weight() -> None:
    draw = random.Random(5)
    split = Split((*TEN_NINETY.variants, Variant("c", None, 0)))
    counts = Counter(choose(split, draw=draw).model for _ in range(20_000))
    assert counts["c"] == 0 and abs(counts["a"] / 20_000 - 0.10) < 0.01, counts


def test_a_sticky_split_sends_one_header_value_to_one_variant_and_spreads_values_by_weight() -> None:
    split = Split(TEN_NINETY.variants, "x-user")
    assert {choose(split, "alice").model for _ in range(50)} == {choose(split, "alice").model}
    counts = Counter(choose(split, f"user-{i}").model for i in range(20_000))
    assert abs(counts["a"] / 20_000 - 0.10) < 0.01, counts


def test_a_split_is_read_from_its_json_form() -> None:
    split = split_from_dict("pub", {"variants": [{"model": "a", "version": None, "weight": 10},
                                             {"model": "b", "version": 2, "weight": 90}],
                                "sticky_header": "X-User"})
    assert split == Split(TEN_NINETY.variants, "x-user")
    assert variant_from_spec("mlp:2=10") == {"model": "mlp", "version": 2, "weight": 10}
    assert variant_from_spec("mlp=0") == {"model": "mlp", "version": None, "weight": 0}


@pytest.mark.parametrize(("data", "says"), [
    ({"variants": []}, "split pub.variants: a split needs at least one variant"),
    ({"variants": [{"model": "a", "version": None, "weight": 0}]}, "the weights add up to 0"),
    ({"variants": [{"model": "../etc", "version": None, "weight": 1}]}, "variants[0].model: not a model name"),
    ({"variants": [{"model": "a", "version": "2", "weight": 1}]}, "variants[0].version: a version is a positive"),
    ({"variants": [{"model": "a", "version": 1, "weight": True}]}, "variants[0].weight: a weight is an integer"),
    ({"variants": [{"model": "a", "version": 1, "weight": 1, "x": 1}]}, "variants[0].'x': unknown field"),
    ({"variants": [{"model": "a", "version": 1, "weight": 1}], "sticky": "h"}, "'sticky': unknown field"),
    ({"variants": [{"model": "a", "version": 1, "weight": 1}], "sticky_header": "a b"}, "not a lower-case HTTP"),
])
def test_a_bad_split_is_one_line_naming_the_field(data: dict[str, Any], says: str) -> None:
    with pytest.raises(HpcTfError) as caught:
        split_from_dict("pub", data)
    assert says in caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize("spec", ["mlp", "mlp:x=1", "=3", "mlp:1=-1", "mlp:1=1.5"])
def test_a_bad_variant_spec_names_the_form(spec: str) -> None:
    with pytest.raises(ServingError, match=r"MODEL\[:VERSION\]=WEIGHT"):
        variant_from_spec(spec)


# ------------------------------------------------------------------ pool


def _pool(*names: str) -> Pool:
    pool = Pool()
    for i, name in enumerate(names):
        pool.add(Replica(name, "127.0.0.1", 8000 + i, 9000 + i, healthy=True, ready=frozenset({("m", "1")})))
    return pool


def test_the_replica_with_fewest_requests_in_flight_answers() -> None:
    pool = _pool("r1", "r2", "r3")
    pool.get("r1").in_flight, pool.get("r2").in_flight, pool.get("r3").in_flight = 3, 1, 2
    assert pool.pick("m", "1").name == "r2"  # type: ignore[union-attr]
    pool.failed(pool.get("r2"), "refused")
    assert pool.pick("m", "1").name == "r3"  # type: ignore[union-attr]
    pool.drain("r3")
    assert pool.pick("m", "1").name == "r1"  # type: ignore[union-attr]
    assert pool.pick("m", "1", exclude=frozenset({"r1"})) is None


def test_a_replica_with_the_model_ready_is_preferred_and_any_healthy_one_otherwise() -> None:
    pool = _pool("r1", "r2")
    pool.get("r1").ready = frozenset({("m", "1"), ("m", "2")})
    assert {pool.pick("m", "2").name for _ in range(20)} == {"r1"}  # type: ignore[union-attr]
    assert {pool.pick("m", "").name for _ in range(50)} == {"r1", "r2"}  # type: ignore[union-attr]
    assert {pool.pick("unknown", "").name for _ in range(50)} == {"r1", "r2"}  # type: ignore[union-attr]


def test_a_replica_with_requests_in_flight_is_not_removed() -> None:
    pool = _pool("r1")
    pool.get("r1").in_flight = 1
    with pytest.raises(ReplicaBusy, match="1 request"):
        pool.remove("r1")
    pool.get("r1").in_flight = 0
    assert pool.remove("r1").name == "r1" and not pool.replicas


@pytest.mark.parametrize("bad", [{"host": "h;x", "http_port": 1, "grpc_port": 2},
                                 {"host": "h", "http_port": 0, "grpc_port": 2},
                                 {"host": "h", "http_port": 1, "grpc_port": "2"},
                                 {"host": "h", "http_port": 1, "grpc_port": 2, "name": "a b"}])
def test_a_bad_replica_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ServingError):
        parse_replica(bad)


def test_a_replica_spec_names_host_and_both_ports() -> None:
    assert replica_from_spec("node1:8000:8001").grpc_target == "node1:8001"
    with pytest.raises(ServingError, match="HOST:HTTP_PORT:GRPC_PORT"):
        replica_from_spec("node1:8000")


# ------------------------------------------------------------------ forward + metrics


def _router(*names: str) -> Router:
    router = Router(NodeSecret("owner-key"))
    router.pool = _pool(*names)
    return router


def test_a_split_set_on_the_router_is_recorded_and_a_restarted_router_routes_by_it(tmp_path: Path) -> None:
    """The split lives in serving.json, not in the router's memory: a router job that ends at its walltime
    and starts again (or a second router) routes as before; removing it is recorded too."""
    repo = Repository.at(tmp_path / "repo")
    router = Router(NodeSecret("owner-key"), repo)
    router.set_split("public", TEN_NINETY)
    assert ServingState.read(repo).splits == {"public": TEN_NINETY}
    restarted = Router(NodeSecret("owner-key"), repo)
    assert restarted.splits == {"public": TEN_NINETY}
    assert restarted.route("public", "", lambda _: None).model in {"a", "b"}
    restarted.set_split("public", None)
    assert ServingState.read(repo).splits == {} and Router(NodeSecret("owner-key"), repo).splits == {}


def test_a_replica_that_is_down_is_marked_at_once_and_the_request_answered_by_another() -> None:
    from hpc.serving.router.core import ReplicaDown

    router = _router("r1", "r2")
    router.pool.get("r2").in_flight = 5  # r1 goes first
    sent: list[str] = []

    async def send(replica: Replica) -> tuple[str, bool]:
        sent.append(replica.name)
        if replica.name == "r1":
            raise ReplicaDown("connection refused")
        return "answer", True

    assert asyncio.run(router.forward(Route("m", "m", "1"), send)) == "answer"
    assert sent == ["r1", "r2"] and not router.pool.get("r1").healthy
    samples = parse(router.metrics.render())
    assert total(samples, "hpctf_router_variant_requests_total", public="m") == 1
    assert total(samples, "hpctf_router_variant_errors_total") == 0
    assert total(samples, "hpctf_router_replica_errors_total", replica="r1") == 1
    assert total(samples, "hpctf_router_replica_in_flight") == 0


def test_only_inferences_count_in_the_variant_s_series_and_every_call_on_its_replica() -> None:
    """Canary gates, the autoscaler and serve status read the variant's series: a client that asks for
    metadata or readiness before each inference must not dilute its error rate."""
    router = _router("r1")

    async def send(replica: Replica) -> tuple[str, bool]:
        return "answer", True

    async def calls() -> None:
        await router.forward(Route("m", "m", "1"), send, inference=False)  # metadata, readiness
        await router.forward(Route("m", "m", "1"), send)

    asyncio.run(calls())
    samples = parse(router.metrics.render())
    assert total(samples, "hpctf_router_variant_requests_total", public="m") == 1
    assert total(samples, "hpctf_router_replica_requests_total", replica="r1") == 2
    assert [entry["requests"] for entry in router.window.summary()] == [1]


def test_metrics_count_requests_errors_and_latency_per_variant() -> None:
    metrics = Metrics()
    for seconds, ok in ((0.0007, True), (0.003, True), (0.2, False)):
        series = metrics.variant("pub", 'we"ird', "2")
        series.start()
        series.finish(seconds, ok)
    samples = parse(metrics.render())
    labels = {"public": "pub", "model": 'we"ird', "version": "2"}
    assert total(samples, "hpctf_router_variant_requests_total", **labels) == 3
    assert total(samples, "hpctf_router_variant_errors_total", **labels) == 1
    assert total(samples, "hpctf_router_variant_latency_seconds_bucket", le="0.001", **labels) == 1
    assert total(samples, "hpctf_router_variant_latency_seconds_bucket", le="+Inf", **labels) == 3
    assert metrics.variant("pub", 'we"ird', "2").quantile(0.5) == 0.005


# ------------------------------------------------------------------ control API


def _with_client(router: Router, test: Callable[[Any], Awaitable[None]]) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from hpc.serving.router.http_front import build_app

    async def main() -> None:
        client = TestClient(TestServer(build_app(router)))
        await client.start_server()
        try:
            await test(client)
        finally:
            await client.close()
            await router.close()

    asyncio.run(main())


@pytest.mark.parametrize("headers", [{}, {CONTROL_HEADER: "wrong"}, {CONTROL_HEADER: ""},
                                     {"hpc-tf-inference-key": "owner-key"}])
def test_control_calls_without_the_owner_s_key_are_refused_and_change_nothing(headers: dict[str, str]) -> None:
    router = _router("r1")

    async def test(client: Any) -> None:
        split = {"variants": [{"model": "a", "version": 1, "weight": 1}]}
        for method, path, body in (("GET", "/hpc-tf/router/state", None), ("PUT", "/hpc-tf/router/splits/p", split),
                                   ("POST", "/hpc-tf/router/replicas/r1/drain", None),
                                   ("DELETE", "/hpc-tf/router/replicas/r1", None),
                                   ("POST", "/hpc-tf/router/replicas",
                                    {"host": "127.0.0.1", "http_port": 1, "grpc_port": 2}),
                                   ("GET", "/v2/models/m/config", None),
                                   ("POST", "/v2/repository/models/m/load", None)):
            resp = await client.request(method, path, json=body, headers=headers)
            assert resp.status in (403, 404), (path, resp.status)
        assert router.splits == {} and list(router.pool.replicas) == ["r1"] and not router.pool.get("r1").draining

    _with_client(router, test)


def test_the_owner_sets_a_split_and_a_bad_one_is_one_line() -> None:
    router = _router("r1")
    key = {CONTROL_HEADER: "owner-key"}

    async def test(client: Any) -> None:
        good = {"variants": [{"model": "a", "version": None, "weight": 10}, {"model": "b", "version": 2, "weight": 90}]}
        resp = await client.put("/hpc-tf/router/splits/pub", json=good, headers=key)
        assert resp.status == 200 and (await resp.json())["splits"]["pub"]["variants"][1]["version"] == 2
        resp = await client.put("/hpc-tf/router/splits/pub", json={"variants": [{"model": "../x", "version": None,
                                                                                "weight": 1}]}, headers=key)
        error = (await resp.json())["error"]
        assert resp.status == 400 and "model name" in error and "\n" not in error
        assert router.splits == {"pub": TEN_NINETY}
        resp = await client.delete("/hpc-tf/router/replicas/r1", headers=key)
        assert resp.status == 200 and not router.pool.replicas

    _with_client(router, test)


def test_with_an_inference_token_inference_needs_it_and_readiness_stays_open() -> None:
    router = Router(NodeSecret("owner-key", "infer-token"))
    router.pool = _pool("r1")
    router.pool.get("r1").http_port = 9  # discard port: nothing answers, so a routed call ends in 503

    async def test(client: Any) -> None:
        for headers in ({}, {"hpc-tf-inference-key": "wrong"}, {CONTROL_HEADER: "infer-token"}):
            resp = await client.post("/v2/models/m/infer", data=b"{}", headers=headers)
            assert resp.status == 403 and "inference token" in (await resp.json())["error"]
        resp = await client.post("/v2/models/m/infer", data=b"{}", headers={"hpc-tf-inference-key": "infer-token"})
        assert resp.status == 503  # let through, and no replica could answer
        assert (await client.get("/v2/models/m/ready")).status == 503
        assert (await client.get("/v2/health/live")).status == 200

    _with_client(router, test)


def test_serve_split_sends_the_variants_it_was_given_to_the_router(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from hpc.cli import app
    from hpc.serving.router import client

    calls: list[tuple[Any, ...]] = []

    def set_split(repo: Any, public: str, split: dict[str, Any]) -> dict[str, Any]:
        calls.append((repo.root, public, split))
        return {"splits": {public: split}}

    monkeypatch.setattr(client, "set_split", set_split)
    result = CliRunner().invoke(app, ["serve", "split", "pub", "mlp:1=90", "mlp:2=10", "--sticky-header", "X-User",
                                      "--repository", str(tmp_path), "--site", "local"])
    assert result.exit_code == 0, result.output
    assert calls == [(tmp_path, "pub", {"variants": [{"model": "mlp", "version": 1, "weight": 90},
                                                     {"model": "mlp", "version": 2, "weight": 10}],
                                        "sticky_header": "X-User"})]
    assert result.output.strip() == "pub: mlp:1 90, mlp:2 10 (sticky by X-User)"

    refused = CliRunner().invoke(app, ["serve", "split", "pub", "mlp:1", "--repository", str(tmp_path),
                                       "--site", "local"])
    # the CLI's main() prints a ServingError as one line (tests/unit/test_cli_output.py)
    assert isinstance(refused.exception, ServingError) and "MODEL[:VERSION]=WEIGHT" in refused.exception.message
    assert len(calls) == 1  # nothing more sent
