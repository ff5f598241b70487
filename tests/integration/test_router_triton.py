"""The router in front of REAL tritonserver replicas (the one bundled in nvidia-pytriton), driven by real
tritonclient HTTP and gRPC clients: a replica SIGKILLed mid-traffic, a replica drained under traffic, control
calls refused without the owner's key, a sticky split. (The 10/90 split over 20,000 requests and the
metrics counting each of them: on replica jobs, test_serving_replicas_slurm.py.)

Replicas: the repository's node (``hpc-tf serve up``, models ``a`` and ``b`` handed off to it) and a
second tritonserver on the same repository and secret, started here the way the node starts its own;
the router runs as ``hpc-tf serve router``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpc.errors import ServingError
from hpc.serving import secret as node_secret
from hpc.serving.repository import Repository
from hpc.serving.router import client
from hpc.serving.router.core import PROBE_INTERVAL_S, PROBE_TIMEOUT_S
from hpc.serving.server import Bundle, backend_dir, free_port, server_argv, server_env
from tests._prometheus import parse, total
from tests.integration._owner_config import owner_config as owner_config  # the module's keys
from tests.integration._traffic import Traffic
from tests.unit._serving_models import export_mlp

pytestmark = [pytest.mark.triton, pytest.mark.tf]
HPC_TF = str(Path(sys.prefix) / "bin" / "hpc-tf")
BOUND_S = PROBE_INTERVAL_S + PROBE_TIMEOUT_S  # the router's stated bound on sending to a dead replica
X = np.random.default_rng(3).normal(size=(2, 16)).astype("float32")


def hpc_tf(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HPC_TF, *args, "--site", "local"], capture_output=True, text=True, timeout=timeout,
                          check=False)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _wait(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class TritonReplica:
    """Another tritonserver on the repository, with its owner's secret, loading ``models`` at start."""

    def __init__(self, repo: Path, work: Path, models: list[str]) -> None:
        bundle = Bundle.find()
        work.mkdir(parents=True, exist_ok=True)
        self.ports = (free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1"))
        argv = server_argv(bundle, Repository.at(repo), backend_dir(bundle, work), "127.0.0.1", self.ports,
                           node_secret.load(repo)) + [f"--load-model={m}" for m in models]
        with (work / "tritonserver.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, env=server_env(bundle), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{self.ports[0]}"
        _wait(lambda: all(_get(f"{url}/v2/models/{m}/ready")[0] == 200 for m in models) or self.proc.poll() is not None,
              "a replica's models")
        assert self.proc.poll() is None, (work / "tritonserver.log").read_text()[-2000:]

    @property
    def spec(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "http_port": self.ports[0], "grpc_port": self.ports[1],
                "name": f"127.0.0.1:{self.ports[0]}"}

    def kill(self) -> None:
        """SIGKILL the server; then its python stubs (its process group, started by this test)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self.kill()



@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two replicas serving models a and b, and the router in front of them."""
    base = tmp_path_factory.mktemp("service")
    repo = base / "repo"
    up = hpc_tf("serve", "up", "--json", "--repository", str(repo), timeout=120)
    assert up.returncode == 0, up.stderr
    node = json.loads(up.stdout)
    replicas: list[TritonReplica] = []
    router: subprocess.Popen[str] | None = None
    try:
        for model, seed in (("a", 1), ("b", 2)):
            done = hpc_tf("handoff", str(export_mlp(base / f"export_{model}", seed=seed)), "--model", model,
                          "--format", "python", "--repository", str(repo))
            assert done.returncode == 0, done.stderr
        replicas.append(TritonReplica(repo, base / "replica2", ["a", "b"]))
        router = subprocess.Popen(
            [HPC_TF, "serve", "router", "--repository", str(repo), "--site", "local",
             "--replica", f"127.0.0.1:{node['http_port']}:{node['grpc_port']}",
             "--replica", f"127.0.0.1:{replicas[0].ports[0]}:{replicas[0].ports[1]}"],
            stdout=subprocess.PIPE, stderr=(base / "router.log").open("w"), text=True)
        assert router.stdout is not None
        ready = router.stdout.readline()
        assert ready.startswith("router ready"), (base / "router.log").read_text()
        endpoint = json.loads((repo / ".hpc-tf" / "router.json").read_text())
        assert (repo / ".hpc-tf" / "router.json").stat().st_mode & 0o777 == 0o600
        yield {"repo": repo, "base": base, "host": endpoint["host"], "http_port": endpoint["http_port"],
               "grpc_port": endpoint["grpc_port"], "router": router}
    finally:
        if router is not None:
            router.terminate()
            router.wait(30)
            assert not (repo / ".hpc-tf" / "router.json").exists()
        for replica in replicas:
            replica.stop()
        hpc_tf("serve", "down", "--repository", str(repo), timeout=60)


def metrics(service: dict[str, Any]) -> dict[Any, float]:
    status, body = _get(f"http://{service['host']}:{service['http_port']}/metrics")
    assert status == 200
    return parse(body.decode())


def test_a_replica_killed_mid_traffic_fails_at_most_its_in_flight_requests_and_gets_none_after_the_bound(
        service: dict[str, Any]) -> None:
    repo = Repository.at(service["repo"])
    doomed = TritonReplica(service["repo"], service["base"] / "doomed", ["a"])
    try:
        added = client.add_replica(repo, doomed.spec)
        assert added["healthy"] and "a:1" in added["ready"], added
        name = doomed.spec["name"]
        with Traffic(service, X, model="a", max_seconds=60, clients=2) as traffic:
            _wait(lambda: total(metrics(service), "hpctf_router_replica_requests_total", replica=name) > 50,
                  "traffic on the new replica", timeout=30)
            killed_at = time.monotonic()
            doomed.kill()
            time.sleep(BOUND_S + 1)
            after_bound = total(metrics(service), "hpctf_router_replica_requests_total", replica=name)
            answered_before = sum(traffic.models.values())
            time.sleep(2)
        assert sum(traffic.models.values()) > answered_before + 20  # the others kept answering
        in_flight_max = len(traffic.threads)  # each client has at most one request in flight
        assert len(traffic.failures) <= in_flight_max, traffic.failures
        assert all(t <= killed_at + BOUND_S for t in traffic.failed_at), traffic.failures
        assert total(metrics(service), "hpctf_router_replica_requests_total", replica=name) == after_bound
        [state] = [r for r in client.state(repo)["replicas"] if r["name"] == name]
        assert not state["healthy"] and state["in_flight"] == 0, state
    finally:
        doomed.kill()
        with contextlib.suppress(ServingError):
            client.drain_replica(repo, doomed.spec["name"])
            client.remove_replica(repo, doomed.spec["name"])


def test_a_replica_drained_under_traffic_loses_no_request_and_is_removed(service: dict[str, Any]) -> None:
    repo = Repository.at(service["repo"])
    extra = TritonReplica(service["repo"], service["base"] / "drained", ["a"])
    try:
        name = extra.spec["name"]
        client.add_replica(repo, extra.spec)
        with Traffic(service, X, model="a", max_seconds=60, clients=2) as traffic:
            _wait(lambda: total(metrics(service), "hpctf_router_replica_requests_total", replica=name) > 50,
                  "traffic on the new replica", timeout=30)
            drained = client.drain_replica(repo, name, wait=30)
            assert drained["draining"] and drained["in_flight"] == 0, drained
            served = total(metrics(service), "hpctf_router_replica_requests_total", replica=name)
            client.remove_replica(repo, name)
            extra.stop()
            answered = sum(traffic.models.values())
            time.sleep(2)
        assert traffic.failures == [], traffic.failures[:3]
        assert sum(traffic.models.values()) > answered + 20
        assert total(metrics(service), "hpctf_router_replica_requests_total", replica=name) == served
        assert name not in [r["name"] for r in client.state(repo)["replicas"]]
    finally:
        extra.stop()


def test_control_calls_without_or_with_a_wrong_key_are_refused_and_inference_stays_open(
        service: dict[str, Any]) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    repo = Repository.at(service["repo"])

    def controlled() -> dict[str, Any]:  # what a control call could change (the traffic window moves on its own)
        state = client.state(repo)
        return {"replicas": state["replicas"], "splits": state["splits"]}

    before = controlled()
    http = f"http://{service['host']}:{service['http_port']}"
    for headers in ({}, {node_secret.CONTROL_HEADER: "not-the-key"}):
        for method, path, body in (("GET", "/hpc-tf/router/state", None),
                                   ("PUT", "/hpc-tf/router/splits/ab", {"variants": [{"model": "b", "version": None,
                                                                                     "weight": 1}]}),
                                   ("POST", "/hpc-tf/router/replicas", {"host": "127.0.0.1", "http_port": 9,
                                                                        "grpc_port": 9}),
                                   ("POST", "/v2/repository/models/a/unload", {})):
            request = urllib.request.Request(http + path, method=method, headers=headers,
                                             data=None if body is None else json.dumps(body).encode())
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code in (403, 404), path
    grpc = grpcclient.InferenceServerClient(f"{service['host']}:{service['grpc_port']}")
    with pytest.raises(InferenceServerException, match="owner's key"):
        grpc.get_model_config("a", headers={"triton-grpc-protocol-hpc-tf-key": "not-the-key"})
    with pytest.raises(InferenceServerException):
        grpc.unload_model("a", headers=node_secret.load(repo.root).grpc_headers())  # not served by the router
    assert grpc.is_model_ready("a")
    grpc.close()
    assert controlled() == before

    with pytest.MonkeyPatch.context() as patch:  # another user's config: no key for this repository
        patch.setenv("XDG_CONFIG_HOME", str(service["base"] / "other-user"))
        with pytest.raises(ServingError, match="no key for the serving node"):
            client.state(repo)


def test_a_sticky_split_sends_one_header_value_to_one_variant_over_http_and_grpc(service: dict[str, Any]) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    repo = Repository.at(service["repo"])
    client.set_split(repo, "sticky", {"variants": [{"model": "a", "version": None, "weight": 50},
                                                   {"model": "b", "version": None, "weight": 50}],
                                      "sticky_header": "X-User"})
    http = httpclient.InferenceServerClient(f"{service['host']}:{service['http_port']}")
    grpc = grpcclient.InferenceServerClient(f"{service['host']}:{service['grpc_port']}")
    seen: dict[str, set[str]] = {}
    for user in (f"user-{i}" for i in range(12)):
        for _ in range(5):
            for module, front in ((httpclient, http), (grpcclient, grpc)):
                tensor = module.InferInput("features", list(X.shape), "FP32")
                tensor.set_data_from_numpy(X)
                answer = front.infer("sticky", [tensor], headers={"x-user": user}).get_response()
                seen.setdefault(user, set()).add(answer["model_name"] if isinstance(answer, dict)
                                                 else answer.model_name)
    http.close()
    grpc.close()
    assert all(len(models) == 1 for models in seen.values()), seen  # each user: one variant, both protocols
    assert set().union(*seen.values()) == {"a", "b"}, seen  # and the users spread over both
