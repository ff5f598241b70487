"""The recorded quota scenes of tests/fixtures/quota/slurm-22.05 (see its README), replayed, and jobs
to check against them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hpc.launch import plan_launch
from hpc.quota import QuotaVerdict
from hpc.resolve import ResolvedJob
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import RetryPolicy, SlurmCli

QUOTA = Path(__file__).parents[1] / "fixtures" / "quota" / "slurm-22.05"
USER = "researcher"


def replay(scenario: str) -> ReplayRunner:
    return ReplayRunner(load_recording(path).result for path in sorted((QUOTA / scenario).glob("*.rec")))


def cli(runner: ReplayRunner, timeout_s: float = 5.0) -> SlurmCli:
    return SlurmCli(runner, timeout_s=timeout_s, retry=RetryPolicy(attempts=1))


def roles(scenario: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((QUOTA / scenario / "scenario.json").read_text())
    return loaded


MakeJob = Callable[..., ResolvedJob]


@pytest.fixture
def make_job(tmp_path: Path) -> MakeJob:
    def make(gpus_per_node: int, nodes: int = 1, qos: str | None = None, time_limit: str = "5:00",
             account: str | None = "quota-test-a") -> ResolvedJob:
        items = [f"nodes: {nodes}", f"gpus_per_node: {gpus_per_node}", "partition: gpu", f"time: '{time_limit}'"]
        items += [f"account: {account}"] if account else []
        items += [f"qos: {qos}"] if qos else []
        spec = tmp_path / "job.yaml"
        spec.write_text(f"name: q\ncommand: [sleep, '600']\nresources: {{{', '.join(items)}}}\n")
        env = {"HOME": str(tmp_path), "USER": USER}
        return plan_launch(spec, "sandbox", [f"runs_dir={tmp_path / 'runs'}"], environ=env).job

    return make


def tools(verdict: QuotaVerdict) -> list[str]:
    return [argv[0] for argv in verdict.calls]
