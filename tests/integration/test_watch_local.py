"""Where training is, while it runs, in ``hpc-tf status`` (local launcher, real TensorFlow): a running
job's row says its epoch of the planned total, the latest loss and the time per epoch, from the run's
metrics file, on a terminal and in a pipe alike."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from tests._readme import readme_argv
from tests.integration._pty import plain, run_on_pty
from tests.integration.test_launch_local import hpc_tf, run_dir_of, write_spec

pytestmark = pytest.mark.tf

# an unmodified fit script whose epochs last long enough for a status call to land in the middle of training
SLOW_FIT = """\
import time

import keras
import numpy as np

x = np.linspace(-1, 1, 256, dtype="float32").reshape(-1, 1)
model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
model.fit(x, 3 * x, epochs=4, batch_size=32, verbose=0,
          callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(4))])
"""


def env() -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_"))}
    kept.update(TF_CPP_MIN_LOG_LEVEL="2", COLUMNS="250", TERM="xterm-256color")
    return kept


def epoch_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [row["values"]["loss"] for row in rows if row["kind"] == "epoch"]


def test_status_of_a_running_job_shows_its_epoch_loss_and_time_per_epoch(tmp_path: Path) -> None:
    (tmp_path / "slow_fit.py").write_text(SLOW_FIT, encoding="utf-8")
    spec = write_spec(tmp_path, "watched", [sys.executable, "slow_fit.py"],
                      resources={"nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1})
    hpc_tf(tmp_path, "launch", str(spec), "--set", f"python={sys.executable}")
    run_dir = run_dir_of(tmp_path, "watched")
    try:
        deadline = time.monotonic() + 300
        row: dict[str, object] = {}
        while time.monotonic() < deadline:  # until the second epoch ended: then there is a time per epoch
            (row,) = json.loads(hpc_tf(tmp_path, "status", "1", "--json").stdout)
            if row["state"] != "RUNNING" or re.match(r"epoch [2-4]/4", str(row["progress"] or "")):
                break
            time.sleep(0.5)
        assert row["state"] == "RUNNING" and row["progress"], row
        assert 0 < float(str(row["progress_fraction"])) < 1, row

        command = readme_argv("hpc-tf status JOBID", JOBID="1")[1:]
        argv = [sys.executable, "-m", "hpc.cli", *command, "--site", "local", "--set", f"runs_dir={tmp_path / 'runs'}"]
        code, terminal = run_on_pty(argv, cwd=tmp_path, env=env(), timeout=120)
        assert code == 0, terminal
        piped = hpc_tf(tmp_path, *command).stdout
        assert "\x1b" not in piped, repr(piped)
        for shown in (plain(terminal), piped):
            line = next((ln for ln in shown.splitlines() if "RUNNING" in ln), "")
            found = re.search(r"epoch ([1-4])/4  loss (\S+)  .*?([\d.]+)s/epoch", line)
            assert found, shown
            epoch, loss = int(found[1]), found[2]
            assert loss == f"{epoch_losses(run_dir)[epoch - 1]:.4g}", (line, epoch_losses(run_dir))
    finally:
        hpc_tf(tmp_path, "cancel", "1", check=False)
