"""``hpc-tf launch --wait`` shows where training is while the job runs (local launcher, real TensorFlow):
on a terminal a live bar with the epoch and the loss, in a pipe one plain line per epoch with the
values Keras logged, and no escape codes or carriage returns for a log to trip over."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._pty import plain, run_on_pty
from tests.integration.test_launch_local import run_dir_of, write_spec

pytestmark = pytest.mark.tf

# an unmodified fit script whose epochs take long enough for --wait's polls to see them one by one
SLOW_FIT = """\
import time

import keras
import numpy as np

x = np.linspace(-1, 1, 256, dtype="float32").reshape(-1, 1)
model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
model.fit(x, 3 * x, epochs=3, batch_size=32, verbose=0,
          callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(2))])
"""


def launch_argv(project: Path) -> tuple[list[str], dict[str, str]]:
    (project / "slow_fit.py").write_text(SLOW_FIT, encoding="utf-8")
    spec = write_spec(project, "progress", ["python3", "slow_fit.py"],
                      resources={"nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", COLUMNS="200", TERM="xterm-256color")
    return ([sys.executable, "-m", "hpc.cli", "launch", str(spec), "--wait", "--site", "local",
             "--set", f"runs_dir={project / 'runs'}", "--set", f"python={sys.executable}"], env)


def losses(project: Path) -> list[float]:
    """The loss of each epoch, as the runtime recorded it."""
    lines = (run_dir_of(project, "progress") / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [row["values"]["loss"] for row in map(json.loads, lines) if row["kind"] == "epoch"]


def test_a_terminal_shows_a_live_bar_with_the_epoch_and_the_loss(tmp_path: Path) -> None:
    argv, env = launch_argv(tmp_path)
    code, shown = run_on_pty(argv, cwd=tmp_path, env=env)
    assert code == 0, shown[-3000:]
    drawn = plain(shown)
    assert "━" in drawn, shown[-3000:]  # the bar, drawn while the job ran
    live = [line for line in re.split(r"[\r\n]", drawn) if "RUNNING" in line and "epoch 2/3" in line]
    assert live and re.search(r"epoch 2/3  loss \d", live[-1]), drawn[-3000:]
    assert "job 1 ended: COMPLETED" in drawn


def test_a_pipe_gets_one_plain_line_per_epoch_with_the_logged_loss(tmp_path: Path) -> None:
    argv, env = launch_argv(tmp_path)
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream and "\r" not in stream, repr(stream[-2000:])
    epochs = [line for line in result.stderr.splitlines() if re.match(r"job 1: epoch \d", line)]
    expected = [f"job 1: epoch {n}/3  loss {loss:.4g}" for n, loss in enumerate(losses(tmp_path), start=1)]
    assert len(epochs) == len(expected) == 3, result.stderr
    assert all(line.startswith(want + "  ") for line, want in zip(epochs, expected, strict=True)), epochs
    assert re.search(r"  \d[.\d]*s/epoch$", epochs[-1]), epochs
    assert result.stderr.index("job 1: epoch 3/3") < result.stderr.index("job 1 ended: COMPLETED")
