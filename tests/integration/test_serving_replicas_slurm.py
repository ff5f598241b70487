"""Issue 22 on the test cluster: the router's replicas as Slurm jobs (sandbox site, serving partition),
under continuous HTTP and gRPC traffic from this host through the router:

- 1 -> 3 -> 1 replicas with no failed request; a replica job near its time limit replaced (and cancelled,
  not timed out) with no failed request; a replica job killed with ``scancel --signal=KILL``: failures at
  most the requests in flight on it, none after the router's stated bound, and a replacement takes traffic;
- on two replica jobs: a 10/90 split lands within 2 points over 20,000 requests; a canary whose version
  fails every second request is rolled back at its first gate, version 1 keeps serving, and every failed
  request is one the canary's share sent to the new version.

The router runs as ``researcher`` on this host (reachable from the nodes on the cluster's bridge); the
repository's node (``hpc-tf serve up``) holds the owner's secret.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from hpc.serving.repository import Repository
from hpc.serving.state import update_state
from tests._prometheus import parse, total
from tests.conftest import as_user_argv
from tests.integration._flaky_model import write_flaky
from tests.integration._traffic import Traffic
from tests.integration.test_handoff_slurm import PYTHON, Run, hpc_tf, project, running_node
from tests.integration.test_router_lock_slurm import BRIDGE
from tests.integration.test_router_triton import BOUND_S, _get

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.triton, pytest.mark.tf, pytest.mark.service]
__all__ = ["project"]  # the fixture, shared with test_handoff_slurm

X = np.random.default_rng(3).normal(size=(2, 16)).astype("float32")
PARTITION = ["--set", "serving.partition=gpu"]  # room for the node and 3 replicas (cpu1 holds two)
REPLICA_TIME = "6:00"
MARGIN_S = 200  # replaced at about 160 s of its 360: its replacement starts well before the end
GOOD, FAILS_HALF = 1, 2  # versions of the flaky test model: none fails, every second request fails


def _wait(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


class Service:
    """A router with replica jobs as its owner sees it: the endpoint, the router's log, the owner's commands
    (``researcher``, whose config holds the repository's key) on the sandbox site."""

    def __init__(self, researcher_run: Run, project: Path, repo: Path, log: Path, settings: Sequence[str]) -> None:
        self.run, self.project, self.repo, self.log = researcher_run, project, repo, log
        self.site = ["--site", "sandbox", "--set", f"python={PYTHON}", "--set", f"runs_dir={project / 'runs'}",
                     "--set", f"serving.model_repository={repo}", *PARTITION,
                     *(word for setting in settings for word in ("--set", setting))]
        self.endpoint: dict[str, Any] = {}

    def hpc_tf(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run(["hpc-tf", *args, *self.site], cwd=self.project, check=False, timeout=timeout)

    def _client(self, call: str, check: bool = True) -> str:
        """``hpc.serving.router.client.<call>`` on the repository as the owner (``repo`` in ``call``): its
        printed JSON."""
        done = self.run([PYTHON, "-c", "import json, sys; from pathlib import Path; "
                         "from hpc.serving.repository import Repository; from hpc.serving.router import client; "
                         f"repo = Repository.at(Path(sys.argv[1])); print(json.dumps(client.{call}))",
                         str(self.repo)], cwd=self.project, check=check)
        return done.stdout

    def managed(self) -> list[dict[str, Any]]:
        """The router's replicas, from its owner-only control API."""
        return list(json.loads(self._client("service(repo)"))["managed"])

    def stop_replicas(self) -> None:
        """Every replica away, the count not recorded (``serve down``'s way: an autoscaler stops too)."""
        self._client("scale(repo, 0, record=False)", check=False)

    def settled(self, count: int) -> bool:
        now = self.managed()
        return len(now) == count and all(m["state"] == "serving" for m in now)

    def scale(self, count: int) -> None:
        done = self.hpc_tf("serve", "scale", "--replicas", str(count))
        assert done.returncode == 0 and done.stdout.startswith(f"replicas: {count} wanted"), done.stderr

    def canary(self, model: str) -> dict[str, Any]:
        """``model``'s canary as recorded in serving.json (read as a file: the test runs as root, not as
        the owner that the product's reader insists on)."""
        recorded = json.loads((self.repo / ".hpc-tf" / "serving.json").read_text())
        return dict(recorded.get("canaries", {}).get(model, {"status": "running"}))

    def metrics(self) -> dict[Any, float]:
        status, body = _get(f"http://{self.endpoint['host']}:{self.endpoint['http_port']}/metrics")
        assert status == 200
        return parse(body.decode())


def mlp_handed_off(researcher_run: Run, project: Path) -> Callable[[Service], None]:
    """A ``with_node`` step for :func:`router_with_replicas`: ``mlp`` v1 handed off to the node (the
    recorded version every replica restores, and the parity samples it is admitted by)."""
    from tests.unit._serving_models import export_mlp

    exported = export_mlp(project.parent / "exported" / "v1", seed=1)

    def hand_off(service: Service) -> None:
        done = hpc_tf(researcher_run, project, "handoff", str(exported), "--model", "mlp", "--format", "python",
                      check=False, timeout=300)
        assert done.returncode == 0, done.stderr

    return hand_off


@contextmanager
def router_with_replicas(researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, scratch_dir: Path,
                         replicas: int, with_node: Callable[[Service], None], settings: Sequence[str] = (),
                         replica_time: str = REPLICA_TIME) -> Iterator[Service]:
    """The node (``serve up``) and ``with_node(service)``; then ``hpc-tf serve router`` on this host with
    ``replicas`` replica jobs (the site's ``settings`` added), all serving. After: every replica scaled away
    as ``serve down`` does it, the router and the node stopped."""
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    service = Service(researcher_run, project, project.parent / "models", scratch_dir / "router.log", settings)
    with running_node(researcher_run, project, *PARTITION):
        with_node(service)
        router = subprocess.Popen(
            as_user_argv(slurm_cluster.user, ["hpc-tf", "serve", "router", "--host", BRIDGE, "--replicas",
                                              str(replicas), "--replica-time", replica_time, "--replace-margin",
                                              str(MARGIN_S), *service.site]),
            cwd=project, stdout=subprocess.PIPE, stderr=service.log.open("w"), text=True)
        try:
            assert router.stdout is not None
            assert router.stdout.readline().startswith("router ready"), service.log.read_text()
            service.endpoint = json.loads((service.repo / ".hpc-tf" / "router.json").read_text())
            _wait(lambda: service.settled(replicas), f"{replicas} serving replica(s)", 400)
            yield service
        finally:
            service.stop_replicas()
            _wait(lambda: router.poll() is not None or not service.managed(), "the replicas to stop", 120)
            router.terminate()
            router.wait(30)


def test_slurm_replicas_scale_get_replaced_near_their_limit_and_after_a_kill(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, scratch_dir: Path,
) -> None:
    hand_off = mlp_handed_off(researcher_run, project)
    with router_with_replicas(researcher_run, project, slurm_cluster, scratch_dir, 1, hand_off) as service:
        [first] = service.managed()
        assert first["job_id"] and first["node"], first

        # 1 -> 3 -> 1 under traffic
        with Traffic(service.endpoint, X, model="mlp", max_requests=10**6, max_seconds=900, clients=2) as traffic:
            service.scale(3)
            _wait(lambda: service.settled(3), "three replicas", 400)
            jobs = [m["job_id"] for m in service.managed()]
            service.scale(1)
            _wait(lambda: service.settled(1), "one replica again", 120)
            answered = sum(traffic.models.values())
            time.sleep(2)
        assert traffic.failures == [], traffic.failures[:3]
        assert sum(traffic.models.values()) > answered + 20
        [kept] = service.managed()
        gone = [j for j in jobs if j != kept["job_id"]]
        live = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING", "-j", ",".join(gone)], capture_output=True,
                              text=True, check=False)
        assert len(gone) == 2 and not live.stdout.strip(), live.stdout

        # the replica near its time limit gets a replacement first, then drains and is cancelled
        with Traffic(service.endpoint, X, model="mlp", max_requests=10**6, max_seconds=900, clients=2) as traffic:
            _wait(lambda: kept["name"] not in [m["name"] for m in service.managed()] and service.settled(1),
                  "the replacement of the replica near its limit", 420)
            answered = sum(traffic.models.values())
            time.sleep(2)
        assert traffic.failures == [], traffic.failures[:3]
        assert sum(traffic.models.values()) > answered + 20
        text = service.log.read_text()
        assert f"{kept['name']} has " in text and f"drain {kept['name']}" in text, text[-3000:]
        ended = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", kept["job_id"]],
                               capture_output=True, text=True, check=False).stdout
        assert ended.startswith("CANCELLED"), ended  # stopped by the router, not by its time limit

        # scancel --signal=KILL: at most the in-flight requests on it fail, none after the bound
        service.scale(2)
        _wait(lambda: service.settled(2), "two replicas", 400)
        doomed = service.managed()[-1]
        with Traffic(service.endpoint, X, model="mlp", max_requests=10**6, max_seconds=900, clients=2) as traffic:
            time.sleep(3)
            killed_at = time.monotonic()
            subprocess.run(["scancel", "--signal=KILL", "--full", doomed["job_id"]], check=True)
            _wait(lambda: doomed["name"] not in [m["name"] for m in service.managed()],
                  "the killed replica's removal", 120)
            _wait(lambda: service.settled(2), "its replacement", 400)
            answered = sum(traffic.models.values())
            time.sleep(2)
        assert len(traffic.failures) <= len(traffic.threads), traffic.failures
        assert all(t <= killed_at + BOUND_S for t in traffic.failed_at), traffic.failures
        assert sum(traffic.models.values()) > answered + 20
        assert f"{doomed['name']} ended unexpectedly" in service.log.read_text()


