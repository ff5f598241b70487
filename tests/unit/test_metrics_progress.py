"""What ``launch --wait`` says of training while it runs, from metrics.jsonl as the contract writes it:
nothing while the file is missing or its last line half-written, then each epoch once (people count
epochs from 1), the latest values and the time per epoch, steps within an epoch, a requeue's epochs
again marked with their attempt."""

from __future__ import annotations

import json
from pathlib import Path

from hpc.metrics.progress import ProgressReader
from tests.unit.test_metrics_read import T0, append, row


def test_nothing_to_show_before_the_file_exists_or_while_its_first_line_is_half_written(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    reader = ProgressReader(path)
    assert reader.update().latest is None and not reader.update().lines
    append(path, raw=json.dumps(row(0, {"loss": 0.5}, epochs=3))[:30].encode())
    update = reader.update()
    assert update.latest is None and not update.lines and update.fraction is None


def test_each_epoch_is_one_line_once_with_its_values_and_time_per_epoch(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    reader = ProgressReader(path)
    append(path, row(0, {"loss": 0.91234567, "val_loss": 1.0}, epochs=3, time=T0))
    first = reader.update()
    assert first.lines == ["epoch 1/3  loss 0.9123  val_loss 1"]  # the first epoch's time includes start-up
    assert first.fraction is not None and abs(first.fraction - 1 / 3) < 1e-9
    append(path, row(1, {"loss": 0.5, "val_loss": float("nan")}, epochs=3, time=T0 + 12.5),
           raw=json.dumps(row(2, {"loss": 0.3}, epochs=3))[:20].encode())
    second = reader.update()
    assert second.lines == ["epoch 2/3  loss 0.5  val_loss nan  12.5s/epoch"]  # not epoch 1 again, not the partial
    assert second.latest == "epoch 2/3  loss 0.5  val_loss nan  12.5s/epoch"
    assert reader.update().lines == []  # nothing new: nothing printed twice


def test_steps_within_the_next_epoch_move_the_bar_and_a_step_only_loop_counts_steps(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append(path, row(0, {"loss": 0.5}, epochs=4, time=T0),
           {**row(1, {"loss": 0.4}, kind="step", step=48, epochs=4, time=T0 + 5), "steps": 64})
    update = ProgressReader(path).update()
    assert update.lines == ["epoch 1/4  loss 0.5"]  # step rows are no lines when there are epochs
    assert update.latest == "epoch 1/4  loss 0.5  step 48/64" and update.fraction == 0.75

    loop = tmp_path / "loop.jsonl"
    append(loop, {**row(None, {"loss": 2.0}, kind="step", step=100, epochs=None, time=T0), "steps": 400})
    assert ProgressReader(loop).update().lines == ["step 100/400  loss 2"]


def test_a_requeued_attempt_shows_the_epochs_it_trains_again_marked_with_its_attempt(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    reader = ProgressReader(path)
    append(path, row(0, {"loss": 0.9}, epochs=3, time=T0), row(1, {"loss": 0.7}, epochs=3, time=T0 + 10))
    assert len(reader.update().lines) == 2
    append(path, row(1, {"loss": 0.6}, epochs=3, attempt=1, time=T0 + 100),
           row(2, {"loss": 0.4}, epochs=3, attempt=1, time=T0 + 110))
    # the first row of an attempt has no time per epoch: the gap before it was the queue, not training
    assert reader.update().lines == ["epoch 2/3  loss 0.6  (attempt 2)", "epoch 3/3  loss 0.4  10s/epoch  (attempt 2)"]
