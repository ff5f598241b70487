"""The router's replica controller with REAL tritonserver replicas as local processes (the embedded default
site ``local``), under continuous HTTP and gRPC traffic: 1 -> 3 -> 1 replicas with no failed request, a
replica killed (SIGKILL) fails at most its in-flight requests and is replaced, and the count is recorded
so that a router started again keeps it and adopts the running replicas.

The repository's node (``hpc-tf serve up``) holds the owner's secret and takes the hand-off of model
``a``; the router (``hpc-tf serve router --replicas 1``) starts its own replicas, which restore ``a``
from serving.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hpc.serving.repository import Repository
from hpc.serving.router import client
from hpc.serving.state import ServingState
from tests._prometheus import parse
from tests.integration._owner_config import owner_config as owner_config  # the module's keys
from tests.integration._traffic import Traffic
from tests.integration.test_router_triton import BOUND_S, HPC_TF, X, _get, _wait, hpc_tf
from tests.unit._serving_models import export_mlp

pytestmark = [pytest.mark.triton, pytest.mark.tf]
START_S = 180  # one local replica: tritonserver, its python stub, model a restored



def start_router(repo: Path, log: Path, *options: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    router = subprocess.Popen([HPC_TF, "serve", "router", "--repository", str(repo), "--site", "local", *options],
                              stdout=subprocess.PIPE, stderr=log.open("a"), text=True)
    assert router.stdout is not None
    ready = router.stdout.readline()
    assert ready.startswith("router ready"), log.read_text()
    endpoint = json.loads((repo / ".hpc-tf" / "router.json").read_text())
    return router, endpoint


def stop_router(router: subprocess.Popen[str]) -> None:
    router.terminate()
    router.wait(30)


@contextmanager
def served_a(base: Path) -> Iterator[dict[str, Any]]:
    """A node serving model ``a`` (handed off) on a repository under ``base``: ``{"repo", "log"}``, where
    the test puts its router (``router``: stopped after, and its replicas first, as ``serve down`` stops
    them; any replica a failed test left is killed)."""
    repo = base / "repo"
    up = hpc_tf("serve", "up", "--json", "--repository", str(repo), timeout=120)
    assert up.returncode == 0, up.stderr
    info: dict[str, Any] = {"repo": repo, "log": base / "router.log"}
    try:
        done = hpc_tf("handoff", str(export_mlp(base / "export_a", seed=1)), "--model", "a", "--format", "python",
                      "--repository", str(repo))
        assert done.returncode == 0, done.stderr
        yield info
    finally:
        router = info.get("router")  # the router a test started again, if one did
        if router is not None and router.poll() is None:
            with contextlib.suppress(Exception):  # not recorded: an autoscaler leaves it at 0 too
                client.scale(Repository.at(repo), 0, record=False)
                _wait(lambda: not client.service(Repository.at(repo))["managed"], "the replicas to stop", 120)
            stop_router(router)
        for path in (repo / ".hpc-tf" / "replicas").glob("r-*.json"):  # a test that failed half-way
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(json.loads(path.read_text())["pid"], signal.SIGKILL)
        hpc_tf("serve", "down", "--repository", str(repo), timeout=60)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with served_a(tmp_path_factory.mktemp("replicas")) as info:
        router, endpoint = start_router(info["repo"], info["log"], "--replicas", "1")
        info.update(host=endpoint["host"], router=router, http_port=endpoint["http_port"],
                    grpc_port=endpoint["grpc_port"])
        wait_serving(info, 1)
        yield info


def processes_under(directory: Path) -> list[int]:
    """Processes whose command line names ``directory`` (a replica's work directory: its stubs)."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and str(directory).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
    return found


def serving(service: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in client.service(Repository.at(service["repo"]))["managed"] if m["state"] == "serving"]


def wait_serving(service: dict[str, Any], count: int) -> None:
    """Until exactly ``count`` replicas serve and no other is managed."""
    def settled() -> bool:
        managed = client.service(Repository.at(service["repo"]))["managed"]
        return len(managed) == count and all(m["state"] == "serving" for m in managed)
    _wait(settled, f"{count} serving replica(s); router log: {service['log']}", timeout=START_S * 2)


def replica_requests(service: dict[str, Any]) -> dict[str, float]:
    status, body = _get(f"http://{service['host']}:{service['http_port']}/metrics")
    assert status == 200
    samples = parse(body.decode())
    return {dict(labels)["replica"]: value for (name, labels), value in samples.items()
            if name == "hpctf_router_replica_requests_total"}


def test_scaling_1_to_3_to_1_under_traffic_fails_no_request(service: dict[str, Any]) -> None:
    repo = Repository.at(service["repo"])
    with Traffic(service, X, model="a", max_requests=1_000_000, max_seconds=900, clients=2) as traffic:
        scaled = client.scale(repo, 3)
        assert scaled["replicas"] == 3 and ServingState.read(repo).to_dict()["service"] == {"replicas": 3}
        wait_serving(service, 3)
        three = [m["name"] for m in serving(service)]
        _wait(lambda: all(replica_requests(service).get(n, 0) > 20 for n in three), "traffic on all three", 60)
        client.scale(repo, 1)
        wait_serving(service, 1)
        answered = sum(traffic.models.values())
        time.sleep(2)
    assert traffic.failures == [], traffic.failures[:3]
    assert sum(traffic.models.values()) > answered + 20  # the one left kept answering
    log = service["log"].read_text()
    assert log.count("drain r-") >= 2 and "scale down: 3 active > 1 wanted" in log, log[-3000:]
    assert "gate: ready, a v1 READY, parity" in log, log[-3000:]  # the hand-off's samples, on each replica
    # the two drained replicas stopped and unregistered themselves
    assert len(list((service["repo"] / ".hpc-tf" / "replicas").glob("r-*.json"))) == 1


def test_a_killed_replica_fails_at_most_its_in_flight_requests_and_is_replaced(service: dict[str, Any]) -> None:
    repo = Repository.at(service["repo"])
    client.scale(repo, 2)
    wait_serving(service, 2)
    doomed = serving(service)[-1]["name"]
    pid = json.loads(repo.replica_file(doomed).read_text())["pid"]  # its tritonserver
    with Traffic(service, X, model="a", max_requests=1_000_000, max_seconds=600, clients=2) as traffic:
        _wait(lambda: replica_requests(service).get(doomed, 0) > 50, "traffic on the doomed replica", 60)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: doomed not in [m["name"] for m in client.service(repo)["managed"]], "its removal", 60)
        wait_serving(service, 2)  # a replacement, admitted through the same gate
        answered = sum(traffic.models.values())
        time.sleep(2)
    assert len(traffic.failures) <= len(traffic.threads), traffic.failures  # one in flight per client at most
    assert all(t <= killed_at + BOUND_S for t in traffic.failed_at), traffic.failures
    assert sum(traffic.models.values()) > answered + 20
    assert doomed not in [m["name"] for m in serving(service)]
    assert f"{doomed} ended unexpectedly" in service["log"].read_text()
    # nothing of it is left running (its tritonserver's python backend stubs included)
    _wait(lambda: not processes_under(repo.replicas_dir / doomed), "the killed replica's processes to end", 30)


