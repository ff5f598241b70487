"""``hpc-tf launch --site local``: the embedded default runs the same job as the cluster, on this machine.

The runtime tests of the Slurm path, through the local launcher: an unmodified Keras ``model.fit``
script as two workers on two emulated nodes ends with bitwise-identical weights; the time-limit
warning makes the workers checkpoint, the job is requeued and ends with the weights of the
uninterrupted run, bit for bit. Then what a user does with a local job: status, logs, cancel, a
failing worker. Nothing here needs Slurm; the witnesses are the processes, their logs and outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration._waiting import wait_until, weights

pytestmark = pytest.mark.tf

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tf"
RECORD_PREFIX = "hpc-tf bootstrap: {"
STEPS = 96  # preempt_fit.py: 3 epochs x 32 batches


def hpc_tf(project: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run([sys.executable, "-m", "hpc.cli", *args, "--site", "local",
                             "--set", f"runs_dir={project / 'runs'}"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"hpc-tf {' '.join(args)} exited {result.returncode}\n{result.stderr}\n{logs(project)}")
    return result


def write_spec(project: Path, name: str, command: list[str], resources: dict[str, Any] | None = None,
               **extra: Any) -> Path:
    defaults = {"nodes": 2, "tasks_per_node": 1, "gpus_per_node": 2, "time": "10:00"}
    spec = {"name": name, "command": command, "resources": {**defaults, **(resources or {})}, **extra}
    path = project / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run_dir_of(project: Path, name: str) -> Path:
    (run_dir,) = [p for p in (project / "runs").iterdir() if p.name.startswith(name + "-")]
    return run_dir


def logs(project: Path) -> str:
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted(project.glob("runs/*/logs/*.out")))


def status_row(project: Path, job_id: str) -> dict[str, Any]:
    (row,) = json.loads(hpc_tf(project, "status", job_id, "--json").stdout)
    return dict(row)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def make_project(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / "preempt_fit.py", directory / "preempt_fit.py")
    return directory


def preemptible_spec(project: Path, name: str, *extra_args: str, time_limit: str, warning_s: int) -> Path:
    return write_spec(project, name, ["python3", "preempt_fit.py", "out", *extra_args],
                      tf={"coordination_timeout": 120}, checkpoint={"every_steps": 10},
                      preemption={"enabled": True, "warning_seconds": warning_s, "max_restarts": 3},
                      resources={"time": time_limit})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An uninterrupted 2-worker run of the preemptible script: its project and job id."""
    project = make_project(tmp_path_factory.mktemp("local-reference"))
    spec = preemptible_spec(project, "reference", time_limit="10:00", warning_s=60)
    job_id = hpc_tf(project, "launch", spec.name, "--wait").stdout.strip()
    return project, job_id


def test_an_unmodified_fit_script_trains_identically_on_two_emulated_nodes(reference: tuple[Path, str]) -> None:
    project, job_id = reference
    assert weights(project / "out", 0) == weights(project / "out", 1)  # bitwise identical
    row = status_row(project, job_id)
    assert (row["state"], row["exit_code"], row["nodes"], row["gpus"]) == ("COMPLETED", 0, "local1,local2", 4)

    # each task started through the bootstrap with the variables of a Slurm step on its own node
    run_dir = Path(row["run_dir"])
    records = []
    for rank in (0, 1):
        text = (run_dir / "logs" / f"task-{job_id}-{rank}.out").read_text()
        (line,) = [ln for ln in text.splitlines() if ln.startswith(RECORD_PREFIX)]
        records.append(json.loads(line.partition(": ")[2]))
    assert [(r["rank"], r["node"], r["job_id"]) for r in records] == [(0, "local1", int(job_id)),
                                                                      (1, "local2", int(job_id))]
    workers = json.loads(records[0]["env"]["TF_CONFIG"])["cluster"]["worker"]
    assert len(set(workers)) == 2 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [json.loads(r["env"]["TF_CONFIG"])["task"]["index"] for r in records] == [0, 1]
    # each emulated node has its own block of the job's GPU ids, kept whole by its one task
    assert [r["inherited_cuda_visible_devices"] for r in records] == ["0,1", "2,3"]
    assert [r["env"]["CUDA_VISIBLE_DEVICES"] for r in records] == ["0,1", "2,3"]
    shown = hpc_tf(project, "logs", job_id, "--task", "1").stdout
    assert '"node": "local2"' in shown
    # worker 0 recorded each epoch's logs in the run directory, the very values of its History
    task_0 = (run_dir / "logs" / f"task-{job_id}-0.out").read_text().splitlines()
    (said,) = [ln for ln in task_0 if ln.startswith("worker 0: loss per epoch ")]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["kind"], r["epoch"], r["attempt"], r["job"]) for r in rows] == [("epoch", e, 0, job_id)
                                                                               for e in range(3)]
    assert [r["values"]["loss"] for r in rows] == json.loads(said.removeprefix("worker 0: loss per epoch "))