def test_on_slurm_replicas_a_10_90_split_lands_within_2_points_and_a_failing_canary_is_rolled_back(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, scratch_dir: Path,
) -> None:
    def serving_good_and_flaky(service: Service) -> None:
        """``good`` v1 and ``flaky`` v1 recorded as serving (flaky v2 fails every second request): the
        replica jobs restore them before they take traffic."""
        write_flaky(service.repo, "good", {GOOD: 0})
        write_flaky(service.repo, "flaky", {GOOD: 0, FAILS_HALF: 2})
        update_state(Repository.at(service.repo),
                     lambda s: s.with_model("good", [GOOD], "handoff").with_model("flaky", [GOOD], "handoff"))
        subprocess.run(["chown", "-R", slurm_cluster.user, str(service.repo)], check=True)

    with router_with_replicas(researcher_run, project, slurm_cluster, scratch_dir, 2,
                              serving_good_and_flaky) as service:
        split = service.hpc_tf("serve", "split", "ab", "good=10", "flaky:1=90")
        assert split.returncode == 0 and split.stdout.strip() == "ab: good:served 10, flaky:1 90", split.stderr
        with Traffic(service.endpoint, X, model="ab", max_requests=10_000, max_seconds=900, clients=2) as traffic:
            for thread in traffic.threads:
                thread.join(900)
        sent = sum(traffic.sent.values())
        assert sent == 20_000 and traffic.failures == [], traffic.failures[:3]
        assert abs(traffic.models["good"] / sent - 0.10) <= 0.02, traffic.models
        samples = service.metrics()  # the router's metrics count every request, per variant and per replica
        assert total(samples, "hpctf_router_variant_requests_total", public="ab") == sent
        assert total(samples, "hpctf_router_variant_requests_total", public="ab", model="good") == \
            traffic.models["good"]
        assert total(samples, "hpctf_router_variant_errors_total", public="ab") == 0
        assert total(samples, "hpctf_router_variant_latency_seconds_count", public="ab") == sent
        per_replica = [v for (name, _), v in samples.items() if name == "hpctf_router_replica_requests_total"]
        assert len(per_replica) == 2 and sum(per_replica) >= sent and min(per_replica) > 0, per_replica

        with Traffic(service.endpoint, X, model="flaky", max_seconds=300) as traffic:
            started = service.hpc_tf("serve", "canary", "flaky", str(FAILS_HALF), "--steps", "10,50,100",
                                     "--step-time", "60s", "--max-error-rate", "1%", "--min-requests", "10")
            assert started.returncode == 0, started.stderr
            _wait(lambda: service.canary("flaky")["status"] != "running", "the canary's verdict", 120)
            decided_at = time.monotonic()
            answered = dict(traffic.versions)
            time.sleep(3)
        canary = service.canary("flaky")
        assert canary["status"] == "rolled-back" and canary["step"] == 0, canary  # at its first gate
        assert canary["reason"].startswith("error rate ") and "of version 2 at step 1 (10 %)" in canary["reason"]
        samples = service.metrics()
        failed_on_new = total(samples, "hpctf_router_variant_errors_total", public="flaky", version=str(FAILS_HALF))
        assert total(samples, "hpctf_router_variant_errors_total", public="flaky") == failed_on_new
        assert len(traffic.failures) == failed_on_new > 0, traffic.failures[:3]
        assert all(t <= decided_at for t in traffic.failed_at)
        assert traffic.versions["1"] - answered.get("1", 0) > 20 and traffic.versions["2"] == answered.get("2", 0)
        status = service.hpc_tf("serve", "status")
        assert f"canary flaky v1 -> v2: ROLLED BACK {canary['updated']}, v1 serves: {canary['reason']}" \
            in status.stdout, status.stdout
