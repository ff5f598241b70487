"""Issue 22 on the test cluster: the router's replicas as Slurm jobs (sandbox site, serving partition),
under continuous HTTP and gRPC traffic from this host through the router: 1 -> 3 -> 1 replicas with no
failed request; a replica job near its time limit replaced (and cancelled, not timed out) with no failed
request; a replica job killed with ``scancel --signal=KILL``: failures at most the requests in flight on
it, none after the router's stated bound, and a replacement takes traffic.

The router runs as ``researcher`` on this host (reachable from the nodes on the cluster's bridge); the
repository's node (``hpc-tf serve up``) holds the owner's secret and takes the hand-off of ``mlp``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from tests.conftest import as_user_argv
from tests.integration._traffic import Traffic
from tests.integration.test_handoff_slurm import PYTHON, Run, hpc_tf, project, running_node
from tests.integration.test_router_lock_slurm import BRIDGE
from tests.integration.test_router_triton import BOUND_S

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.triton, pytest.mark.tf]
__all__ = ["project"]  # the fixture, shared with test_handoff_slurm

X = np.random.default_rng(3).normal(size=(2, 16)).astype("float32")
PARTITION = ["--set", "serving.partition=gpu"]  # room for the node and 3 replicas (cpu1 holds two)
REPLICA_TIME = "6:00"
MARGIN_S = 200  # replaced at about 160 s of its 360: its replacement starts well before the end


def _service(researcher_run: Run, project: Path, repo: Path) -> dict[str, Any]:
    """The router's replica state, as the owner reads it (the owner's key is in researcher's config)."""
    done = researcher_run([PYTHON, "-c", "import json, sys; from pathlib import Path; "
                           "from hpc.serving.repository import Repository; from hpc.serving.router import client; "
                           "print(json.dumps(client.service(Repository.at(Path(sys.argv[1])))))", str(repo)],
                          cwd=project)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _wait(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


def test_slurm_replicas_scale_get_replaced_near_their_limit_and_after_a_kill(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, scratch_dir: Path,
) -> None:
    from tests.unit._serving_models import export_mlp

    exported = export_mlp(project.parent / "exported" / "v1", seed=1)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    repo = project.parent / "models"
    log = scratch_dir / "router.log"
    site = ["--site", "sandbox", "--set", f"python={PYTHON}", "--set", f"runs_dir={project / 'runs'}",
            "--set", f"serving.model_repository={repo}", *PARTITION]

    def managed() -> list[dict[str, Any]]:
        return list(_service(researcher_run, project, repo)["managed"])

    def settled(count: int) -> bool:
        now = managed()
        return len(now) == count and all(m["state"] == "serving" for m in now)

    def scale(count: int) -> None:
        done = researcher_run(["hpc-tf", "serve", "scale", "--replicas", str(count), *site], cwd=project,
                              check=False)
        assert done.returncode == 0 and done.stdout.startswith(f"replicas: {count} wanted"), done.stderr

    with running_node(researcher_run, project, *PARTITION):
        done = hpc_tf(researcher_run, project, "handoff", str(exported), "--model", "mlp", "--format", "python",
                      check=False, timeout=300)
        assert done.returncode == 0, done.stderr
        router = subprocess.Popen(
            as_user_argv(slurm_cluster.user, ["hpc-tf", "serve", "router", "--host", BRIDGE, "--replicas", "1",
                                              "--replica-time", REPLICA_TIME, "--replace-margin", str(MARGIN_S),
                                              *site]),
            cwd=project, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
        try:
            assert router.stdout is not None
            assert router.stdout.readline().startswith("router ready"), log.read_text()
            endpoint = json.loads((repo / ".hpc-tf" / "router.json").read_text())
            _wait(lambda: settled(1), "the first replica", 300)
            [first] = managed()
            assert first["job_id"] and first["node"], first

            # 1 -> 3 -> 1 under traffic
            with Traffic(endpoint, X, model="mlp", max_requests=10**6, max_seconds=900, clients=2) as traffic:
                scale(3)
                _wait(lambda: settled(3), "three replicas", 400)
                jobs = [m["job_id"] for m in managed()]
                scale(1)
                _wait(lambda: settled(1), "one replica again", 120)
                answered = sum(traffic.models.values())
                time.sleep(2)
            assert traffic.failures == [], traffic.failures[:3]
            assert sum(traffic.models.values()) > answered + 20
            [kept] = managed()
            gone = [j for j in jobs if j != kept["job_id"]]
            live = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING", "-j", ",".join(gone)], capture_output=True,
                                  text=True, check=False)
            assert len(gone) == 2 and not live.stdout.strip(), live.stdout

            # the replica near its time limit gets a replacement first, then drains and is cancelled
            with Traffic(endpoint, X, model="mlp", max_requests=10**6, max_seconds=900, clients=2) as traffic:
                _wait(lambda: kept["name"] not in [m["name"] for m in managed()] and settled(1),
                      "the replacement of the replica near its limit", 420)
                answered = sum(traffic.models.values())
                time.sleep(2)
            assert traffic.failures == [], traffic.failures[:3]
            assert sum(traffic.models.values()) > answered + 20
            text = log.read_text()
            assert f"{kept['name']} has " in text and f"drain {kept['name']}" in text, text[-3000:]
            ended = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", kept["job_id"]],
                                   capture_output=True, text=True, check=False).stdout
            assert ended.startswith("CANCELLED"), ended  # stopped by the router, not by its time limit

            # scancel --signal=KILL: at most the in-flight requests on it fail, none after the bound
            scale(2)
            _wait(lambda: settled(2), "two replicas", 400)
            doomed = managed()[-1]
            with Traffic(endpoint, X, model="mlp", max_requests=10**6, max_seconds=900, clients=2) as traffic:
                time.sleep(3)
                killed_at = time.monotonic()
                subprocess.run(["scancel", "--signal=KILL", "--full", doomed["job_id"]], check=True)
                _wait(lambda: doomed["name"] not in [m["name"] for m in managed()], "the killed replica's removal",
                      120)
                _wait(lambda: settled(2), "its replacement", 400)
                answered = sum(traffic.models.values())
                time.sleep(2)
            assert len(traffic.failures) <= len(traffic.threads), traffic.failures
            assert all(t <= killed_at + BOUND_S for t in traffic.failed_at), traffic.failures
            assert sum(traffic.models.values()) > answered + 20
            assert f"{doomed['name']} ended unexpectedly" in log.read_text()
        finally:
            researcher_run(["hpc-tf", "serve", "scale", "--replicas", "0", *site], cwd=project, check=False,
                           timeout=120)
            _wait(lambda: router.poll() is not None or not managed(), "the replicas to stop", 120)
            router.terminate()
            router.wait(30)
