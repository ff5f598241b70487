"""``hpc-tf campaign results`` and ``hpc-tf metrics`` on a campaign directory built the way ``campaign run``
builds it (the quickstart's 3 x 4 grid), with each task's metrics.jsonl as the runtime writes it: one row per
task whatever its state, ranked, the best named; CSV and JSON for scripts. No cluster: every task has ended or
the states are fresh, so no scheduler is asked."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc.campaign import api
from hpc.campaign.manifest import Attempt, read_manifest, write_manifest
from hpc.campaign.paths import CampaignPaths
from hpc.campaign.results import CampaignResults, TaskResult, results
from hpc.campaign.submit import write_campaign_dir
from hpc.cli import app
from hpc.paths import RunPaths
from hpc.rundir import record_submission
from tests._readme import readme_argv
from tests.unit.test_metrics_read import T0, append, row

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart" / "campaign.yaml"


@pytest.fixture(autouse=True)
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("HPC_TF_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm"))  # any scheduler query would fail the test


def loss_of(epochs: int, batch_size: int, epoch: int) -> float:
    """A made-up but distinct loss per grid point: lower with more epochs and smaller batches."""
    return round(1.0 / (epoch + 1) + batch_size / 10_000 + (3 - epochs) / 100, 6)


def quickstart_campaign(tmp_path: Path, *, running: bool = False) -> CampaignPaths:
    """The quickstart grid submitted as array 500: tasks 0-8 completed (and logged every epoch), 9 failed
    after its first epoch, 10 running (one epoch logged) or pending, 11 pending (nothing logged)."""
    plan = api.plan_from_file(QUICKSTART, "sandbox", [f"runs_dir={tmp_path / 'runs'}"], gpu_limit=4)
    paths = write_campaign_dir(plan)
    manifest = read_manifest(paths)
    states = ["COMPLETED"] * 9 + ["FAILED", "RUNNING" if running else "PENDING", "PENDING"]
    for task, state in zip(manifest.tasks, states, strict=True):
        unit = task.stages["main"]
        unit.attempts.append(Attempt(job_id=f"500_{task.id}", submission="500", state=state,
                                     raw_id=str(500 + task.id), exit_code=1 if state == "FAILED" else None))
        epochs, batch_size = int(str(task.params["epochs"])), int(str(task.params["batch_size"]))
        logged = {"COMPLETED": epochs, "FAILED": 1, "RUNNING": 1}.get(state, 0)
        if logged:
            Path(unit.output_dir).mkdir(parents=True)
        for epoch in range(logged):
            append(paths.task_metrics(task.id, "main"),
                   row(epoch, {"loss": loss_of(epochs, batch_size, epoch)}, epochs=epochs))
    manifest.poll.last_at, manifest.poll.interval_s = time.time(), 3600.0  # states are fresh: no query
    write_manifest(paths, manifest)
    return paths


def test_every_task_has_a_row_ranked_by_its_best_loss_and_the_best_is_named(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path, running=True)
    found = results(read_manifest(paths), paths)
    assert (found.metric, found.mode, found.stage) == ("loss", "min", "main")  # no val_loss logged: loss
    assert len(found.tasks) == 12
    # the completed tasks ranked by their best loss; then the failed and the running one, then the pending one
    assert [t.task_id for t in found.tasks] == [8, 4, 5, 6, 7, 0, 1, 2, 3, 9, 10, 11]
    ranked = found.tasks[:9]
    assert [t.best for t in ranked] == sorted(t.best for t in ranked if t.best is not None)
    best = found.best
    assert best is not None and best.params == {"epochs": 3, "batch_size": 64} and best.state == "COMPLETED"
    assert (best.best, best.best_epoch, best.epochs, best.epochs_planned) == (loss_of(3, 64, 2), 2, 3, 3)
    by_id = {t.task_id: t for t in found.tasks}
    assert by_id[9].state == "FAILED" and by_id[9].epochs == 1 and by_id[9].final == loss_of(3, 128, 0)
    assert by_id[10].state == "RUNNING" and by_id[10].epochs == 1
    assert by_id[11].state == "PENDING" and by_id[11].best is None and by_id[11].note == "no metrics logged"
    assert found.tasks[-1] is by_id[11]  # what has no value yet comes last, never dropped


def test_the_readme_results_command_prints_the_table_and_names_the_best(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    result = CliRunner().invoke(app, readme_argv("hpc-tf campaign results DIR", DIR=str(paths.root))[1:])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["task", "epochs", "batch_size", "state", "final", "loss", "best", "(min)", "at",
                                "epoch", "epochs", "time", "GPU-h", "note"]
    assert lines[1].split()[:4] == ["8", "3", "64", "COMPLETED"]  # the best first
    assert lines[-1].split() == ["11", "3", "512", "PENDING", "-", "-", "-", "0", "-", "-", "no", "metrics", "logged"]
    warning, best = result.stderr.strip().splitlines()
    # no Slurm here: the ranking stands, the GPU-hours are missing and said so
    assert warning == "warning: GPU-hours not read: sacct was not found: is Slurm installed and on PATH?"
    assert " ".join(best.split()) == f"best: task 8 (epochs=3 batch_size=64): loss {loss_of(3, 64, 2):.6g} at epoch 3"


def test_csv_has_one_line_per_task_with_its_parameters_as_columns(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    argv = readme_argv("hpc-tf campaign results DIR --metric loss --mode min --csv", DIR=str(paths.root))
    result = CliRunner().invoke(app, argv[1:])
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["task"] for r in table][:2] == ["8", "4"] and len(table) == 12
    assert table[0] == {"task": "8", "epochs": "3", "batch_size": "64", "state": "COMPLETED",
                        "final_loss": str(loss_of(3, 64, 2)), "best_loss": str(loss_of(3, 64, 2)), "best_epoch": "2",
                        "epochs_done": "3", "epochs_planned": "3", "wall_s": "30.0", "job_id": "500_8",
                        "gpu_hours": ""}  # no Slurm to ask here: tests/unit/test_usage.py has them
    assert {r["task"]: r["state"] for r in table}["9"] == "FAILED"


def test_json_and_a_metric_to_maximise(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    for task in read_manifest(paths).tasks[:3]:  # three tasks also logged an accuracy
        append(paths.task_metrics(task.id, "main"), row(5, {"acc": 0.5 + task.id / 10}, attempt=1))
    result = CliRunner().invoke(app, ["campaign", "results", str(paths.root), "--metric", "acc", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["metric"], document["mode"]) == ("acc", "max")
    assert [t["task_id"] for t in document["tasks"]][:3] == [2, 1, 0] and document["best"]["task_id"] == 2
    assert document["tasks"][3]["note"] == "acc not logged" and len(document["tasks"]) == 12


def test_bad_options_are_one_line_each(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    runner = CliRunner()
    mode = runner.invoke(app, ["campaign", "results", str(paths.root), "--mode", "up"])
    assert mode.exit_code == 1 and str(mode.exception) == "--mode 'up': choose min or max"
    stage = runner.invoke(app, ["campaign", "results", str(paths.root), "--stage", "train"])
    assert "has no per-task stage 'train'" in str(stage.exception) and "its per-task stages: main" in str(
        stage.exception)


def test_the_readme_metrics_command_shows_one_tasks_epochs(tmp_path: Path) -> None:
    paths = quickstart_campaign(tmp_path)
    argv = readme_argv("hpc-tf metrics RUN_DIR", RUN_DIR=str(paths.task_output(8, "main")))
    result = CliRunner().invoke(app, argv[1:])
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines == [["epoch", "loss", "time"], ["1/3", f"{loss_of(3, 64, 0):.6g}", "-"],
                     ["2/3", f"{loss_of(3, 64, 1):.6g}", "10.0s"], ["3/3", f"{loss_of(3, 64, 2):.6g}", "10.0s"]]
    assert " ".join(result.stderr.split()) == "3 epoch(s) of 3; training time 00:00:30"
    paths.task_output(11, "main").mkdir()  # the task started, and has not finished an epoch yet
    missing = CliRunner().invoke(app, ["metrics", str(paths.task_output(11, "main"))])
    assert missing.exit_code == 1 and "no metrics recorded at" in str(missing.exception)


def test_metrics_of_a_job_id_finds_its_run_and_shows_a_requeue_once_per_epoch(tmp_path: Path) -> None:
    run = RunPaths.at(tmp_path / "runs" / "resnet-20261205-101500-ab12")
    run.root.mkdir(parents=True)
    record_submission(run, "4711", None)
    # preempted after epoch 2, resumed from the checkpoint of epoch 1
    append(run.metrics, *(row(e, {"loss": 1.0 - e / 10, "lr": 0.01}) for e in range(3)),
           row(2, {"loss": 0.75, "lr": 0.005}, attempt=1, time=T0 + 500), row(3, {"loss": 0.6, "lr": 0.005},
                                                                             attempt=1, time=T0 + 510))
    result = CliRunner().invoke(app, ["metrics", "4711"])
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["epoch", "loss", "lr", "time", "attempt"],
        ["1/5", "1", "0.01", "-", "0"], ["2/5", "0.9", "0.01", "10.0s", "0"],
        ["3/5", "0.75", "0.005", "-", "1"], ["4/5", "0.6", "0.005", "10.0s", "1"]]
    said = " ".join(result.stderr.split())
    assert said == "4 epoch(s) of 5; training time 00:00:50; 2 attempts (requeued; epochs trained again are shown once)"
    as_json = json.loads(CliRunner().invoke(app, ["metrics", "4711", "--json"]).stdout)
    assert [r["epoch"] for r in as_json["rows"]] == [0, 1, 2, 3] and as_json["attempts"] == 2
    unknown = CliRunner().invoke(app, ["metrics", "999"])
    assert unknown.exit_code == 1 and "job 999 has no hpc-tf run directory under" in str(unknown.exception)


def test_a_parameter_named_like_a_result_column_keeps_its_own_csv_column() -> None:
    task = TaskResult(task_id=0, params={"state": "warm", "lr": 0.1}, state="COMPLETED", job_id="7_0", final=0.5,
                      best=0.4, best_epoch=1, epochs=2, epochs_planned=2, wall_s=None, metrics_file="m")
    found = CampaignResults(id="c", root="/c", stage="main", metric="loss", mode="min", tasks=[task])
    (parsed,) = csv.DictReader(io.StringIO(found.to_csv()))
    assert (parsed["param_state"], parsed["lr"], parsed["state"]) == ("warm", "0.1", "COMPLETED")
