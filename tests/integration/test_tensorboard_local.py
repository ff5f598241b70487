"""``metrics: {tensorboard: true}``: the chief also writes TensorBoard event files under
``<run_dir>/tensorboard``, from an unmodified ``model.fit`` script (real TensorFlow, the tasks started as
the batch script starts them: tests/integration/_local_step.py). Read back with TensorFlow's own
event reader, they hold exactly what Keras' History holds, laid out as Keras' TensorBoard callback lays
them out (train/ and validation/, ``epoch_<metric>``), and training is the same as without them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.integration._local_step import LocalRun
from tests.integration.test_metrics_local import history, history_rows, metric_rows

pytestmark = pytest.mark.tf

Scalars = dict[str, dict[str, dict[int, float]]]  # run (train, validation) → tag → step → value


def read_events(directory: Path) -> tuple[Scalars, list[Path]]:
    import tensorflow as tf

    found: Scalars = defaultdict(lambda: defaultdict(dict))
    files = sorted(directory.rglob("events.out.tfevents.*"))
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found[path.parent.name][value.tag][event.step] = float(tf.make_ndarray(value.tensor))
    return found, files


def test_event_files_of_the_chief_equal_keras_history(tmp_path: Path) -> None:
    run = LocalRun(tmp_path, "metrics_fit.py", preemption=False, metrics_tensorboard=True, metrics_every_steps=5)
    assert run.run() == {0: 0, 1: 0}, run.log(0) + run.log(1)
    scalars, files = read_events(tmp_path / "tensorboard")
    assert sorted(f.parent.name for f in files) == ["train", "validation"], files  # one writer: the chief's

    kept = history_rows(history(run, 0, 0))  # {epoch: {loss, mae, val_loss, val_mae}}
    for name in ("loss", "mae"):
        assert scalars["train"][f"epoch_{name}"] == {e: values[name] for e, values in kept.items()}
        assert scalars["validation"][f"epoch_{name}"] == {e: values[f"val_{name}"] for e, values in kept.items()}
    rows = metric_rows(run)  # the step rows too, at their global step, as the metrics file has them
    assert scalars["train"]["batch_loss"] == {r["step"]: r["values"]["loss"] for r in rows if r["kind"] == "step"}
    assert scalars["train"]["epoch_learning_rate"] == {
        r["epoch"]: r["values"]["learning_rate"] for r in rows if r["kind"] == "epoch"}
    assert "no TensorBoard events" not in run.log(0)


def test_writing_events_does_not_change_training(tmp_path: Path) -> None:
    on = LocalRun(tmp_path / "on", "metrics_fit.py", ranks=(0,), strategy="none", preemption=False,
                  metrics_tensorboard=True)
    off = LocalRun(tmp_path / "off", "metrics_fit.py", ranks=(0,), strategy="none", preemption=False)
    assert on.run() == {0: 0} and off.run() == {0: 0}, on.log(0) + off.log(0)
    assert history(on, 0, 0) == history(off, 0, 0)
    assert (tmp_path / "on" / "tensorboard" / "train").is_dir() and not (tmp_path / "off" / "tensorboard").exists()