def test_a_router_started_again_keeps_the_count_and_adopts_the_running_replicas(service: dict[str, Any]) -> None:
    repo = Repository.at(service["repo"])
    before = sorted(m["name"] for m in serving(service))
    stop_router(service["router"])
    router, endpoint = start_router(service["repo"], service["log"])  # no --replicas: the recorded count
    service.update(router=router, http_port=endpoint["http_port"], grpc_port=endpoint["grpc_port"])
    wait_serving(service, len(before))
    assert sorted(m["name"] for m in serving(service)) == before  # adopted, not started anew
    with Traffic(service, X, model="a", max_requests=200, max_seconds=60) as traffic:
        for thread in traffic.threads:
            thread.join(60)
    assert traffic.failures == [] and traffic.versions == {"1": 400}, (traffic.failures[:3], traffic.versions)
    assert client.service(repo)["replicas"] == len(before)


def _tritonservers(repo: Path) -> list[int]:
    """The tritonserver processes serving ``repo``, found by their command lines."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if argv and argv[0].endswith(b"tritonserver") and f"--model-repository={repo}".encode() in argv:
            found.append(int(entry.name))
    return found


def test_a_replica_stopped_while_it_starts_leaves_no_tritonserver(tmp_path: Path) -> None:
    """A router that scales down a replica still starting (or a scancel) SIGTERMs its node process while the
    node waits for tritonserver or restores the recorded models: the tritonserver it started (a session
    of its own, which the signal does not reach) must stop too, not outlive it."""
    from hpc.runtime.node.processes import alive
    from hpc.serving import secret as node_secret
    from hpc.serving.state import update_state
    from tests.integration._flaky_model import write_flaky

    repo = tmp_path / "repo"
    write_flaky(repo, "slow", {1: 0})  # a python-backend model: its restore takes seconds
    update_state(Repository.at(repo), lambda s: s.with_model("slow", [1], "handoff"))
    node_secret.create(repo)
    log = tmp_path / "node.log"
    node = subprocess.Popen([HPC_TF, "serve", "node", "--repository", str(repo), "--replica", "r-0000aa", "--host",
                             "127.0.0.1"], stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: bool(_tritonservers(repo)) or node.poll() is not None, "its tritonserver to start", 60)
        started = _tritonservers(repo)
        node.send_signal(signal.SIGTERM)
        node.wait(60)
        assert started and "serving node ready" not in log.read_text(), log.read_text()  # stopped as it started
        _wait(lambda: not any(alive(pid) for pid in started), "its tritonserver to stop", 60)
        assert not (repo / ".hpc-tf" / "replicas" / "r-0000aa.json").exists()
    finally:
        if node.poll() is None:
            node.kill()
        for pid in _tritonservers(repo):
            os.kill(pid, signal.SIGKILL)
