"""``hpc-tf status``: a running job's row says where its training is, from the run's metrics file as the
runtime's writer writes it; a table of jobs none of which trains keeps its columns (the README shows it).
Slurm's answers are the recorded ones (tests/fixtures/scheduler/slurm-22.05/scenario). Real training,
on a pty and in a pipe: tests/integration/test_watch_local.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc.cli import app
from hpc.paths import RunPaths
from hpc.rundir import record_submission
from hpc.runtime.node.metrics import MetricsWriter
from hpc.scheduler import SlurmCli, SlurmScheduler, commands
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import RetryPolicy
from tests.unit.test_scheduler_status import ROLES, SCENARIO

RUNNING, COMPLETED = ROLES["running"], ROLES["completed"]


def recorded(name: str, ids: list[str]) -> str:
    lines = load_recording(SCENARIO / name).result.stdout.splitlines()
    return "".join(f"{line}\n" for line in lines if line.split("|")[0] in ids)


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two run directories: the running job's, whose chief logged two of three epochs, and a finished one's."""
    root = tmp_path / "runs"
    for name, job_id in (("done", COMPLETED), ("training", RUNNING)):
        paths = RunPaths.at(root / name)
        paths.root.mkdir(parents=True)
        record_submission(paths, job_id, None)
    writer = MetricsWriter(str(RunPaths.at(root / "training").metrics), attempt=0, job=RUNNING)
    for epoch, loss in enumerate((0.5, 0.25)):
        writer.write("epoch", {"loss": loss}, epoch=epoch, step=8 * (epoch + 1), epochs=3, steps=24)
    runner = ReplayRunner()
    for ids in ([COMPLETED, RUNNING], [RUNNING], [COMPLETED]):
        runner.answer(commands.sacct(ids), recorded("query-sacct.rec", ids))
    runner.answer(commands.squeue([RUNNING]), recorded("query-squeue.rec", [RUNNING]))
    scheduler = SlurmScheduler(SlurmCli(runner, retry=RetryPolicy(attempts=1)))
    monkeypatch.setattr("hpc.backends.scheduler_for", lambda *_: scheduler)
    return root


def status(root: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["status", *args, "--site", "sandbox", "--set", f"runs_dir={root}"])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_running_jobs_row_shows_its_epoch_loss_and_time_per_epoch_in_a_column_of_its_own(runs: Path) -> None:
    table = status(runs, "--all").splitlines()
    assert table[0].split()[-1] == "progress"
    (row,) = [line for line in table if line.split()[0] == RUNNING]
    assert "RUNNING" in row and row.rstrip().endswith("s/epoch"), row
    assert "epoch 2/3  loss 0.25  " in row, row
    (data,) = json.loads(status(runs, RUNNING, "--json"))
    assert data["progress"].startswith("epoch 2/3  loss 0.25  ") and data["progress_fraction"] == pytest.approx(2 / 3)

    # a table of jobs none of which trains has no such column
    header = status(runs, COMPLETED).splitlines()[0].split()
    assert header == ["job", "run", "state", "elapsed/limit", "nodes", "gpus", "restarts", "info"]
    (data,) = json.loads(status(runs, COMPLETED, "--json"))
    assert data["progress"] is None  # a finished job's metrics are hpc-tf metrics' to show
