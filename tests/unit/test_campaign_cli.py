"""``hpc-tf campaign``: a dry run plans with what the real run reads from Slurm (MaxArraySize, the GPU quota)
and writes nothing; errors become exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc.cli import app

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("HPC_TF_RUNS_DIR", str(tmp_path / "runs"))


def test_the_quickstart_campaign_dry_run_shows_the_tasks_and_the_throttle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cluster's MaxArraySize is read as the real run reads it: here from a recorded scontrol
    shims = tmp_path / "bin"
    shims.mkdir()
    recorded = REPO / "tests" / "fixtures" / "slurm-22.05" / "scontrol" / "show-config-cgroup.txt"
    (shims / "scontrol").write_text(f"#!/bin/sh\nexec cat {recorded}\n")
    (shims / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:/usr/bin:/bin")
    campaign = REPO / "examples" / "quickstart" / "campaign.yaml"
    result = CliRunner().invoke(app, ["campaign", "run", str(campaign), "--site", "sandbox", "--dry-run",
                                      "--gpu-limit", "4"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == 'task 0 main: ["python3", "train.py", "--epochs", "1", "--batch-size", "64"]'
    assert lines[2] == 'task 2 main: ["python3", "train.py", "--epochs", "1", "--batch-size", "256"]'
    err = " ".join(result.stderr.split())
    assert "12 task(s)" in err and "4 at once (GPU quota 4, 1 GPU(s) per task)" in err
    assert "(MaxArraySize 1001)" in err
    assert "nothing written or submitted" in err
    assert not (tmp_path / "runs").exists()


def test_a_dry_run_where_slurm_cannot_be_asked_still_plans_and_says_what_it_assumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a laptop: no Slurm command on PATH. The real run needs Slurm; the dry run plans without its reads.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    campaign = REPO / "examples" / "quickstart" / "campaign.yaml"
    dry = CliRunner().invoke(app, ["campaign", "run", str(campaign), "--site", "sandbox", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    said = " ".join(dry.stderr.split())
    assert said.startswith("warning: Slurm did not answer (scontrol was not found: is Slurm installed and on PATH?)")
    assert "assumed Slurm's default MaxArraySize and knows no GPU quota; the real run reads both" in said
    assert "12 task(s)" in said and "nothing written or submitted" in said
    real = CliRunner().invoke(app, ["campaign", "run", str(campaign), "--site", "sandbox"])
    assert real.exit_code != 0 and "scontrol was not found" in str(real.exception)  # main() prints it as one line
    assert not (tmp_path / "runs").exists()


def test_resubmit_needs_to_be_told_what(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hpc.cli", "campaign", "resubmit", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "hpc-tf campaign resubmit DIR --failed" in result.stderr


def test_an_unknown_campaign_is_an_error_that_says_where_campaigns_live(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "hpc.cli", "campaign", "status", "nope", "--site", "sandbox"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "'nope' is not a campaign directory, id or name" in result.stderr


def test_a_broken_campaign_is_exit_code_2_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: c\njob: {command: [x]}\nparameters:\n  grid: {lr: [1]}\nargs: ['--lr={lrr}']\n")
    result = subprocess.run([sys.executable, "-m", "hpc.cli", "campaign", "run", str(path), "--site", "sandbox",
                             "--dry-run"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert f"{path}:5: args: '{{lrr}}' is not a parameter" in result.stderr


def test_status_json_of_a_campaign_whose_tasks_all_finished_asks_nothing(tmp_path: Path) -> None:
    """Finished units are cached in the manifest: no Slurm tool is run (none is installed in this test's PATH)."""
    root = tmp_path / "runs" / "done-1"
    root.mkdir(parents=True)
    manifest = {
        "id": "done-1", "name": "done", "root": str(root), "source": "c.yaml", "site": "sandbox",
        "created_at": "2026-11-24T00:00:00+00:00", "max_array_size": 1001, "chunk_size": 1001,
        "stages": [{"name": "main", "per_task": True, "partition": "cpu", "nodes": 1, "gpus": 0, "throttle": None,
                    "after": [], "run_dir": str(root / "stages" / "main")}],
        "tasks": [{"id": 0, "key": "k", "params": {"a": 1}, "dir": str(root / "tasks" / "0"),
                   "stages": {"main": {"output_dir": "o", "attempts": [
                       {"job_id": "5_0", "submission": "5", "state": "COMPLETED", "exit_code": 0}]}}}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run([sys.executable, "-m", "hpc.cli", "campaign", "status", "done", "--json", "--site",
                             "sandbox", "--set", f"runs_dir={tmp_path / 'runs'}"],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={"PATH": "/nonexistent", "HOME": str(tmp_path), "USER": "alice"})
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["counts"] == {"main": {"COMPLETED": 1}} and view["finished"] is True
