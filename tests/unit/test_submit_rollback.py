"""A refused submission leaves nothing behind, whichever way in: launch, its hand-off, a campaign,
submit_function and the serving node.

sbatch is the real SlurmScheduler's argv, answered as Slurm 22.05's sbatch answers a job for an
account that does not exist (recorded on the test cluster); submitit calls sbatch itself, so for it
a stand-in sbatch on PATH prints the same answer. The quota preflight is not the subject here
(tests/integration/test_quota_slurm.py): these backends skip it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from hpc.backends import Backend, SlurmBackend
from hpc.campaign.load import load_campaign_text
from hpc.campaign.plan import plan_campaign
from hpc.campaign.submit import submit_campaign
from hpc.errors import HpcTfError
from hpc.functions import submit_function
from hpc.launch import plan_launch, submit_plan
from hpc.scheduler import SlurmCli, SlurmScheduler
from hpc.scheduler.run import CommandResult, RetryPolicy
from hpc.serving import secret as node_secret
from hpc.serving.slurm_node import plan_slurm_node, submit_slurm_node
from hpc.site.load import load_site

REFUSAL = "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n"


def refusing_runner(argv: Sequence[str], timeout: float) -> CommandResult:
    if argv[0] == "sbatch":
        return CommandResult(tuple(argv), 1, "", REFUSAL)
    return CommandResult(tuple(argv), 0, "", "")  # squeue/scancel: nothing to report


def refusing_slurm() -> SlurmScheduler:
    return SlurmScheduler(SlurmCli(refusing_runner, retry=RetryPolicy(attempts=1), sleep=lambda _: None))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("HPC_TF_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def leftovers(runs: Path) -> list[str]:
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else []


@pytest.mark.parametrize("handoff", [False, True], ids=["job", "with-handoff"])
def test_a_refused_launch_leaves_no_run_directory(home: Path, handoff: bool) -> None:
    spec = home / "job.yaml"
    spec.write_text("name: refused\ncommand: python train.py\nresources: {nodes: 1, gpus_per_node: 1}\n"
                    + ("handoff: {model: mlp}\n" if handoff else ""))
    with pytest.raises(HpcTfError, match="Invalid account"):
        submit_plan(plan_launch(spec, "sandbox"), Backend(refusing_slurm()))
    assert leftovers(home / "runs") == []


def test_a_refused_campaign_leaves_no_campaign_directory(home: Path) -> None:
    text = "name: sweep\njob: {command: [python3, t.py], resources: {nodes: 1, gpus_per_node: 1}}\n" \
           "parameters: {list: [{x: 1}, {x: 2}]}\n"
    (home / "campaign.yaml").write_text(text)
    env = {"HOME": str(home), "USER": "alice"}
    site = load_site("sandbox", [f"runs_dir={home / 'runs'}"], environ=env)
    plan = plan_campaign(load_campaign_text(text, home / "campaign.yaml"), site, "sweep-1", environ=env,
                         gpu_limit=4, max_array_size=1001)
    with pytest.raises(HpcTfError, match="Invalid account"):
        submit_campaign(plan, Backend(refusing_slurm()))
    assert leftovers(home / "runs") == []


def test_a_refused_function_job_leaves_no_run_directory(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SlurmBackend, "check_quota", lambda *_: None)  # see the module docstring
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\nprintf '%s' '{REFUSAL}' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(Exception, match="Invalid account"):
        submit_function(print, spec={"name": "fn", "resources": {"nodes": 1, "gpus_per_node": 1}}, site="sandbox",
                        executor="slurm")
    assert leftovers(home / "runs") == []


def test_a_refused_serving_node_leaves_no_script_and_no_secret(home: Path) -> None:
    plan = plan_slurm_node("sandbox", [], repository=home / "repo")
    with pytest.raises(HpcTfError, match="Invalid account"):
        submit_slurm_node(plan, Backend(refusing_slurm()))
    assert not plan.script_path.exists()
    assert not node_secret.key_file(plan.repository.root).exists()
