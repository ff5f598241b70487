"""A canary under continuous HTTP and gRPC traffic through the router, on REAL tritonserver replicas (the
serving node and a second tritonserver, both loading what the canary moves): a version that fails half its
requests is rolled back at its first gate while the old version keeps serving and no request outside the
canary's share fails; a good version is promoted and then serves alone."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpc.serving import secret as node_secret
from hpc.serving.control import ModelControl
from hpc.serving.repository import Repository
from hpc.serving.state import ServingState, update_state
from tests._prometheus import total
from tests.integration._flaky_model import write_flaky
from tests.integration._owner_config import owner_config as owner_config  # the module's keys
from tests.integration._traffic import Traffic
from tests.integration.test_router_triton import HPC_TF, TritonReplica, _wait, hpc_tf, metrics

pytestmark = [pytest.mark.triton]
X = np.random.default_rng(5).normal(size=(2, 16)).astype("float32")
GOOD, FAILS_HALF, GOOD_TOO = 1, 2, 3


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``flaky`` v1 recorded as serving (v2 fails every 2nd request, v3 none), loaded by the node and a
    second replica at start; the router in front of both."""
    base = tmp_path_factory.mktemp("canary")
    repo = base / "repo"
    write_flaky(repo, "flaky", {GOOD: 0, FAILS_HALF: 2, GOOD_TOO: 0})
    update_state(Repository.at(repo), lambda s: s.with_model("flaky", [GOOD], "handoff"))
    up = hpc_tf("serve", "up", "--json", "--repository", str(repo), timeout=120)
    assert up.returncode == 0, up.stderr
    node = json.loads(up.stdout)
    replica: TritonReplica | None = None
    router: subprocess.Popen[str] | None = None
    try:
        replica = TritonReplica(repo, base / "replica2", ["flaky"])
        router = subprocess.Popen(
            [HPC_TF, "serve", "router", "--repository", str(repo), "--site", "local",
             "--replica", f"127.0.0.1:{node['http_port']}:{node['grpc_port']}",
             "--replica", f"127.0.0.1:{replica.ports[0]}:{replica.ports[1]}"],
            stdout=subprocess.PIPE, stderr=(base / "router.log").open("w"), text=True)
        assert router.stdout is not None
        assert router.stdout.readline().startswith("router ready"), (base / "router.log").read_text()
        endpoint = json.loads((repo / ".hpc-tf" / "router.json").read_text())
        yield {"repo": repo, "base": base, "host": endpoint["host"], "http_port": endpoint["http_port"],
               "grpc_port": endpoint["grpc_port"], "grpc_urls": [node["grpc_url"], f"127.0.0.1:{replica.ports[1]}"]}
    finally:
        if router is not None:
            router.terminate()
            router.wait(30)
        if replica is not None:
            replica.stop()
        hpc_tf("serve", "down", "--repository", str(repo), timeout=60)


def _finished(repo: Path) -> str:
    canary = ServingState.read(Repository.at(repo)).canaries.get("flaky")
    return "" if canary is None or canary.status == "running" else canary.status


def _ready_versions(service: dict[str, Any]) -> list[set[str]]:
    """The versions of flaky READY on each replica, asked of the replicas themselves."""
    found = []
    for url in service["grpc_urls"]:
        control = ModelControl(url, node_secret.load(service["repo"]))
        try:
            found.append({m.version for m in control.index() if m.name == "flaky" and m.state == "READY"})
        finally:
            control.close()
    return found


def test_a_canary_that_fails_requests_is_rolled_back_at_its_first_gate_and_only_its_share_fails(
        service: dict[str, Any]) -> None:
    repo = service["repo"]
    with Traffic(service, X, model="flaky", max_seconds=240) as traffic:
        started = hpc_tf("serve", "canary", "flaky", str(FAILS_HALF), "--steps", "10,50,100", "--step-time", "60s",
                         "--max-error-rate", "1%", "--min-requests", "10", "--repository", str(repo))
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("canary flaky v1 -> v2 started: steps 10,50,100 % every 60 s"), started.stdout
        _wait(lambda: _finished(repo) != "", "the canary's verdict", timeout=60)
        decided_at = time.monotonic()
        answered = dict(traffic.versions)
        time.sleep(3)
    canary = ServingState.read(Repository.at(repo)).canaries["flaky"]
    assert canary.status == "rolled-back" and canary.step == 0, canary  # at its first gate
    assert canary.reason.startswith("error rate ") and "of version 2 at step 1 (10 %)" in canary.reason, canary
    # the old version kept serving: every failure is a request the canary's split sent to version 2
    samples = metrics(service)
    failed_on_new = total(samples, "hpctf_router_variant_errors_total", public="flaky", version=str(FAILS_HALF))
    assert total(samples, "hpctf_router_variant_errors_total", public="flaky") == failed_on_new
    assert len(traffic.failures) == failed_on_new > 0, traffic.failures[:3]
    assert all(t <= decided_at for t in traffic.failed_at)
    assert traffic.versions["1"] - answered.get("1", 0) > 20 and traffic.versions["2"] == answered.get("2", 0)
    # version 2 is gone from every replica, nothing of the canary is left in the router's routing
    assert _ready_versions(service) == [{"1"}, {"1"}]
    assert ServingState.read(Repository.at(repo)).splits == {}
    status = hpc_tf("serve", "status", "--repository", str(repo))
    assert f"canary flaky v1 -> v2: ROLLED BACK {canary.updated}, v1 serves: {canary.reason}" in status.stdout


def test_a_good_canary_is_promoted_step_by_step_without_a_failed_request(service: dict[str, Any]) -> None:
    repo = service["repo"]
    with Traffic(service, X, model="flaky", max_seconds=240) as traffic:
        started = hpc_tf("serve", "canary", "flaky", str(GOOD_TOO), "--steps", "20,100", "--step-time", "4s",
                         "--min-requests", "10", "--repository", str(repo))
        assert started.returncode == 0, started.stderr
        _wait(lambda: _finished(repo) != "", "the canary's verdict", timeout=90)
        time.sleep(2)
    state = ServingState.read(Repository.at(repo))
    assert state.canaries["flaky"].status == "promoted", state.canaries["flaky"]
    assert traffic.failures == [], traffic.failures[:3]
    assert traffic.versions["3"] > 20 and state.models["flaky"].versions == (3,)
    assert state.models["flaky"].by == "canary"
    assert _ready_versions(service) == [{"3"}, {"3"}] and state.splits == {}
