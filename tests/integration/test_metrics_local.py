"""Metrics from an unmodified ``model.fit`` script and from a custom loop, with real TensorFlow (no Slurm).

The tasks start as the batch script starts them (installed ``runtime/bootstrap.py``, the environment
Slurm gave a recorded 2-task CPU step, HPC_TF_RUN_DIR as the script exports it; :class:`LocalRun`).
metrics_fit.py writes Keras' own History next to training, so each test compares what hpc-tf
recorded in ``<run_dir>/metrics.jsonl`` with what Keras kept, value for value (exact floats).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hpc.runtime import install_into
from hpc.runtime.node.preemption import REQUEUE_EXIT_CODE
from tests.integration._local_step import FIXTURES, LocalRun

pytestmark = pytest.mark.tf

Row = dict[str, Any]
STEPS_PER_EPOCH = 16  # metrics_fit.py: 1024 training samples, batch 64
LEARNING_RATE = 0.0020000000949949026  # metrics_fit.py's Adam(2e-3), as the float32 variable holds it


def metric_rows(run: LocalRun) -> list[Row]:
    return [json.loads(line) for line in (run.root / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def history(run: LocalRun, task: int, attempt: int) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((run.out / f"history-{task}-{attempt}.json").read_text(encoding="utf-8"))
    return loaded


def history_rows(recorded: dict[str, Any]) -> dict[int, dict[str, float]]:
    """History as {epoch: {metric: value}}."""
    return {epoch: {name: values[i] for name, values in recorded["history"].items()}
            for i, epoch in enumerate(recorded["epoch"])}


def epoch_values(rows: list[Row]) -> dict[int, dict[str, float]]:
    """The epoch rows' values without the learning rate (which History holds only with a callback that logs it)."""
    return {row["epoch"]: {k: v for k, v in row["values"].items() if k != "learning_rate"}
            for row in rows if row["kind"] == "epoch"}


def dedupe(rows: list[Row]) -> list[Row]:
    """The reader's rule from the metrics contract: per (kind, epoch, step) the highest attempt wins (the later
    line on a tie), and a lower attempt's rows from the first epoch a higher attempt wrote on were lost work."""
    first_epoch: dict[int, int] = {}
    for row in rows:
        if row["epoch"] is not None:
            first_epoch[row["attempt"]] = min(first_epoch.get(row["attempt"], row["epoch"]), row["epoch"])
    kept: dict[tuple[object, ...], Row] = {}
    for row in rows:
        lost = any(attempt > row["attempt"] and row["epoch"] is not None and row["epoch"] >= epoch
                   for attempt, epoch in first_epoch.items())
        key = (row["kind"], row["epoch"], row["step"])
        if not lost and (key not in kept or row["attempt"] >= kept[key]["attempt"]):
            kept[key] = row
    return list(kept.values())


