"""Preemption, time limits and requeue on the test cluster, through ``hpc-tf launch`` as the researcher.

Every job trains the same 2-node Keras ``model.fit`` script with a fixed seed
(``tests/fixtures/tf/preempt_fit.py``; its instruments slow the first run down and record progress
and pids) with periodic checkpoints every 10 steps. An uninterrupted run of the same job is the
reference: an interrupted job must end with the very same weights, bit for bit, on both workers.

Witnesses independent of hpc-tf: Slurm's accounting (``sacct --duplicates`` keeps one record per
run of a requeued job), the batch shell's and tasks' logs, the checkpoint files. No GPUs are asked
for, so the account's GPU quota (shared with other tests) never holds these jobs back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.conftest import run_as_researcher, wait_for_job
from tests.integration._waiting import wait_until, weights

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.tf]

Run = Callable[..., subprocess.CompletedProcess[str]]
SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "tf" / "preempt_fit.py"
EVERY_STEPS = 10
STEPS = 96  # 3 epochs x 32 batches


def make_project(directory: Path, cluster: SlurmCluster) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCRIPT, directory / SCRIPT.name)
    subprocess.run(["chown", "-R", cluster.user, str(directory)], check=True, timeout=30)
    return directory


def write_spec(
    project: Path, name: str, *, sleep: float = 0.0, first_run_only: bool = False, time_limit: str = "10:00",
    warning_s: int = 60, max_restarts: int = 3,
) -> Path:
    command = ["python", SCRIPT.name, "out"]
    if sleep:
        command += ["--sleep", str(sleep), *(["--first-run-only"] if first_run_only else [])]
    spec = {
        "name": name,
        "command": command,
        "resources": {"nodes": 2, "tasks_per_node": 1, "time": time_limit},
        "tf": {"coordination_timeout": 120},
        "checkpoint": {"every_steps": EVERY_STEPS},
        "preemption": {"enabled": True, "warning_seconds": warning_s, "max_restarts": max_restarts},
    }
    path = project / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def hpc_tf(cluster: SlurmCluster, project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_as_researcher(cluster, ["hpc-tf", *args, "--site", "sandbox", "--set", f"runs_dir={project / 'runs'}"],
                             cwd=project, check=check, timeout=180)


def launch(cluster: SlurmCluster, project: Path, spec: Path) -> tuple[str, Path]:
    job_id = hpc_tf(cluster, project, "launch", spec.name).stdout.strip()
    (run_dir,) = [p for p in (project / "runs").iterdir() if p.name.startswith(spec.stem + "-")]
    return job_id, run_dir


def logs(run_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                     for p in sorted((run_dir / "logs").glob("*.out")))


def batch_log(run_dir: Path, job_id: str) -> str:
    return (run_dir / "logs" / f"batch-{job_id}.out").read_text(encoding="utf-8", errors="replace")


def task_log(run_dir: Path, job_id: str, rank: int) -> str:
    return (run_dir / "logs" / f"task-{job_id}-{rank}.out").read_text(encoding="utf-8", errors="replace")


def progress(project: Path, rank: int = 0) -> int:
    try:
        return int((project / "out" / f"progress-{rank}").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def runs(job_id: str) -> list[dict[str, str]]:
    """One record per run of the job (Slurm's accounting, oldest first)."""
    fields = ["State", "ExitCode", "Start", "End"]
    result = subprocess.run(["sacct", "--parsable2", "--noheader", "--allocations", "--duplicates",
                             f"--format={','.join(fields)}", f"--jobs={job_id}"],
                            capture_output=True, text=True, timeout=30, check=True)
    return [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines()]


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def status_row(cluster: SlurmCluster, project: Path, job_id: str) -> dict[str, Any]:
    (row,) = json.loads(hpc_tf(cluster, project, "status", job_id, "--json").stdout)
    return dict(row)


def assert_trained_like_the_reference(project: Path, reference: list[bytes]) -> None:
    for rank in (0, 1):
        assert weights(project / "out", rank) == reference, f"worker {rank}'s final weights differ"


def resumed_at(run_dir: Path, job_id: str) -> int:
    """The step the second run resumed from (the task log of rank 0, appended across runs)."""
    resumed = [line for line in task_log(run_dir, job_id, 0).splitlines() if "resuming fit from checkpoint" in line]
    assert len(resumed) == 1, resumed
    return int(resumed[0].split("ckpt-")[1].split(":")[0])


def assert_one_metrics_row_per_epoch(cluster: SlurmCluster, project: Path, run_dir: Path, job_id: str) -> None:
    """``hpc-tf metrics`` of a run interrupted after its first epoch: every epoch once, none lost, none twice.
    Epoch 0 is the first run's row when the second resumed after it, else the second run's (which trained it
    again and logged it again); the last epoch's loss is what the final run's own History printed."""
    shown = json.loads(hpc_tf(cluster, project, "metrics", str(run_dir), "--json").stdout)
    rows = [row for row in shown["rows"] if row["kind"] == "epoch"]
    assert [row["epoch"] for row in rows] == [0, 1, 2], shown["rows"]
    assert shown["attempts"] == 2 and shown["epochs_planned"] == 3, shown
    first_epoch_from = 0 if resumed_at(run_dir, job_id) >= STEPS // 3 else 1
    assert [row["attempt"] for row in rows] == [first_epoch_from, 1, 1], rows
    assert {row["job"] for row in rows} == {job_id}
    printed = [line for line in task_log(run_dir, job_id, 0).splitlines() if line.startswith("worker 0: loss per")]
    history = json.loads(printed[-1].partition("loss per epoch ")[2])
    assert rows[-1]["values"]["loss"] == history[-1], (rows, printed)


@pytest.fixture(scope="module")
def reference(slurm_cluster: SlurmCluster) -> list[bytes]:
    """The final weights of the same job, never interrupted."""
    project = make_project(slurm_cluster.scratch_dir / "tests" / f"preemption-reference-{os.getpid()}", slurm_cluster)
    job_id, run_dir = launch(slurm_cluster, project, write_spec(project, "reference"))
    status = wait_for_job(job_id, timeout=600)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)
    assert len(runs(job_id)) == 1
    assert weights(project / "out", 0) == weights(project / "out", 1)
    return weights(project / "out", 0)


