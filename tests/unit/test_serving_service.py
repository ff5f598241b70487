"""The router as part of the service, without a network: its window of each variant's traffic (what
``serve status`` shows), ``serve status`` and ``serve down`` with a registered router, and the router's
Slurm job as planned and rendered (its golden script is in test_render.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from hpc.serving.repository import Repository
from hpc.serving.router.core import Route, Router
from hpc.serving.router.pool import Pool, Replica
from hpc.serving.router.run import RouterEndpoint
from hpc.serving.secret import NodeSecret
from hpc.serving.state import Split, Variant


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)


def _router() -> Router:
    router = Router(NodeSecret("owner-key"))
    router.pool = Pool()
    router.pool.add(Replica("r1", "10.0.0.5", 8000, 8001, healthy=True, ready=frozenset({("mlp", "1"), ("mlp", "2")})))
    router.splits = {"mlp": Split((Variant("mlp", 1, 90), Variant("mlp", 2, 10)))}
    return router


def _send(router: Router, version: str, ok: bool) -> None:
    async def send(_: Replica) -> tuple[str, bool]:
        return "answer", ok

    asyncio.run(router.forward(Route("mlp", "mlp", version), send))


def test_the_router_counts_each_variant_s_requests_errors_and_latency_over_its_window() -> None:
    router = _router()
    for _ in range(30):
        _send(router, "1", ok=True)
    for ok in (True, True, False, True):
        _send(router, "2", ok=ok)
    traffic = {entry["version"]: entry for entry in router.state()["traffic"]}  # type: ignore[attr-defined]
    assert (traffic["1"]["requests"], traffic["1"]["errors"]) == (30, 0)
    assert (traffic["2"]["requests"], traffic["2"]["errors"], traffic["2"]["error_rate"]) == (4, 1, 0.25)
    assert traffic["1"]["public"] == "mlp" and traffic["1"]["rate"] == 30 / traffic["1"]["window_s"]
    assert 0 < traffic["1"]["p50_s"] <= traffic["1"]["p99_s"] <= 0.1  # in-process: well under 100 ms


def test_the_window_forgets_what_finished_before_it_and_its_rate_is_over_the_seconds_it_saw() -> None:
    from hpc.serving.router.window import TrafficWindow

    now = [1000.0]
    window = TrafficWindow(seconds=60, clock=lambda: now[0])
    for second in range(10):  # 10 requests a second for 10 s, one error a second
        now[0] = 1000.0 + second
        for i in range(10):
            window.record("pub", "m", "1", 0.004, ok=i != 0)
    (entry,) = window.summary()
    assert (entry["requests"], entry["errors"], entry["window_s"], entry["rate"]) == (100, 10, 10, 10.0)
    assert entry["p50_s"] == entry["p99_s"] == 0.005  # the bucket 4 ms falls in
    now[0] = 1064.0  # the window is 1005..1064 now: the first 5 seconds fell out
    (entry,) = window.summary()
    assert (entry["requests"], entry["window_s"]) == (50, 60)
    now[0] = 1200.0
    assert window.summary() == []


def _register_router(repo: Path, pid: int, job_id: str | None = None) -> None:
    (repo / ".hpc-tf").mkdir(parents=True, mode=0o700)
    endpoint = RouterEndpoint("127.0.0.1", 1, 2, pid, os.uname().nodename, str(repo), 0.0, job_id)
    path = repo / ".hpc-tf" / "router.json"
    path.write_text(json.dumps(endpoint.__dict__))
    path.chmod(0o600)


def test_serve_status_shows_the_split_each_variant_s_traffic_and_the_replicas(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from hpc.cli import app
    from hpc.serving.router import client

    router = _router()
    for version, count in (("1", 18), ("2", 2)):
        for _ in range(count):
            _send(router, version, ok=True)
    asked: list[Path] = []

    def state(repo: Repository) -> dict[str, object]:
        asked.append(repo.root)
        return router.state()

    def call(repo: Repository, method: str, path: str) -> dict[str, object]:
        assert (method, path) == ("GET", "/service")  # the replica controller's view, when the router has one
        return {"replicas": 2, "refused": None, "managed": [
            {"name": "r-1", "job_id": "81", "state": "serving", "scheduler_state": "RUNNING", "node": "cpu1",
             "time_left_s": 1190, "in_flight": 3},
            {"name": "r-2", "job_id": "82", "state": "coming", "scheduler_state": "PENDING", "node": "",
             "time_left_s": None, "in_flight": 0}]}

    monkeypatch.setattr(client, "state", state)  # control calls to the router; no replica is asked
    monkeypatch.setattr(client, "call", call)
    repo = tmp_path / "repo"
    _register_router(repo, os.getpid(), "77")
    result = CliRunner().invoke(app, ["serve", "status", "--repository", str(repo), "--site", "local"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert asked == [repo]
    assert f"router http://127.0.0.1:1 grpc 127.0.0.1:2 (job 77 on {os.uname().nodename}):" in lines
    assert "  split mlp: mlp:1 90%, mlp:2 10%" in lines
    traffic = [line for line in lines if line.startswith("  traffic mlp -> ")]
    assert traffic[0].startswith("  traffic mlp -> mlp:1: 18 requests in the last ") and "errors 0.0%" in traffic[0]
    assert traffic[1].startswith("  traffic mlp -> mlp:2: 2 requests in the last ") and "p99 <= " in traffic[1]
    assert "  replica r1 on 10.0.0.5: healthy, 0 in flight" in lines
    assert "  service: 2 replica(s) wanted" in lines
    assert "  replica r-1 (job 81 on cpu1): serving (RUNNING, 1190 s left), 3 in flight" in lines
    assert "  replica r-2 (job 82 on ?): coming (PENDING), 0 in flight" in lines


def test_serve_down_stops_a_router_whose_node_is_gone_and_says_so(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hpc.cli import app

    proc = subprocess.Popen(["true"])
    proc.wait()
    repo = tmp_path / "repo"
    _register_router(repo, proc.pid)
    result = CliRunner().invoke(app, ["serve", "down", "--repository", str(repo), "--site", "local"])
    assert result.exit_code == 0, result.output
    assert f"router stopped (pid {proc.pid})" in result.output
    assert not (repo / ".hpc-tf" / "router.json").exists()


SITE = """\
launcher: slurm
partitions:
  gpu: {gpus_per_node: 4, cpus_per_node: 8, max_time: "1-00:00:00"}
  cpu: {gpus_per_node: 0, cpus_per_node: 8, max_time: "2:00:00"}
