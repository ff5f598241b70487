"""What an unmodified Keras script writes, on two workers sharing one output directory (``--site local``).

``tests/fixtures/tf/tutorial_fit.py`` is written the way TensorFlow's multi-worker tutorial and Keras's
callback documentation show: BackupAndRestore, ModelCheckpoint every epoch (full models and weights,
``.keras`` and ``.h5``), CSVLogger, TensorBoard, ``model.save`` — every worker names the same paths.
Keras 3 has no chief/worker logic for them: without hpc-tf's fix both workers write the same backup file
and the job dies in h5py. With it the job completes, every file the script named is the chief's and
loads, and nothing of the other worker is left; after a kill between epochs the requeued job resumes at
the next epoch on both workers, from the chief's backup.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from tests.integration._local_step import free_port_pair
from tests.integration._tutorial_files import (
    EPOCHS,
    assert_outputs_are_the_chiefs,
    assert_resumed_from_the_chiefs_backup,
    epochs_trained,
    probe_weights,
    two_epochs_done,
)
from tests.integration._waiting import wait_until
from tests.integration.test_launch_local import hpc_tf, logs, run_dir_of, status_row, write_spec

pytestmark = pytest.mark.tf

SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "tf" / "tutorial_fit.py"
VENV = str(Path(sys.executable).parent.parent)  # the job activates the test's venv: `python` has Keras


def tutorial_job(project: Path, name: str, *args: str, **extra: object) -> Path:
    project.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCRIPT, project / SCRIPT.name)
    port = free_port_pair()  # other local jobs on this machine may hold the default range's first ports
    return write_spec(project, name, ["python", SCRIPT.name, "out", "probe", *args],
                      resources={"gpus_per_node": 0}, environment={"venv": VENV},
                      tf={"coordination_timeout": 120, "port_range": [port, port + 1]}, **extra)


def leftovers(job_id: str) -> list[Path]:
    """Worker-private directories of the job still in the temporary directory."""
    import tempfile

    return sorted(Path(tempfile.gettempdir()).glob(f"hpc-tf-{job_id}-*"))


def wait_for_two_epochs(project: Path, job_id: str) -> None:
    def running_two_epochs_done() -> bool:
        assert status_row(project, job_id)["state"] in ("PENDING", "RUNNING"), logs(project)
        return two_epochs_done(project / "probe")

    wait_until(running_two_epochs_done, "two finished epochs", timeout=300, interval=0.05)


def test_the_tutorials_files_are_the_chiefs_and_nothing_else_is_left(tmp_path: Path) -> None:
    spec = tutorial_job(tmp_path, "tutorial")
    job_id = hpc_tf(tmp_path, "launch", spec.name, "--wait").stdout.strip()
    row = status_row(tmp_path, job_id)
    assert (row["state"], row["exit_code"]) == ("COMPLETED", 0), logs(tmp_path)
    assert_outputs_are_the_chiefs(tmp_path / "out", tmp_path / "probe")
    assert not leftovers(job_id)


def test_a_job_killed_after_epoch_2_resumes_at_epoch_3_on_every_worker_from_the_chiefs_backup(
    tmp_path: Path,
) -> None:
    spec = tutorial_job(tmp_path, "killed", "--sleep", "0.4", "--first-run-only",
                        preemption={"enabled": True, "warning_seconds": 60, "max_restarts": 2})
    job_id = hpc_tf(tmp_path, "launch", spec.name).stdout.strip()
    probe = tmp_path / "probe"
    wait_for_two_epochs(tmp_path, job_id)
    for rank in (0, 1):  # a lost allocation: both workers die mid epoch 3, after the chief's backup of epoch 2
        os.kill(int((probe / f"pid-{rank}").read_text()), signal.SIGKILL)
    wait_until(lambda: status_row(tmp_path, job_id)["state"] in ("COMPLETED", "FAILED"), "the job to end", 300)

    row = status_row(tmp_path, job_id)
    assert (row["state"], row["exit_code"], row["restarts"]) == ("COMPLETED", 0, 1), logs(tmp_path)
    assert epochs_trained(probe, 0, 0) in ([0, 1], [0, 1, 2])  # killed at the start of epoch 3, or in it
    assert_resumed_from_the_chiefs_backup(probe, after_epochs=2)
    assert epochs_trained(probe, 1, 0)[-1] == EPOCHS - 1
    assert_outputs_are_the_chiefs(tmp_path / "out", probe)
    assert not leftovers(job_id)


def test_a_warned_job_resumes_exactly_from_hpc_tfs_checkpoint_and_the_backup_is_not_restored_over_it(
    tmp_path: Path,
) -> None:
    """With preemption on, the warning makes hpc-tf checkpoint mid epoch 3; BackupAndRestore's backup of
    epoch 2 is older and must not replace the restored weights (hpc-tf skips the steps already done)."""
    spec = tutorial_job(tmp_path, "warned", "--sleep", "0.4", "--first-run-only",
                        preemption={"enabled": True, "warning_seconds": 60, "max_restarts": 2})
    job_id = hpc_tf(tmp_path, "launch", spec.name).stdout.strip()
    probe = tmp_path / "probe"
    wait_for_two_epochs(tmp_path, job_id)
    record = json.loads((tmp_path / "runs" / ".local-jobs" / f"{job_id}.json").read_text())
    os.kill(record["batch_pid"], signal.SIGUSR1)  # what Slurm's warning does to the batch shell
    wait_until(lambda: status_row(tmp_path, job_id)["state"] in ("COMPLETED", "FAILED"), "the job to end", 300)

    row = status_row(tmp_path, job_id)
    assert (row["state"], row["exit_code"], row["restarts"]) == ("COMPLETED", 0, 1), logs(tmp_path)
    begin = [probe_weights(probe, f"begin-run1-{rank}") for rank in (0, 1)]
    assert begin[0] == begin[1] != probe_weights(probe, "epoch2-0")  # mid epoch 3, not the epoch-2 backup
    for rank in (0, 1):
        log = (Path(row["run_dir"]) / "logs" / f"task-{job_id}-{rank}.out").read_text()
        assert "hpc-tf: resuming fit from checkpoint ckpt-" in log
        assert "BackupAndRestore: fit resumed from hpc-tf's checkpoint, exact to the step" in log
        assert epochs_trained(probe, 1, rank)[0] == 2
    assert_outputs_are_the_chiefs(tmp_path / "out", probe)
    assert not leftovers(job_id)


def test_a_backup_only_the_chiefs_node_can_see_stops_every_worker_with_a_clear_message(tmp_path: Path) -> None:
    """Each worker must restore the same backup; with a node-local backup_dir only the chief's node has it."""
    script = SCRIPT.parent / "node_local_backup.py"
    shutil.copy(script, tmp_path / script.name)
    port = free_port_pair()
    spec = write_spec(tmp_path, "node-local", ["python", script.name, "out"], resources={"gpus_per_node": 0},
                      environment={"venv": VENV}, tf={"coordination_timeout": 120, "port_range": [port, port + 1]})
    result = hpc_tf(tmp_path, "launch", spec.name, "--wait", check=False)
    assert result.returncode != 0, logs(tmp_path)
    expected = ("BackupAndRestore: the workers do not see the same backup in out/disk-of-local1/backup "
                '(worker 0: {"epoch": 2, "batch": 0}, ')
    hint = "hint: give BackupAndRestore a backup_dir on a file system every node sees the same way"
    for rank in (0, 1):
        log = (run_dir_of(tmp_path, "node-local") / "logs" / f"task-{result.stdout.strip()}-{rank}.out").read_text()
        assert "worker 1: no training_metadata.json, no weights)" in log and hint in log
        assert expected.replace("local1", "local2" if rank else "local1") in log
