"""What ``campaign status --watch`` reads besides the scheduler's answer: the running units and where
each one's metrics file is (hpc.campaign.status), and a campaign that already ended (no Slurm tool runs).
Watching a running campaign, on a pty and in a pipe: tests/integration/test_watch_slurm.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hpc.campaign.manifest import Manifest
from hpc.campaign.paths import CampaignPaths
from hpc.campaign.status import view
from hpc.cli import campaign_watch
from hpc.scheduler import SlurmCli, SlurmScheduler, commands
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import CommandResult, RetryPolicy
from tests.unit.test_cli_output import piped
from tests.unit.test_scheduler_status import OUTAGE, failing


def manifest(root: Path, *states: str) -> dict[str, Any]:
    """A one-stage sweep of ``len(states)`` tasks, task i in ``states[i]``, plus a single-job stage."""
    stages = [{"name": "main", "per_task": True, "partition": "cpu", "nodes": 1, "gpus": 0, "throttle": None,
               "after": [], "run_dir": str(root / "stages" / "main")},
              {"name": "report", "per_task": False, "partition": "cpu", "nodes": 1, "gpus": 0, "throttle": None,
               "after": [["main", "afterany"]], "run_dir": str(root / "stages" / "report"),
               "job": {"output_dir": str(root / "stages" / "report" / "output"), "attempts": [
                   {"job_id": "9", "submission": "9", "raw_id": "9", "state": "RUNNING"}]}}]
    tasks = [{"id": i, "key": f"k{i}", "params": {"lr": 0.1 * (i + 1)}, "dir": str(root / "tasks" / str(i)),
              "stages": {"main": {"output_dir": str(root / "tasks" / str(i) / "main"), "attempts": [
                  {"job_id": f"5_{i}", "submission": "5", "raw_id": str(6 + i), "state": state}]}}}
             for i, state in enumerate(states)]
    return {"id": "sweep-1", "name": "sweep", "root": str(root), "source": "c.yaml", "site": "sandbox",
            "created_at": "2026-11-24T00:00:00+00:00", "max_array_size": 1001, "chunk_size": 1001,
            "stages": stages, "tasks": tasks}


def test_the_view_lists_running_units_with_their_own_metrics_files(tmp_path: Path) -> None:
    data = manifest(tmp_path, "RUNNING", "COMPLETED", "PENDING")
    seen = view(Manifest.model_validate(data), queried=False)
    assert [(u.stage, u.task_id, u.params) for u in seen.running] == [("main", 0, {"lr": 0.1}), ("report", None, {})]
    by_unit = {(u.stage, u.task_id): u.metrics_file for u in seen.running}
    assert by_unit[("main", 0)] == str(tmp_path / "tasks" / "0" / "main" / "metrics.jsonl")  # the task's own
    assert by_unit[("report", None)] == str(tmp_path / "stages" / "report" / "metrics.jsonl")  # its run directory's
    assert seen.as_dict()["running"][0]["metrics_file"] == by_unit[("main", 0)]


def test_watching_a_campaign_that_ended_prints_its_counts_and_status_and_asks_no_one(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "sweep-1"
    (root / "stages" / "main").mkdir(parents=True)
    data = manifest(root, "COMPLETED", "COMPLETED")
    data["stages"] = data["stages"][:1]
    (root / "manifest.json").write_text(json.dumps(data))
    result = piped("campaign", "status", "sweep-1", "--watch", "--site", "sandbox", "--set",
                   f"runs_dir={tmp_path / 'runs'}", home=tmp_path, env={"PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "main: 2 COMPLETED" and lines[1].startswith("campaign sweep-1 (2 task(s))"), lines


def test_a_controller_that_does_not_answer_is_said_and_asked_again_until_the_campaign_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Recorded answers: slurmdbd and slurmctld down (tests/fixtures/scheduler/slurm-22.05/errors), then
    accounting again, with job 90 completed (…/outage/sacct.rec)."""
    root = tmp_path / "sweep-1"
    data = manifest(root)
    data["stages"] = data["stages"][1:]  # the single job only: 90, recorded as running before the outage
    data["stages"][0]["after"] = []
    data["stages"][0]["job"]["attempts"][0].update(job_id="90", submission="90", raw_id="90")
    (root / "stages" / "report").mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(data))
    recorded = load_recording(OUTAGE / "sacct.rec").result
    completed = "".join(line + "\n" for line in recorded.stdout.splitlines() if line.startswith("90|"))
    runner = ReplayRunner([failing(commands.sacct(["90"]), "slurmdbd-down/sacct.rec"),
                           CommandResult(tuple(commands.sacct(["90"])), 0, completed, ""),
                           failing(commands.squeue(["90"]), "controller-down/squeue.rec")])
    slept: list[float] = []
    monkeypatch.setattr(campaign_watch.time, "sleep", slept.append)

    scheduler = SlurmScheduler(SlurmCli(runner, retry=RetryPolicy(attempts=1)))
    campaign_watch.watch_campaign(CampaignPaths.at(root), scheduler, refresh=False, as_json=False)
    printed = capsys.readouterr()
    assert [argv[0] for argv in runner.calls] == ["sacct", "squeue", "sacct"]  # one query per refresh
    (said,) = [line for line in printed.err.splitlines() if "did not answer" in line]
    assert said.startswith("Slurm did not answer (") and said.endswith("; asking again in 3 s"), said
    assert slept == [3.0]  # backing off (2 s, then x1.5), not hammering the controller
    assert printed.out.splitlines()[0] == "report: 1 COMPLETED", printed.out