default_partition: gpu
cpu_partition: cpu
runs_dir: runs
python: /usr/bin/python3
serving: {partition: cpu}
"""


def test_the_router_job_runs_the_router_on_the_serving_partition_within_its_limits(tmp_path: Path) -> None:
    from hpc.errors import SpecError
    from hpc.serving.router.service import plan_router_job
    from tests.unit.test_render import directives

    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    repo = Repository.at(tmp_path / "repo")
    with pytest.raises(SpecError, match=r"exceeds the time limit of partition 'cpu' \(2:00:00\)"):
        plan_router_job(str(site), [], repo, time_limit="3:00:00")
    plan = plan_router_job(str(site), [], repo, time_limit="1:00:00")
    found = directives(plan.script)
    assert (found["--partition"], found["--time"], found["--job-name"]) == ("cpu", "01:00:00", "hpc-tf-router")
    assert found["--mem"] == "1000M" and "--exclusive" not in found  # no secret on its command line
    assert found["--output"] == f"{repo.root}/.hpc-tf/server/router-slurm-%j.out"
    assert f"exec /usr/bin/python3 -m hpc.cli serve router-node --repository {repo.root} --site {site}\n" in plan.script
    assert plan.script_path == repo.root / ".hpc-tf" / "server" / "router.sbatch"
    assert not repo.root.exists()  # planned, nothing written




def test_serve_down_stops_the_replicas_but_keeps_their_recorded_count(tmp_path: Path) -> None:
    """``serve down`` asks the router for 0 replicas without recording it, so ``serve up --router`` starts
    the count the owner set with ``serve scale`` again; ``serve scale`` itself records."""
    from hpc.serving.router.launchers import LocalLauncher
    from hpc.serving.router.replicas import ReplicaController
    from hpc.serving.state import ServingState, update_state

    repo = Repository.at(tmp_path / "repo")
    update_state(repo, lambda state: state.with_service(2))
    controller = ReplicaController(Router(NodeSecret("k"), repo), repo, LocalLauncher(repo))
    assert controller.wanted == 2
    controller.scale(0, record=False)
    assert controller.wanted == 0
    assert ServingState.read(repo).service is not None and ServingState.read(repo).service.replicas == 2
    controller.scale(3)
    assert ServingState.read(repo).service is not None and ServingState.read(repo).service.replicas == 3
