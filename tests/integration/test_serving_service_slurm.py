"""The service on the test cluster, as the cluster user, through ``hpc-tf``: ``serve up --router`` runs the
serving node and the router as Slurm jobs on the serving (CPU) partition. After ``serve down`` and
``serve up --router`` the models handed off before answer through the router job with no new hand-off and
the split set before is in force (measured over 2,400 HTTP and gRPC requests); the same after the router
job is SIGKILLed (``scancel --signal=KILL``) and started again; ``serve status`` shows the split and
per-variant counts equal to what the clients got."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration.test_handoff_slurm import Run, hpc_tf, project
from tests.integration.test_serving_service_local import check_split, measure

if TYPE_CHECKING:
    from tests.conftest import JobStatus, SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.triton, pytest.mark.tf, pytest.mark.service]
__all__ = ["project"]  # the fixture, shared with test_handoff_slurm


@pytest.fixture
def service(researcher_run: Run, project: Path) -> Iterator[Callable[[], dict[str, Any]]]:
    """``up()``: ``serve up --router --json``; every job it started is cancelled after the test."""
    jobs: list[str] = []

    def up() -> dict[str, Any]:
        started = hpc_tf(researcher_run, project, "serve", "up", "--router", "--json", "--time", "20:00",
                         check=False, timeout=600)
        assert started.returncode == 0, started.stderr
        answer: dict[str, Any] = json.loads(started.stdout)
        jobs.extend([answer["job_id"], answer["router"]["job_id"]])
        return answer

    try:
        yield up
    finally:
        hpc_tf(researcher_run, project, "serve", "down", check=False, timeout=180)
        for job in jobs:
            subprocess.run(["scancel", job], check=False, timeout=30)


def test_the_service_as_slurm_jobs_restarted_serves_what_was_handed_off_by_the_split_set_before(
    researcher_run: Run, project: Path, service: Callable[[], dict[str, Any]], slurm_cluster: SlurmCluster,
    wait_for_job: Callable[..., JobStatus],
) -> None:
    from tests.unit._serving_models import export_mlp

    repo = project.parent / "models"
    first = service()
    router = first["router"]
    assert router["hostname"] in slurm_cluster.cpu_nodes and not router["host"].startswith("127.")
    assert (repo / ".hpc-tf" / "router.json").stat().st_mode & 0o777 == 0o600
    for model, seed in (("a", 1), ("b", 2)):
        exported = export_mlp(project.parent / "exported" / model, seed=seed)
        subprocess.run(["chown", "-R", slurm_cluster.user, str(exported)], check=True)
        done = hpc_tf(researcher_run, project, "handoff", str(exported), "--model", model, "--format", "python",
                      check=False, timeout=300)
        assert done.returncode == 0, done.stderr
    split = hpc_tf(researcher_run, project, "serve", "split", "ab", "a=20", "b=80", check=False)
    assert split.returncode == 0, split.stderr
    handed_off = len(list((repo / ".hpc-tf" / "handoffs").glob("*/*.json")))

    down = hpc_tf(researcher_run, project, "serve", "down", check=False, timeout=180)
    assert down.returncode == 0, down.stderr
    assert f"router stopped (Slurm job {router['job_id']} cancelled)" in down.stderr, down.stderr
    assert wait_for_job(router["job_id"]).state == "CANCELLED" and wait_for_job(first["job_id"]).state == "CANCELLED"

    again = service()
    traffic = measure(again["router"])
    check_split(traffic, 0.20)
    assert len(list((repo / ".hpc-tf" / "handoffs").glob("*/*.json"))) == handed_off  # no new hand-off

    status = hpc_tf(researcher_run, project, "serve", "status", check=False)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert f"router {again['router']['http_url']} grpc {again['router']['grpc_url']} (job " \
           f"{again['router']['job_id']} on {again['router']['hostname']}):" in lines, status.stdout
    assert "  split ab: a:served 20%, b:served 80%" in lines, status.stdout
    for model in ("a", "b"):
        (line,) = [line for line in lines if line.startswith(f"  traffic ab -> {model}:-: ")]
        found = re.search(r": (\d+) requests in the last \d+ s \([\d.]+/s\), errors 0\.0%, p50 <= ", line)
        assert found is not None and int(found[1]) == traffic.models[model], (line, traffic.models)

    # the router job SIGKILLed (it cannot unregister); started again, next to the node that kept running
    killed = again["router"]["job_id"]
    subprocess.run(["scancel", "--full", "--signal=KILL", killed], check=True, timeout=30)
    assert wait_for_job(killed).finished
    restarted = service()
    assert restarted["job_id"] == again["job_id"] and restarted["router"]["job_id"] != killed
    check_split(measure(restarted["router"]), 0.20)
    assert len(list((repo / ".hpc-tf" / "handoffs").glob("*/*.json"))) == handed_off
