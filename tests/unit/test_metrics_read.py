"""Reading metrics.jsonl back as the contract writes it: a crash's partial last line, requeues that train
epochs again, NaN, damaged lines; the per-metric series, final and best values, training time."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from hpc.errors import HpcTfError
from hpc.metrics import default_mode, read_metrics

T0 = 1_764_900_000.0


def row(epoch: int | None, values: dict[str, float], *, attempt: int = 0, time: float | None = None,
        kind: str = "epoch", step: int | None = None, epochs: int | None = 5, job: str = "4711") -> dict[str, object]:
    return {"v": 1, "kind": kind, "epoch": epoch, "step": step, "epochs": epochs, "steps": None,
            # the writer's rule: NaN and infinities become null
            "values": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
            "time": T0 + 10.0 * (epoch or 0) + 1000.0 * attempt if time is None else time,
            "attempt": attempt, "job": job}


def append(path: Path, *rows: dict[str, object], raw: bytes = b"") -> None:
    """As the runtime writes: each row one os.write of a whole line on an O_APPEND descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for r in rows:
            os.write(fd, (json.dumps(r) + "\n").encode())
        if raw:
            os.write(fd, raw)
    finally:
        os.close(fd)


def test_a_crash_mid_write_loses_only_the_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append(path, row(0, {"loss": 0.9, "val_loss": 1.0}), row(1, {"loss": 0.5, "val_loss": 0.7}),
           raw=json.dumps(row(2, {"loss": 0.3}))[:25].encode())
    found = read_metrics(path)
    assert [(p.epoch, p.value) for p in found.series("val_loss")] == [(0, 1.0), (1, 0.7)]
    assert found.epochs == 2 and found.epochs_planned == 5 and found.skipped == 0
    assert found.final("loss") == 0.5 and found.names == ("loss", "val_loss")


def test_a_requeued_run_has_each_epoch_once_with_the_values_of_the_attempt_that_finished_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    # attempt 0 trained epochs 0-3 and was preempted; its checkpoint was from epoch 1, so attempt 1 trained
    # epoch 2 again and was preempted too (its checkpoint: epoch 2); attempt 2 trained 3 and 4
    append(path, *(row(e, {"loss": 1.0 - e / 10}) for e in range(4)),
           row(2, {"loss": 0.21}, attempt=1),
           row(3, {"loss": 0.31}, attempt=2), row(4, {"loss": 0.41}, attempt=2))
    found = read_metrics(path)
    assert [(r.epoch, r.attempt, r.values["loss"]) for r in found.rows] == [
        (0, 0, 1.0), (1, 0, 0.9), (2, 1, 0.21), (3, 2, 0.31), (4, 2, 0.41)]
    assert found.attempts == 3 and found.epochs == 5


def test_a_lower_attempt_past_where_a_higher_one_resumed_is_lost_work_even_if_never_redone(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append(path, *(row(e, {"loss": 1.0}) for e in range(4)), row(2, {"loss": 0.5}, attempt=1))
    assert [(r.epoch, r.attempt) for r in read_metrics(path).rows] == [(0, 0), (1, 0), (2, 1)]


def test_a_task_resubmitted_as_a_new_job_counts_its_attempts_from_0_again_and_still_wins(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    # job 4711 was requeued once and failed in epoch 3; campaign resubmit ran the task again as job 4800,
    # which resumed from the checkpoint of epoch 1
    append(path, row(0, {"loss": 0.9}), row(1, {"loss": 0.8}), row(1, {"loss": 0.7}, attempt=1),
           row(2, {"loss": 0.6}, attempt=1), row(3, {"loss": 0.5}, attempt=1),
           row(2, {"loss": 0.55}, job="4800", time=T0 + 5000), row(3, {"loss": 0.45}, job="4800", time=T0 + 5010))
    found = read_metrics(path)
    assert [(r.epoch, r.job, r.attempt, r.values["loss"]) for r in found.rows] == [
        (0, "4711", 0, 0.9), (1, "4711", 1, 0.7), (2, "4800", 0, 0.55), (3, "4800", 0, 0.45)]
    assert found.attempts == 3


def test_the_same_row_twice_in_one_attempt_keeps_the_later_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append(path, row(0, {"loss": 0.9}), row(0, {"loss": 0.8}))
    assert [r.values["loss"] for r in read_metrics(path).rows] == [0.8]


def test_nan_is_no_value_final_says_so_and_best_skips_it(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append(path, row(0, {"loss": 0.9}), row(1, {"loss": 0.4}), row(2, {"loss": float("nan")}))
    # Python's json also writes a bare NaN: read as no value too
    append(path, raw=b'{"v": 1, "kind": "epoch", "epoch": 3, "step": null, "epochs": 5, "steps": null, '
                     b'"values": {"loss": NaN}, "time": 1764900030.0, "attempt": 0, "job": "4711"}\n')
    found = read_metrics(path)
    assert [p.value for p in found.series("loss")] == [0.9, 0.4, None, None]
    assert found.final("loss") is None
    best = found.best("loss", "min")
    assert best is not None and (best.value, best.epoch) == (0.4, 1)
    assert found.best("nothing", "min") is None


def test_damaged_and_newer_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append(path, row(0, {"loss": 0.9}), raw=b'{"v": 1, "kind": "ep\n\xff\xfe\n{"v": 2, "kind": "epoch"}\n\n')
    append(path, row(1, {"loss": 0.8}), {**row(2, {"loss": 0.1}), "values": {"loss": "low"}})
    found = read_metrics(path)
    assert [r.epoch for r in found.rows] == [0, 1] and found.skipped == 4


def test_accuracy_like_metrics_are_maximised_and_the_rest_minimised() -> None:
    assert [default_mode(m) for m in ("val_loss", "loss", "val_accuracy", "acc", "auc", "val_precision",
                                      "recall", "mae", "lr")] == [
        "min", "min", "max", "max", "max", "max", "max", "min", "min"]


def test_best_in_max_mode_is_the_first_highest(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append(path, *(row(e, {"val_accuracy": a}) for e, a in enumerate([0.5, 0.8, 0.8, 0.7])))
    best = read_metrics(path).best("val_accuracy", "max")
    assert best is not None and (best.value, best.epoch) == (0.8, 1)


def test_training_time_counts_each_attempt_and_a_typical_first_epoch_not_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    # attempt 0: epochs end at +10, +20, +30 s; requeued, waited in the queue ~1000 s; attempt 1 at +1030, +1040
    append(path, *(row(e, {"loss": 1.0}, time=T0 + 10 * (e + 1)) for e in range(3)),
           row(2, {"loss": 1.0}, attempt=1, time=T0 + 1030), row(3, {"loss": 1.0}, attempt=1, time=T0 + 1040))
    assert read_metrics(path).wall_s == pytest.approx((20 + 10) + (10 + 10))
    single = tmp_path / "one.jsonl"
    append(single, row(0, {"loss": 1.0}))
    assert read_metrics(single).wall_s is None  # one epoch: nothing says how long it took


def test_a_custom_loop_that_logs_steps_only_is_read_by_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    append(path, *(row(None, {"loss": 1.0 / s}, kind="step", step=s, epochs=None) for s in (100, 200, 300)))
    found = read_metrics(path)
    assert [(p.step, p.value) for p in found.series("loss")] == [(100, 0.01), (200, 0.005), (300, 1.0 / 300)]
    assert found.epochs == 0 and found.final("loss") == 1.0 / 300


def test_no_file_is_file_not_found_and_a_fifo_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "metrics.jsonl")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(HpcTfError, match="is not a regular file"):
        read_metrics(fifo)
