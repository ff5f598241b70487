"""``hpc-tf campaign status --watch`` on the real test cluster: where each running task's training is
(from its metrics file, written through the runtime's standard-library ``log`` call), live on a
terminal and as plain lines in a pipe, until the campaign ended; Ctrl-C stops the watching, not the
campaign."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests._readme import readme_argv
from tests._shims import CallLog
from tests.conftest import VENV_BIN, as_user_argv
from tests.integration._pty import plain, run_on_pty

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = pytest.mark.slurm

Run = Callable[..., subprocess.CompletedProcess[str]]

# a custom training loop: three epochs of a few seconds, each logged with the runtime's one call. Long enough
# for the campaign's backed-off queries to see the tasks running: a just-started array can stay PENDING in
# sacct for a few seconds under load
TRAIN_PY = """\
import os, sys, time
from hpc_tf_runtime.metrics import log
lr = float(sys.argv[1])
for epoch in range(3):
    time.sleep(float(os.environ.get("EPOCH_S", "3")))
    log(epoch=epoch, epochs=3, loss=lr * (3 - epoch))
"""


@pytest.fixture
def campaign(scratch_dir: Path, slurm_cluster: SlurmCluster, researcher_run: Run) -> Callable[[], str]:
    """Submits a two-task sweep (lr 0.5 and 0.25) and returns its directory."""
    (scratch_dir / "train.py").write_text(TRAIN_PY)
    (scratch_dir / "sweep.yaml").write_text(f"""
name: watched
job:
  command: [python3, train.py]
  env: {{EPOCH_S: "5"}}
  resources: {{nodes: 1, partition: {slurm_cluster.cpu_partition}, time: "2:00"}}
parameters:
  grid: {{lr: [0.5, 0.25]}}
args: ["{{lr}}"]
""")
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)

    def submit() -> str:
        result = researcher_run(["hpc-tf", "campaign", "run", "sweep.yaml", "--site", "sandbox", "--set",
                                 f"runs_dir={scratch_dir / 'runs'}"], cwd=scratch_dir, timeout=180)
        return result.stdout.strip()

    return submit


def watch_argv(directory: str, *extra: str) -> list[str]:
    return [*readme_argv("hpc-tf campaign status DIR --watch", DIR=directory), "--site", "sandbox", *extra]


def on_terminal(cluster: SlurmCluster, argv: list[str]) -> list[str]:
    return as_user_argv(cluster.user, argv, {"TERM": "xterm-256color", "COLUMNS": "200"})


def test_watch_in_a_pipe_prints_each_epoch_of_each_task_and_ends_with_the_campaign(
    campaign: Callable[[], str], researcher_run: Run, scratch_dir: Path
) -> None:
    directory = campaign()
    shims = CallLog.create(scratch_dir / "shims", ("sacct", "squeue"))
    started = time.monotonic()
    result = researcher_run(watch_argv(directory), cwd=scratch_dir, timeout=300,
                            env={"PATH": f"{shims.bin}:{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"})
    # one batched query per refresh, and no refresh asks within 2 s of the last (the backoff's first step):
    # asking per task would be twice that with these two tasks
    asked = shims.counts()
    assert 1 <= asked["sacct"] <= (time.monotonic() - started) / 2 + 1 and asked["squeue"] <= asked["sacct"], asked
    assert "\x1b" not in result.stdout and "\r" not in result.stdout, repr(result.stdout)
    lines = result.stdout.splitlines()
    for task, lr in ((0, 0.5), (1, 0.25)):
        epochs = [line for line in lines if line.startswith(f"task {task} main (lr={lr}): epoch")]
        assert [line.split("  ")[:2] for line in epochs] == [
            [f"task {task} main (lr={lr}): epoch {n}/3", f"loss {lr * (4 - n):.4g}"] for n in (1, 2, 3)], lines
    assert "main: 2 COMPLETED" in lines, lines  # a line when the counts change, the last one when all ended
    final = json.loads(researcher_run(["hpc-tf", "campaign", "status", directory, "--json", "--site", "sandbox"],
                                      cwd=scratch_dir).stdout)
    assert final["finished"] and final["counts"] == {"main": {"COMPLETED": 2}}
    assert re.search(r"^\s*main\s+\S+\s+0\s.*\s2\s*$", result.stdout, re.M), result.stdout  # the full status at the end


def test_watch_on_a_terminal_redraws_a_live_view_with_bars_and_ctrl_c_leaves_the_campaign_running(
    campaign: Callable[[], str], researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster
) -> None:
    directory = campaign()
    code, shown = run_on_pty(on_terminal(slurm_cluster, watch_argv(directory)), cwd=scratch_dir, timeout=300)
    drawn = plain(shown)
    assert code == 0, shown[-3000:]
    assert "━" in drawn, drawn[-3000:]  # the bars of the running tasks
    assert re.search(r"\b[01]\s+lr=0\.(5|25)\s+\S+\s+[━╸╺]+\s+epoch [23]/3  loss ", drawn), drawn[-3000:]

    directory = campaign()  # again, interrupted while a task runs
    code, shown = run_on_pty(on_terminal(slurm_cluster, watch_argv(directory)), cwd=scratch_dir, timeout=300,
                             interrupt_on="/3  loss")  # any epoch shown: a task runs
    drawn = plain(shown)
    assert code == 130 and "Traceback" not in drawn, drawn[-3000:]
    assert f"stopped watching; the campaign goes on (hpc-tf campaign status {directory})" in " ".join(drawn.split())
    # the campaign went on: --watch --json waits for its end and prints the final status
    final = json.loads(researcher_run(watch_argv(directory, "--json"), cwd=scratch_dir, timeout=300).stdout)
    assert final["finished"] and final["counts"] == {"main": {"COMPLETED": 2}}, final
