"""The router's autoscaler with REAL tritonserver replicas as local processes (the embedded default site
``local``), short delays set with ``--set serving.autoscale.*``: a bounded load ramp (2 -> 16 -> 2 clients
in flight, gRPC and HTTP) takes the service from 1 to 2 replicas and back to 1 with no failed request and
each decision in the router's log; with scale to zero, an idle service drops to 0 replicas and the next
request (HTTP and gRPC) is held until a replica is admitted, then answered; past the hold, it is refused
(HTTP 503, gRPC UNAVAILABLE) saying so.

The repository's node (``hpc-tf serve up``) holds the owner's secret and takes the hand-off of model
``a``; the routers start their own replicas, which restore ``a`` from serving.json.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hpc.serving.repository import Repository
from hpc.serving.router import client
from tests.integration._owner_config import owner_config as owner_config  # the module's keys
from tests.integration._traffic import Traffic
from tests.integration.test_router_triton import X, _wait
from tests.integration.test_serving_replicas import HPC_TF, START_S, served_a, start_router, stop_router

pytestmark = [pytest.mark.triton, pytest.mark.tf]
RAMP = ["serving.autoscale.min_replicas=1", "serving.autoscale.max_replicas=2",
        "serving.autoscale.target_in_flight=3", "serving.autoscale.window=2", "serving.autoscale.up_delay=2",
        "serving.autoscale.down_delay=8"]
TO_ZERO = [*RAMP, "serving.autoscale.scale_to_zero=true", "serving.autoscale.down_delay=4",
           f"serving.autoscale.hold={2 * START_S}"]



def _sets(keys: list[str]) -> list[str]:
    return [word for key in keys for word in ("--set", key)]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_a(tmp_path_factory.mktemp("autoscale")) as info:
        yield info


def use_router(service: dict[str, Any], keys: list[str]) -> None:
    """(Re)start the router with the autoscale keys ``keys``."""
    if service.get("router") is not None:
        stop_router(service["router"])
    log_from = service["log"].stat().st_size if service["log"].exists() else 0
    router, endpoint = start_router(service["repo"], service["log"], *_sets(keys))
    service.update(router=router, log_from=log_from, host=endpoint["host"], http_port=endpoint["http_port"],
                   grpc_port=endpoint["grpc_port"])


def counts(service: dict[str, Any]) -> tuple[int, int]:
    """(replicas serving, replicas managed)."""
    managed = client.service(Repository.at(service["repo"]))["managed"]
    return sum(1 for m in managed if m["state"] == "serving"), len(managed)


def decisions(service: dict[str, Any]) -> list[str]:
    """The autoscale lines of the router started last."""
    with service["log"].open() as log:
        log.seek(service["log_from"])
        return [line for line in log.read().splitlines() if "hpc-tf router: autoscale:" in line]


def idle_at_zero(service: dict[str, Any]) -> bool:
    """The router scaled to 0 (not one that has not adopted the replicas yet) and none is left."""
    return any("-> 0: down:" in line for line in decisions(service)) and counts(service) == (0, 0)


def test_a_load_ramp_scales_1_to_2_and_back_to_1_with_no_failed_request(service: dict[str, Any]) -> None:
    use_router(service, RAMP)
    _wait(lambda: counts(service) == (1, 1), f"1 serving replica; log {service['log']}", START_S * 2)
    with Traffic(service, X, model="a", max_requests=1_000_000, max_seconds=60, clients=1) as low:
        time.sleep(12)  # longer than the up delay and the window: 2 in flight at a target of 3 is 1 replica
        assert counts(service) == (1, 1), decisions(service)
    with Traffic(service, X, model="a", max_requests=1_000_000, max_seconds=START_S * 3, clients=8) as high:
        _wait(lambda: counts(service)[0] == 2, f"a 2nd serving replica; log {service['log']}", START_S * 2)
        peak = counts(service)
    with Traffic(service, X, model="a", max_requests=1_000_000, max_seconds=180, clients=1) as after:
        _wait(lambda: counts(service) == (1, 1), f"back to 1 replica; log {service['log']}", 120)
        time.sleep(2)
    for traffic in (low, high, after):
        assert traffic.failures == [], traffic.failures[:3]
        assert sum(traffic.models.values()) > 20
    assert peak == (2, 2)
    lines = decisions(service)
    up = [x for x in lines if "-> 2: up:" in x]
    down = [x for x in lines if "2 wanted before -> 1: down:" in x]
    assert up and down, lines
    for line in (up[0], down[0]):  # each with its inputs
        assert "average in flight" in line and "serving +" in line and "coming" in line, line
    assert client.state(Repository.at(service["repo"]))["autoscale"]["wanted"] == 1
    by_hand = subprocess.run([HPC_TF, "serve", "scale", "--replicas", "1", "--repository", str(service["repo"]),
                              "--site", "local"], capture_output=True, text=True, timeout=60, check=False)
    assert by_hand.returncode == 0, by_hand.stderr
    assert "note: autoscaling is on: its next decision sets the count again, between 1 and 2" in by_hand.stdout


def held_requests(service: dict[str, Any], model: str = "a") -> dict[str, Any]:
    """One HTTP and one gRPC request for ``model`` sent together to the router at ``service``'s host and
    ports; their answers (the version, or the error) and when they came."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    results: dict[str, Any] = {}

    def http() -> None:
        conn = httpclient.InferenceServerClient(f"{service['host']}:{service['http_port']}",
                                                network_timeout=START_S * 2, connection_timeout=START_S * 2)
        inp = httpclient.InferInput("features", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        try:
            results["http"] = conn.infer(model, [inp]).get_response()["model_version"]
        except Exception as err:
            results["http"] = f"{getattr(err, 'status', lambda: '')()} {err}"  # the status and its message
        results["http_at"] = time.monotonic()

    def grpc() -> None:
        conn = grpcclient.InferenceServerClient(f"{service['host']}:{service['grpc_port']}")
        inp = grpcclient.InferInput("features", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        try:
            results["grpc"] = conn.infer(model, [inp], client_timeout=START_S * 2).get_response().model_version
        except Exception as err:
            results["grpc"] = f"{getattr(err, 'status', lambda: '')()} {err}"  # the status and its message
        results["grpc_at"] = time.monotonic()

    threads = [threading.Thread(target=http), threading.Thread(target=grpc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(START_S * 2 + 30)
    return results


def test_scale_to_zero_and_back_answers_the_held_request(service: dict[str, Any]) -> None:
    use_router(service, TO_ZERO)
    _wait(lambda: idle_at_zero(service), f"no replica after the idle down delay; log {service['log']}", START_S * 2)
    sent = time.monotonic()
    results = held_requests(service)
    assert results["http"] == "1" and results["grpc"] == "1", results  # answered by version 1, not refused
    assert min(results["http_at"], results["grpc_at"]) - sent > 1.0  # held while a replica started
    assert any("a request is held and no replica is wanted: one starts now" in line
               for line in decisions(service)), decisions(service)
    assert counts(service)[0] == 1


def test_past_the_hold_a_held_request_gets_503_or_unavailable_saying_so(service: dict[str, Any]) -> None:
    use_router(service, [*TO_ZERO, "serving.autoscale.hold=1"])
    _wait(lambda: idle_at_zero(service), f"no replica after the idle down delay; log {service['log']}", START_S * 2)
    results = held_requests(service)  # a replica takes longer than 1 s to start
    assert "503" in results["http"] and "no replica was ready within the hold of 1 s" in results["http"], results
    assert "UNAVAILABLE" in results["grpc"] and "serving.autoscale.hold" in results["grpc"], results
