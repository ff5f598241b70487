"""``hpc-tf metrics RUN --plot`` on a run that really trained (real TensorFlow, no Slurm): the curves drawn
are Keras' own History, epoch by epoch, though the run also logged a row every 5 steps.

The run starts as the batch script starts it (tests/integration/_local_step.py's LocalRun, the script
tests/fixtures' metrics_fit.py, which writes Keras' History next to training)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from hpc.cli import app
from hpc.metrics import read_metrics
from hpc.metrics.plot import run_figure
from tests.integration._local_step import LocalRun
from tests.integration.test_metrics_local import history

pytestmark = pytest.mark.tf


def test_the_curves_of_a_trained_run_are_its_keras_history(tmp_path: Path) -> None:
    run = LocalRun(tmp_path, "metrics_fit.py", ranks=(0,), strategy="none", preemption=False, metrics_every_steps=5)
    assert run.run() == {0: 0}, run.log(0)
    kept = history(run, 0, 0)["history"]
    result = CliRunner().invoke(app, ["metrics", str(run.root), "--plot"])
    assert result.exit_code == 0, result.output
    with Image.open(run.root / "metrics.png") as image:
        assert image.size == (1260, 320)  # three panels: loss, mae, learning_rate
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 50
    fig = run_figure(read_metrics(run.root / "metrics.jsonl"), "run")
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["loss", "mae", "learning_rate"]
    drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for ax in panels
             for line in ax.get_lines()}
    assert set(drawn) == {"loss", "val_loss", "mae", "val_mae", "learning_rate"}
    for name, values in kept.items():  # the epoch rows, exactly; the step rows are not mixed in
        assert drawn[name] == ([1, 2, 3], values), name
