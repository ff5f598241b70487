"""The recorded quota scenes of tests/fixtures/quota/slurm-<version>/ (see the 22.05 README), replayed,
and jobs to check against them.

Both versions were recorded by tests/integration/test_quota_slurm.py on the test cluster, each on its
own Slurm. 25.11 has no ``wait-qos``/``wait-account`` replays yet: when it was recorded, that test
explained the wait only through the hpc-tf command, whose calls are not recorded; it now also does so
in process. Record them with the 25.11 cluster up (as root)::

    HPC_TF_RECORD_QUOTA_FIXTURES=tests/fixtures/quota/slurm-25.11 pytest -m slurm \
        tests/integration/test_quota_slurm.py -k must_wait

:func:`recorded_in` says which versions hold a scene; a test parametrized with it picks up a version
as soon as its recording exists.
"""

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

SCENES = Path(__file__).parents[1] / "fixtures" / "quota"
VERSIONS = ("22.05", "25.11")
QUOTA = SCENES / "slurm-22.05"
USER = "researcher"


def scene(scenario: str, version: str = "22.05") -> Path:
    return SCENES / f"slurm-{version}" / scenario


def recorded_in(scenario: str) -> list[str]:
    """The Slurm versions with a replay of ``scenario`` (its commands' answers, not only its roles)."""
    return [v for v in VERSIONS if any(scene(scenario, v).glob("*.rec"))]


def replay(scenario: str, version: str = "22.05") -> ReplayRunner:
    return ReplayRunner(load_recording(path).result for path in sorted(scene(scenario, version).glob("*.rec")))


def cli(runner: ReplayRunner, timeout_s: float = 5.0) -> SlurmCli:
    return SlurmCli(runner, timeout_s=timeout_s, retry=RetryPolicy(attempts=1))


def roles(scenario: str, version: str = "22.05") -> dict[str, object]:
    loaded: dict[str, object] = json.loads((scene(scenario, version) / "scenario.json").read_text())
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
