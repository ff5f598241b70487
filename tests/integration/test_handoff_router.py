"""The hand-off publishes into the service as into one node: with a router registered, the new version is
loaded and checked against the trained model's outputs on every replica the router lists, on REAL
tritonservers, and recorded once; when one replica cannot serve it, it is rolled back on all and the
previous version keeps serving everywhere. With --canary, the router then rolls it out in steps under
HTTP and gRPC traffic, without a failed request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from hpc.serving import secret as node_secret
from hpc.serving.control import ModelControl
from hpc.serving.handoff import HandoffFailed, handoff
from hpc.serving.repository import Repository
from hpc.serving.router import client
from hpc.serving.state import ServingState
from tests.integration._owner_config import owner_config as owner_config  # the module's keys
from tests.integration._traffic import Traffic
from tests.integration.test_router_triton import HPC_TF, TritonReplica, _wait, hpc_tf
from tests.unit._serving_models import export_mlp

pytestmark = [pytest.mark.triton, pytest.mark.tf]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Model ``a`` v1 handed off to the node (no router yet: the node as before), a second replica loading
    it, and the router in front of both."""
    base = tmp_path_factory.mktemp("handoff-router")
    repo = base / "repo"
    up = hpc_tf("serve", "up", "--json", "--repository", str(repo), timeout=120)
    assert up.returncode == 0, up.stderr
    node = json.loads(up.stdout)
    replicas: list[TritonReplica] = []
    router: subprocess.Popen[str] | None = None
    try:
        first = hpc_tf("handoff", str(export_mlp(base / "export1", seed=1)), "--model", "a", "--format", "python",
                       "--repository", str(repo))
        assert first.returncode == 0, first.stderr
        replicas.append(TritonReplica(repo, base / "replica2", ["a"]))
        router = subprocess.Popen(
            [HPC_TF, "serve", "router", "--repository", str(repo), "--site", "local",
             "--replica", f"127.0.0.1:{node['http_port']}:{node['grpc_port']}",
             "--replica", f"127.0.0.1:{replicas[0].ports[0]}:{replicas[0].ports[1]}"],
            stdout=subprocess.PIPE, stderr=(base / "router.log").open("w"), text=True)
        assert router.stdout is not None
        assert router.stdout.readline().startswith("router ready"), (base / "router.log").read_text()
        endpoint = json.loads((repo / ".hpc-tf" / "router.json").read_text())
        yield {"repo": repo, "base": base, "replicas": replicas, "host": endpoint["host"],
               "http_port": endpoint["http_port"], "grpc_port": endpoint["grpc_port"],
               "grpc_urls": [node["grpc_url"], f"127.0.0.1:{replicas[0].ports[1]}"]}
    finally:
        if router is not None:
            router.terminate()
            router.wait(30)
        for replica in replicas:
            replica.stop()
        hpc_tf("serve", "down", "--repository", str(repo), timeout=60)


def _ready(service: dict[str, Any], urls: list[str]) -> list[set[str]]:
    found = []
    for url in urls:
        control = ModelControl(url, node_secret.load(service["repo"]))
        try:
            found.append({m.version for m in control.index() if m.name == "a" and m.state == "READY"})
        finally:
            control.close()
    return found


def test_a_handoff_loads_and_verifies_the_new_version_on_every_replica_the_router_lists(
        service: dict[str, Any]) -> None:
    repo = service["repo"]
    done = hpc_tf("handoff", str(export_mlp(service["base"] / "export2", seed=2)), "--model", "a", "--format",
                  "python", "--repository", str(repo), "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["version"] == 2 and record["server"] == ", ".join(service["grpc_urls"]), record
    assert record["parity"]["triton"]["ok"] and record["parity"][f"triton {service['grpc_urls'][1]}"]["ok"], record
    assert _ready(service, service["grpc_urls"]) == [{"2"}, {"2"}]
    assert ServingState.read(Repository.at(repo)).models["a"].versions == (2,)


def test_a_handoff_that_one_replica_cannot_serve_is_rolled_back_on_all(service: dict[str, Any]) -> None:
    repo = Repository.at(service["repo"])
    # a replica on a stale copy of the repository: the new version never appears there
    stale = service["base"] / "stale-repo"
    shutil.copytree(repo.root, stale, ignore=shutil.ignore_patterns(".hpc-tf"))
    key = node_secret.key_file(stale)
    shutil.copy2(node_secret.key_file(repo.root), key)
    os.chmod(key, 0o600)
    odd = TritonReplica(stale, service["base"] / "stale", ["a"])
    service["replicas"].append(odd)
    client.add_replica(repo, odd.spec)
    urls = [*service["grpc_urls"], f"127.0.0.1:{odd.ports[1]}"]
    with pytest.raises(HandoffFailed) as failed:
        handoff(export_mlp(service["base"] / "export3", seed=3), "a", repo, "python", load_timeout=60)
    record = failed.value.record
    assert record.failed_stage == "load" and record.rolled_back and record.version == 3, record
    assert "version 3 was not ready" in str(failed.value) and "previous version keeps serving" in str(failed.value)
    assert _ready(service, urls) == [{"2"}, {"2"}, {"2"}]  # 3 unloaded where it loaded, 2 serving everywhere
    assert repo.versions("a") == [1, 2] and ServingState.read(repo).models["a"].versions == (2,)
    client.drain_replica(repo, odd.spec["name"])
    client.remove_replica(repo, odd.spec["name"])



def test_a_handoff_with_a_canary_is_rolled_out_by_the_router_step_by_step_without_a_failed_request(
        service: dict[str, Any]) -> None:
    repo = Repository.at(service["repo"])
    x = np.random.default_rng(4).normal(size=(2, 16)).astype("float32")
    with Traffic(service, x, model="a", max_seconds=300) as traffic:
        done = hpc_tf("handoff", str(export_mlp(service["base"] / "export4", seed=4)), "--model", "a", "--format",
                      "python", "--repository", str(repo.root), "--canary", "30,100", "--canary-step-time", "5s")
        assert done.returncode == 0, done.stderr
        new = repo.versions("a")[-1]  # numbers are not reused after a rollback
        assert done.stdout.startswith(f"a version {new} in its canary"), done.stdout
        assert f"record: the router rolls version {new} out: steps 30,100 %" in done.stderr, done.stderr
        _wait(lambda: ServingState.read(repo).canaries["a"].status != "running", "the canary's verdict", 120)
        time.sleep(2)
    state = ServingState.read(repo)
    assert state.canaries["a"].status == "promoted", state.canaries["a"]
    assert traffic.failures == [], traffic.failures[:3]
    assert traffic.versions["2"] > 20 and traffic.versions[str(new)] > 20, traffic.versions
    assert state.models["a"].versions == (new,) and state.splits == {}
    assert _ready(service, service["grpc_urls"]) == [{str(new)}, {str(new)}]