def test_the_time_limit_warning_checkpoints_requeues_and_resumes_bit_for_bit(
    tmp_path: Path, reference: tuple[Path, str]
) -> None:
    # USR1 is due 40 s into a 2-minute limit; the first run is slowed to ~70 s of training so the
    # warning lands mid-training; the rerun is not slowed and has a fresh limit
    project = make_project(tmp_path)
    spec = preemptible_spec(project, "timed", "--sleep", "0.75", "--first-run-only", time_limit="2:00", warning_s=80)
    job_id = hpc_tf(project, "launch", spec.name, "--wait").stdout.strip()
    ref_project, _ = reference
    for rank in (0, 1):
        assert weights(project / "out", rank) == weights(ref_project / "out", 0), f"worker {rank} differs"

    run_dir = run_dir_of(project, "timed")
    batch = (run_dir / "logs" / f"batch-{job_id}.out").read_text()
    assert "hpc-tf: preemption warning, forwarding USR1 to the tasks" in batch
    assert "asked to be requeued: requeueing the job (restart 1" in batch
    assert "hpc-tf: restart 1 of at most 3: training resumes" in batch
    assert "hpc-tf: resuming fit from checkpoint ckpt-" in (run_dir / "logs" / f"task-{job_id}-0.out").read_text()
    row = status_row(project, job_id)
    assert (row["state"], row["restarts"] >= 1) == ("COMPLETED", True)


def test_cancel_ends_every_process_of_a_running_job(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "sleeper", ["python3", "-c", "import os, time; print(os.getpid(), flush=True); "
                                            "time.sleep(600)"], resources={"gpus_per_node": 0})
    job_id = hpc_tf(tmp_path, "launch", spec.name).stdout.strip()
    run_dir = run_dir_of(tmp_path, "sleeper")
    task_logs = [run_dir / "logs" / f"task-{job_id}-{rank}.out" for rank in (0, 1)]
    wait_until(lambda: all(p.is_file() and p.read_text().strip().splitlines()[-1:] != [] and
                           p.read_text().strip().splitlines()[-1].isdigit() for p in task_logs), "both tasks")
    pids = [int(p.read_text().strip().splitlines()[-1]) for p in task_logs]
    row = status_row(tmp_path, job_id)
    assert (row["state"], row["nodes"]) == ("RUNNING", "local1,local2")

    hpc_tf(tmp_path, "cancel", job_id)
    wait_until(lambda: status_row(tmp_path, job_id)["state"] == "CANCELLED", "the job to be cancelled")
    wait_until(lambda: not any(alive(pid) for pid in pids), "the tasks to end", timeout=45)


