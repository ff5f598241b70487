"""Setup steps and srun options on the real test cluster, as the non-root user.

A job line runs once, in the batch shell on the job's first node, and what it exports reaches the
tasks; a ``{node: LINE}`` step runs once on every node; a step that fails (or does not parse) ends
the job FAILED with ``hpc-tf: setup failed: setup[N] …`` before any task starts; ``srun_extra`` reaches
the tasks' srun (``--label`` prefixes each line a task prints with its rank).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from tests.conftest import JobStatus, SlurmCluster

pytestmark = pytest.mark.slurm

Run = Callable[..., subprocess.CompletedProcess[str]]
FUNCTIONS = Path(__file__).resolve().parent.parent / "fixtures" / "functions"
# each task says who it is and what the job's setup exported; writes 'ran' so a test sees it started
TASK = ("import os; open('ran', 'a').close(); "
        "print('task', os.environ['SLURM_PROCID'], 'sees', os.environ.get('FROM_SETUP'), flush=True)")


def launch(researcher_run: Run, project: Path, spec: dict[str, object]) -> tuple[str, Path]:
    """Launch ``spec`` (2 nodes x 2 tasks, no GPUs) from ``project``; the job id and its run directory."""
    spec = {"command": ["python3", "-c", TASK], "resources": {"nodes": 2, "tasks_per_node": 2, "partition": "gpu",
                                                               "time": "2:00"}, **spec}
    (project / "job.yaml").write_text(yaml.safe_dump(spec))
    launched = researcher_run(["hpc-tf", "launch", "job.yaml", "--site", "sandbox", "--set",
                               f"runs_dir={project / 'runs'}"], cwd=project, timeout=120)
    (run_dir,) = sorted((project / "runs").glob("*"))
    return launched.stdout.strip(), run_dir


def logs(researcher_run: Run, project: Path, run_dir: Path, *task: str) -> str:
    argv = ["hpc-tf", "logs", str(run_dir), *(("--task", task[0]) if task else ())]
    return str(researcher_run(argv, cwd=project).stdout)


def lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def test_job_lines_run_once_in_the_batch_shell_node_lines_once_per_node_and_srun_extra_reaches_the_tasks(
    researcher_run: Run, scratch_dir: Path, wait_for_job: Callable[..., JobStatus]
) -> None:
    researcher_run(["mkdir", "steps-dir"], cwd=scratch_dir)
    job_id, run_dir = launch(researcher_run, scratch_dir, {
        "name": "steps",
        "setup": [
            "export FROM_SETUP=batch-shell; cd steps-dir",  # export and cd last for the job
            "hostname >> job-step.txt",
            {"node": 'echo "$(hostname) $FROM_SETUP $SLURM_JOB_ID" >> ../node-step.txt'},
        ],
        "srun_extra": ["-l", "--unbuffered"],
    })
    assert wait_for_job(job_id).state == "COMPLETED", logs(researcher_run, scratch_dir, run_dir)

    node_lines = sorted(lines(scratch_dir / "node-step.txt"))
    # once on each of the job's two nodes, in the workdir the job line moved to, with its environment
    assert [line.split() for line in node_lines] == [["node1", "batch-shell", job_id], ["node2", "batch-shell", job_id]]
    # once, in the batch shell: on the job's first node, in the directory the first step entered
    (batch_host,) = lines(scratch_dir / "steps-dir" / "job-step.txt")
    assert batch_host in ("node1", "node2") and not (scratch_dir / "job-step.txt").exists()
    for rank in range(4):
        # --label: srun prefixes every line of task N with "N: "
        assert f"{rank}: task {rank} sees batch-shell" in logs(researcher_run, scratch_dir, run_dir, str(rank))


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("test -d no-such-dir", "setup[1] exited with status 1: test -d no-such-dir: fix it under setup in job.yaml"),
        ("if then fi", "setup[1] exited with status 2: if then fi: fix it under setup in job.yaml"),
        ({"node": 'test "$(hostname)" != node2'},
         "setup[1] (once per node) exited with status 1: test \"$(hostname)\" != node2: fix it under setup"),
    ],
    ids=["job-line", "syntax-error", "node-line-on-one-node"],
)
def test_a_failing_step_ends_the_job_failed_naming_it_before_any_task_starts(
    researcher_run: Run, scratch_dir: Path, wait_for_job: Callable[..., JobStatus], step: object, message: str
) -> None:
    job_id, run_dir = launch(researcher_run, scratch_dir, {
        "name": "failing-step", "setup": ["true", step, "touch later-step-ran"],
        "preemption": {"enabled": True, "warning_seconds": 30, "max_restarts": 2},  # and nothing requeues it
    })
    job = wait_for_job(job_id)
    log = logs(researcher_run, scratch_dir, run_dir)
    assert (job.state, job.exit_code) == ("FAILED", "1:0"), log
    (row,) = json.loads(researcher_run(["hpc-tf", "status", job_id, "--json", "--site", "sandbox", "--set",
                                        f"runs_dir={scratch_dir / 'runs'}"], cwd=scratch_dir).stdout)
    assert (row["state"], row["restarts"]) == ("FAILED", 0), (row, log)
    assert f"hpc-tf: setup failed: {message}" in log
    assert "job step finished" not in log
    assert not (scratch_dir / "ran").exists() and not (scratch_dir / "later-step-ran").exists()


def test_a_function_job_runs_the_same_steps_through_submitit(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster
) -> None:
    """submit_function takes the same spec: its steps become submitit's setup lines, before its srun."""
    shutil.copy(FUNCTIONS / "small_functions.py", scratch_dir)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True, timeout=30)
    spec = {"name": "fnsteps", "resources": {"nodes": 2, "tasks_per_node": 1, "time": "5:00"},
            "setup": ["export FROM_SETUP=batch-shell", {"node": f"hostname >> {scratch_dir / 'node-step.txt'}"}]}
    result = researcher_run([sys.executable, "small_functions.py", "setup_seen", json.dumps(spec), "sandbox",
                             "--set", f"runs_dir={scratch_dir / 'runs'}", "--set", f"python={sys.executable}"],
                            cwd=scratch_dir, env={"PYTHONPATH": str(scratch_dir)}, timeout=300)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["results"] == {"value": [{"rank": 0, "from_setup": "batch-shell", "x": 3},
                                           {"rank": 1, "from_setup": "batch-shell", "x": 3}]}, report
    assert sorted(lines(scratch_dir / "node-step.txt")) == ["node1", "node2"]