@pytest.fixture
def project(scratch_dir: Path, slurm_cluster: SlurmCluster) -> Path:
    return make_project(scratch_dir, slurm_cluster)


def test_a_preemption_warning_checkpoints_requeues_and_resumes_bit_for_bit(
    slurm_cluster: SlurmCluster, project: Path, reference: list[bytes]
) -> None:
    job_id, run_dir = launch(slurm_cluster, project, write_spec(project, "warned", sleep=0.3, first_run_only=True))
    wait_until(lambda: progress(project) >= 40, "40 training steps (the first epoch logged)", 300)
    run_as_researcher(slurm_cluster, ["scancel", "--signal=USR1", "--batch", job_id], cwd=project)

    status = wait_for_job(job_id, timeout=600)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)
    assert_trained_like_the_reference(project, reference)

    first, second = runs(job_id)
    assert first["State"] == "REQUEUED"
    # the restart helper let it start again well before Slurm's ~2 minutes
    assert seconds_between(first["End"], second["Start"]) < 60, (first, second)
    batch = batch_log(run_dir, job_id)
    assert "hpc-tf: preemption warning, forwarding USR1 to the tasks" in batch
    assert "hpc-tf: job step finished with exit code 75" in batch
    assert "hpc-tf: the workers saved a checkpoint and asked to be requeued: requeueing the job (restart 1" in batch
    for rank in (0, 1):
        log = task_log(run_dir, job_id, rank)  # appended across runs
        assert "hpc-tf: SIGUSR1 received" in log
        assert "hpc-tf: resuming fit from checkpoint ckpt-" in log
    assert status_row(slurm_cluster, project, job_id)["restarts"] == 1
    assert_one_metrics_row_per_epoch(slurm_cluster, project, run_dir, job_id)


def test_the_time_limit_warning_checkpoints_requeues_and_resumes_bit_for_bit(
    slurm_cluster: SlurmCluster, project: Path, reference: list[bytes]
) -> None:
    # warning due 90 s into a 3-minute run (Slurm may send it up to a minute early); the first run is
    # slowed to ~150 s of training so the warning lands mid-training, the rerun is not slowed
    spec = write_spec(project, "timed", sleep=1.5, first_run_only=True, time_limit="3:00", warning_s=90)
    job_id, run_dir = launch(slurm_cluster, project, spec)
    status = wait_for_job(job_id, timeout=900)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)
    assert_trained_like_the_reference(project, reference)

    records = runs(job_id)
    assert len(records) >= 2 and records[0]["State"] == "REQUEUED", records
    assert all(record["State"] != "TIMEOUT" for record in records), records
    batch = batch_log(run_dir, job_id)
    assert "hpc-tf: preemption warning, forwarding USR1 to the tasks" in batch
    assert "asked to be requeued: requeueing the job (restart 1" in batch
    assert "hpc-tf: resuming fit from checkpoint ckpt-" in task_log(run_dir, job_id, 0)
    assert status_row(slurm_cluster, project, job_id)["restarts"] == len(records) - 1