def test_a_failing_worker_stops_the_other_and_the_job_fails_with_its_exit_code(tmp_path: Path) -> None:
    script = ("import os, sys, time; rank = int(os.environ['SLURM_PROCID']); "
              "time.sleep(600) if rank == 0 else sys.exit(7)")
    spec = write_spec(tmp_path, "failing", ["python3", "-c", script], resources={"gpus_per_node": 0})
    result = hpc_tf(tmp_path, "launch", spec.name, "--wait", check=False, timeout=120)
    assert result.returncode == 7, result.stderr
    job_id = result.stdout.strip()
    row = status_row(tmp_path, job_id)
    assert (row["state"], row["exit_code"], row["info"]) == ("FAILED", 7, "exit code 7")
    batch = (run_dir_of(tmp_path, "failing") / "logs" / f"batch-{job_id}.out").read_text()
    assert "task 1: exited with exit code 7; stopping the others" in batch
    assert "hpc-tf: job step finished with exit code 7" in batch


def test_a_job_with_a_missing_venv_fails_naming_the_venv_and_never_runs_its_command(tmp_path: Path) -> None:
    venv = tmp_path / "venvs" / "not made"
    spec = write_spec(tmp_path, "no-venv", ["python3", "-c", "open('ran', 'w')"], resources={"gpus_per_node": 0},
                      environment={"venv": str(venv)},
                      preemption={"enabled": True, "warning_seconds": 60, "max_restarts": 3})
    result = hpc_tf(tmp_path, "launch", spec.name, "--wait", check=False, timeout=120)
    assert result.returncode == 1, result.stderr
    job_id = result.stdout.strip()
    row = status_row(tmp_path, job_id)
    assert (row["state"], row["exit_code"], row["restarts"]) == ("FAILED", 1, 0)  # a setup failure is not requeued
    batch = (run_dir_of(tmp_path, "no-venv") / "logs" / f"batch-{job_id}.out").read_text()
    assert (f"hpc-tf: setup failed: venv {venv} cannot be activated (no {venv}/bin/activate): "
            "check environment.venv in job.yaml") in batch
    assert "job step finished" not in batch and not (tmp_path / "ran").exists()


def test_a_job_that_used_up_max_restarts_says_so_and_shows_its_current_runs_time(tmp_path: Path) -> None:
    # every run: the workers work ~4 s, then ask to be requeued, as checkpointing workers do on a warning
    spec = write_spec(tmp_path, "gives-up", ["python3", "-c", "import sys, time; time.sleep(4); sys.exit(75)"],
                      resources={"gpus_per_node": 0},
                      preemption={"enabled": True, "warning_seconds": 60, "max_restarts": 2})
    result = hpc_tf(tmp_path, "launch", spec.name, "--wait", check=False, timeout=300)
    assert result.returncode == 75, result.stderr
    job_id = result.stdout.strip()
    gave_up = ("gave up after 2 restart(s) (preemption.max_restarts): the workers saved a checkpoint and asked "
               "to be requeued")
    assert f"job {job_id} ended: FAILED exit code 75; {gave_up}" in " ".join(result.stderr.split())
    row = status_row(tmp_path, job_id)
    assert (row["state"], row["exit_code"], row["restarts"], row["info"]) == ("FAILED", 75, 2,
                                                                              f"exit code 75; {gave_up}")
    assert isinstance(row["elapsed_s"], int) and 4 <= row["elapsed_s"] < 10, row  # the 3 runs together: >= 12 s
    assert f"00:00:{row['elapsed_s']:02d}/00:10:00" in hpc_tf(tmp_path, "status", job_id).stdout


def test_status_of_a_job_whose_supervisor_is_gone_says_so(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "orphan", ["sleep", "600"], resources={"gpus_per_node": 0})
    job_id = hpc_tf(tmp_path, "launch", spec.name).stdout.strip()
    record = json.loads((tmp_path / "runs" / ".local-jobs" / f"{job_id}.json").read_text())
    os.kill(record["supervisor_pid"], 9)  # what a reboot does to a local job
    wait_until(lambda: not alive(record["supervisor_pid"]), "the supervisor to die")
    row = status_row(tmp_path, job_id)
    assert row["state"] == "FAILED"
    os.killpg(record["batch_pid"], 9)  # the batch shell leads the job's process group
