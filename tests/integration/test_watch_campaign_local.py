"""``hpc-tf campaign status --watch`` on the embedded default, the local launcher: each running task's
epochs (from its metrics file, written through the runtime's standard-library ``log`` call), live on a
terminal and as plain lines in a pipe, until the campaign ended; Ctrl-C stops the watching, not the
campaign. The same on the test cluster: tests/integration/test_watch_slurm.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests._readme import readme_argv
from tests.integration._pty import plain, run_on_pty
from tests.integration.test_watch_slurm import TRAIN_PY

SWEEP = """\
name: watched
job:
  command: [{python}, train.py]
  env: {{EPOCH_S: "2"}}
  resources: {{time: "2:00"}}
parameters:
  grid: {{lr: [0.5, 0.25]}}
args: ["{{lr}}"]
"""


def cli(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "hpc.cli", *args, "--site", "local", "--set", f"runs_dir={project / 'runs'}"]


def env() -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_", "CUDA_"))}
    kept.update(TERM="xterm-256color", COLUMNS="200")
    return kept


def submit(project: Path) -> str:
    (project / "train.py").write_text(TRAIN_PY)
    (project / "sweep.yaml").write_text(SWEEP.format(python=sys.executable))
    result = subprocess.run(cli(project, "campaign", "run", "sweep.yaml"), cwd=project, env=env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def watch(project: Path, directory: str, *extra: str) -> list[str]:
    return cli(project, *readme_argv("hpc-tf campaign status DIR --watch", DIR=directory)[1:], *extra)


def test_watch_in_a_pipe_prints_each_epoch_of_each_task_and_ends_with_the_campaign(tmp_path: Path) -> None:
    directory = submit(tmp_path)
    result = subprocess.run(watch(tmp_path, directory), cwd=tmp_path, env=env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout, repr(result.stdout)
    lines = result.stdout.splitlines()
    for task, lr in ((0, 0.5), (1, 0.25)):
        epochs = [line for line in lines if line.startswith(f"task {task} main (lr={lr}): epoch")]
        assert [line.split("  ")[:2] for line in epochs] == [
            [f"task {task} main (lr={lr}): epoch {n}/3", f"loss {lr * (4 - n):.4g}"] for n in (1, 2, 3)], lines
    assert "main: 2 COMPLETED" in lines, lines
    assert re.search(r"^\s*main\s+\S+\s+0\s.*\s2\s*$", result.stdout, re.M), result.stdout  # the full status


def test_watch_on_a_terminal_draws_bars_and_ctrl_c_leaves_the_campaign_running(tmp_path: Path) -> None:
    directory = submit(tmp_path)
    code, shown = run_on_pty(watch(tmp_path, directory), cwd=tmp_path, env=env(), timeout=300,
                             interrupt_on="/3  loss")  # any epoch shown: a task runs
    drawn = plain(shown)
    assert code == 130 and "Traceback" not in drawn, drawn[-3000:]
    assert re.search(r"\b0\s+lr=0\.5\s+\S+\s+[━╸╺]+\s+epoch [12]/3  loss ", drawn), drawn[-3000:]
    assert f"stopped watching; the campaign goes on (hpc-tf campaign status {directory})" in " ".join(drawn.split())
    # the campaign went on: --watch --json waits for its end and prints the final status
    final = subprocess.run(watch(tmp_path, directory, "--json"), cwd=tmp_path, env=env(), capture_output=True,
                           text=True, timeout=300)
    view = json.loads(final.stdout)
    assert view["finished"] and view["counts"] == {"main": {"COMPLETED": 2}}, final.stderr
