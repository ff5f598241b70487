"""What an unmodified Keras script writes, on two nodes of the test cluster sharing the scratch filesystem.

The same script and checks as tests/integration/test_keras_files_local.py (the tutorial's shape:
BackupAndRestore, ModelCheckpoint every epoch, CSVLogger, TensorBoard, ``model.save``, every path on
shared scratch), launched by the researcher with ``hpc-tf launch``. Without hpc-tf's fix one worker
dies creating the backup directory (``FileExistsError``) or writing the backup file (h5py's lock), and
the other's collective aborts. Witnesses: Slurm's accounting (one record per run), Keras loading the
files, and the instruments' per-worker weights. No GPUs are asked for.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from tests.conftest import wait_for_job
from tests.integration._tutorial_files import (
    EPOCHS,
    assert_outputs_are_the_chiefs,
    assert_resumed_from_the_chiefs_backup,
    epochs_trained,
    two_epochs_done,
)
from tests.integration._waiting import wait_until
from tests.integration.test_preemption_slurm import launch, logs, make_project, runs

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.tf]

SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "tf" / "tutorial_fit.py"


def tutorial_spec(project: Path, name: str, *args: str, **extra: object) -> Path:
    shutil.copy(SCRIPT, project / SCRIPT.name)
    os.chmod(project / SCRIPT.name, 0o644)
    spec = {
        "name": name,
        "command": ["python", SCRIPT.name, "out", "probe", *args],
        "resources": {"nodes": 2, "tasks_per_node": 1, "time": "10:00"},
        "tf": {"coordination_timeout": 120},
        **extra,
    }
    path = project / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def leftovers(job_id: str) -> list[Path]:
    """Worker-private directories of the job still in the nodes' temporary directory (/tmp here)."""
    return sorted(Path("/tmp").glob(f"hpc-tf-{job_id}-*"))


@pytest.fixture
def project(scratch_dir: Path, slurm_cluster: SlurmCluster) -> Path:
    return make_project(scratch_dir, slurm_cluster)


def test_the_tutorials_files_on_shared_scratch_are_the_chiefs(slurm_cluster: SlurmCluster, project: Path) -> None:
    job_id, run_dir = launch(slurm_cluster, project, tutorial_spec(project, "tutorial"))
    status = wait_for_job(job_id, timeout=600)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)
    assert_outputs_are_the_chiefs(project / "out", project / "probe")
    assert not leftovers(job_id)


def test_a_job_killed_after_epoch_2_resumes_at_epoch_3_on_both_nodes(
    slurm_cluster: SlurmCluster, project: Path
) -> None:
    spec = tutorial_spec(project, "killed", "--sleep", "0.4", "--first-run-only",
                         preemption={"enabled": True, "warning_seconds": 60, "max_restarts": 2})
    job_id, run_dir = launch(slurm_cluster, project, spec)
    probe = project / "probe"
    wait_until(lambda: two_epochs_done(probe), "two finished epochs", timeout=300, interval=0.05)
    for rank in (0, 1):  # both nodes' workers die mid epoch 3, after the chief's backup of epoch 2
        os.kill(int((probe / f"pid-{rank}").read_text()), signal.SIGKILL)

    status = wait_for_job(job_id, timeout=600)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)
    assert [record["State"] for record in runs(job_id)] == ["REQUEUED", "COMPLETED"]
    assert epochs_trained(probe, 0, 0) in ([0, 1], [0, 1, 2])  # killed at the start of epoch 3, or in it
    assert_resumed_from_the_chiefs_backup(probe, after_epochs=2)
    assert epochs_trained(probe, 1, 0)[-1] == EPOCHS - 1
    assert_outputs_are_the_chiefs(project / "out", probe)
    assert not leftovers(job_id)