def test_recorded_metrics_equal_keras_history_exactly_with_step_rows_too(tmp_path: Path) -> None:
    run = LocalRun(tmp_path, "metrics_fit.py", ranks=(0,), strategy="none", preemption=False, metrics_every_steps=5)
    assert run.run() == {0: 0}, run.log(0)
    rows = metric_rows(run)
    kept = history(run, 0, 0)
    assert kept["epoch"] == [0, 1, 2] and set(kept["history"]) == {"loss", "mae", "val_loss", "val_mae"}
    assert epoch_values(rows) == history_rows(kept)  # every metric of every epoch, bit for bit

    epochs = [row for row in rows if row["kind"] == "epoch"]
    assert [(r["epoch"], r["step"], r["epochs"], r["steps"]) for r in epochs] == [(0, 16, 3, 48), (1, 32, 3, 48),
                                                                                   (2, 48, 3, 48)]
    assert all(r["values"]["learning_rate"] == LEARNING_RATE for r in epochs)
    assert all((r["v"], r["attempt"], r["job"]) == (1, 0, "101") for r in rows)  # job 101: the recorded step's
    steps = [row for row in rows if row["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(5, 48, 5))
    assert [r["epoch"] for r in steps] == [(r["step"] - 1) // STEPS_PER_EPOCH for r in steps]
    assert all(set(r["values"]) == {"loss", "mae"} for r in steps)
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)


def test_recording_does_not_change_training(tmp_path: Path) -> None:
    on = LocalRun(tmp_path / "on", "metrics_fit.py", ranks=(0,), strategy="none", preemption=False,
                  metrics_every_steps=1)
    off = LocalRun(tmp_path / "off", "metrics_fit.py", ranks=(0,), strategy="none", preemption=False, metrics=False)
    assert on.run() == {0: 0} and off.run() == {0: 0}, on.log(0) + off.log(0)
    assert history(on, 0, 0) == history(off, 0, 0)
    assert not (off.root / "metrics.jsonl").exists()


def test_two_workers_record_once_from_the_chief(tmp_path: Path) -> None:
    run = LocalRun(tmp_path, "metrics_fit.py", preemption=False)
    assert run.run() == {0: 0, 1: 0}, run.log(0) + run.log(1)
    rows = metric_rows(run)
    assert [(r["kind"], r["epoch"]) for r in rows] == [("epoch", 0), ("epoch", 1), ("epoch", 2)]  # no worker's copy
    assert epoch_values(rows) == history_rows(history(run, 0, 0))
    assert "cannot write metrics" not in run.log(0) + run.log(1)


@pytest.mark.parametrize(("signum", "interrupt_at", "first_epoch_again"), [
    (signal.SIGUSR1, 20, 1),  # warned in epoch 1: checkpoint at the agreed step, resume in epoch 1
    (signal.SIGKILL, 18, 0),  # killed in epoch 1: resume from step 12's checkpoint, epoch 0 trained again
])
def test_a_preempted_and_requeued_run_keeps_one_row_per_epoch_from_the_attempt_that_counted(
    tmp_path: Path, signum: int, interrupt_at: int, first_epoch_again: int
) -> None:
    run = LocalRun(tmp_path, "metrics_fit.py", "--sleep", "0.2", "--first-run-only", checkpoint_every_steps=12)
    codes = run.run(interrupt_at=interrupt_at, signum=signum)
    stopped = REQUEUE_EXIT_CODE if signum == signal.SIGUSR1 else -signal.SIGKILL
    assert codes == {0: stopped, 1: stopped}, run.log(0) + run.log(1)
    assert run.run() == {0: 0, 1: 0}, run.log(0) + run.log(1)

    rows = metric_rows(run)
    written = [(r["attempt"], r["epoch"]) for r in rows]
    assert written == [(0, 0), *((1, e) for e in range(first_epoch_again, 3))]  # the chief's rows, nothing lost
    first, second = history(run, 0, 0), history(run, 0, 1)
    assert second["epoch"] == list(range(first_epoch_again, 3))
    expected = {**history_rows(first), **history_rows(second)}  # the requeued attempt's History wins
    deduped = dedupe(rows)
    assert [r["epoch"] for r in deduped] == [0, 1, 2]
    assert epoch_values(deduped) == expected


def test_a_custom_loop_logs_with_one_call(tmp_path: Path) -> None:
    run = LocalRun(tmp_path, "metrics_loop.py", ranks=(0,), strategy="none", preemption=False)
    assert run.run() == {0: 0}, run.log(0)
    logged = json.loads((run.out / "logged.json").read_text(encoding="utf-8"))
    rows = metric_rows(run)
    assert [(r["kind"], r["epoch"], r["step"]) for r in rows] == [
        ("step", 0, 2), ("step", 0, 4), ("epoch", 0, None), ("step", 1, 6), ("step", 1, 8), ("epoch", 1, None)]
    assert [r["values"]["loss"] for r in rows] == [entry["loss"] for entry in logged]
    assert [r["values"].get("diverged", "absent") for r in rows if r["kind"] == "epoch"] == [None, None]
    assert {r["epochs"] for r in rows if r["kind"] == "epoch"} == {2}


def test_the_same_custom_loop_runs_outside_hpc_tf_and_records_nothing(tmp_path: Path) -> None:
    install_into(tmp_path / "runtime")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "runtime"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("HPC_TF_HOOKS", None)
    result = subprocess.run([sys.executable, str(FIXTURES / "tf" / "metrics_loop.py"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*.jsonl")) == []
    assert (tmp_path / "out" / "logged.json").is_file()