def test_scontrol_requeue_mid_run_resumes_from_the_last_checkpoint(
    slurm_cluster: SlurmCluster, project: Path, reference: list[bytes]
) -> None:
    job_id, run_dir = launch(slurm_cluster, project, write_spec(project, "requeued", sleep=0.3, first_run_only=True))
    wait_until(lambda: progress(project) >= 45, "45 training steps (a periodic checkpoint at 40)", 300)
    checkpoints = run_dir / "output" / "checkpoints"
    assert (checkpoints / "ckpt-40.index").is_file()
    run_as_researcher(slurm_cluster, ["scontrol", "requeue", job_id], cwd=project)

    status = wait_for_job(job_id, timeout=600)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)
    assert_trained_like_the_reference(project, reference)
    first, second = runs(job_id)
    assert (first["State"], second["State"]) == ("REQUEUED", "COMPLETED")
    # Slurm requeued it itself; the batch shell saw that on its TERM and sent the restart helper, so the
    # job did not wait out the credential lifetime (~2 min)
    assert "hpc-tf: Slurm is requeueing the job (restart 1 of at most 3)" in batch_log(run_dir, job_id)
    assert seconds_between(first["End"], second["Start"]) < 60, (first, second)
    # from the periodic checkpoint, or from one the workers agreed on when Slurm's TERM reached them
    assert resumed_at(run_dir, job_id) >= 40
    assert status_row(slurm_cluster, project, job_id)["restarts"] == 1
    assert_one_metrics_row_per_epoch(slurm_cluster, project, run_dir, job_id)


def test_a_killed_worker_ends_the_run_promptly_and_the_job_resumes_and_completes(
    slurm_cluster: SlurmCluster, project: Path, reference: list[bytes]
) -> None:
    job_id, run_dir = launch(slurm_cluster, project, write_spec(project, "killed", sleep=0.3, first_run_only=True))
    wait_until(lambda: progress(project) >= 25, "25 training steps (a periodic checkpoint at 20)", 300)
    worker1 = int((project / "out" / "pid-1").read_text())
    os.kill(worker1, signal.SIGKILL)  # the Python process of rank 1 on node2 (the bootstrap exec'd into it)
    killed_at = time.time()

    status = wait_for_job(job_id, timeout=600)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)
    assert_trained_like_the_reference(project, reference)
    first, second = runs(job_id)
    assert (first["State"], second["State"]) == ("REQUEUED", "COMPLETED")
    # the first run ended within seconds of the kill (srun --kill-on-bad-exit; Slurm's KillWait), not at
    # the time limit
    assert datetime.fromisoformat(first["End"]).timestamp() - killed_at < 60, first
    batch = batch_log(run_dir, job_id)
    assert "a task was killed by signal" in batch
    assert "(a lost worker or node): requeueing the job (restart 1" in batch
    # from the newest periodic checkpoint: the surviving worker could not reach an agreed step
    resumed = [line for line in task_log(run_dir, job_id, 0).splitlines() if "resuming fit from checkpoint" in line]
    assert len(resumed) == 1, resumed
    step = int(resumed[0].split("ckpt-")[1].split(":")[0])
    assert step >= 20 and step % EVERY_STEPS == 0, resumed


def test_after_max_restarts_the_job_fails_and_says_so(slurm_cluster: SlurmCluster, project: Path) -> None:
    job_id, run_dir = launch(slurm_cluster, project, write_spec(project, "limited", sleep=0.3, max_restarts=1))
    wait_until(lambda: progress(project) >= 12, "12 training steps", 300)
    run_as_researcher(slurm_cluster, ["scancel", "--signal=USR1", "--batch", job_id], cwd=project)
    wait_until(lambda: task_log(run_dir, job_id, 0).count("resuming fit from checkpoint") == 1, "the restart", 300)
    time.sleep(3)  # a few steps into the second run
    run_as_researcher(slurm_cluster, ["scancel", "--signal=USR1", "--batch", job_id], cwd=project)

    status = wait_for_job(job_id, timeout=300)
    assert (status.state, status.exit_code) == ("FAILED", "75:0"), logs(run_dir)
    assert [record["State"] for record in runs(job_id)] == ["REQUEUED", "FAILED"]
    assert ("hpc-tf: the workers saved a checkpoint and asked to be requeued, but the job has been restarted "
            "1 time(s), the most preemption.max_restarts (1) allows: not requeueing") in batch_log(run_dir, job_id)
    row = status_row(slurm_cluster, project, job_id)
    assert (row["state"], row["restarts"], row["exit_code"]) == ("FAILED", 1, 75)
    assert row["info"] == ("exit code 75; gave up after 1 restart(s) (preemption.max_restarts): the workers saved "
                           "a checkpoint and asked to be requeued")  # status says why, as on the local launcher
