"""Setup steps under ``hpc-tf launch --site local``: the same script as on the cluster, with no srun for a
node step, which runs once on this one machine (not once per emulated node). No Slurm, no TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

TASK = "import os; print('task', os.environ['SLURM_PROCID'], 'sees', os.environ.get('FROM_SETUP'))"


def launch(project: Path, spec: dict[str, object]) -> subprocess.CompletedProcess[str]:
    (project / "job.yaml").write_text(yaml.safe_dump({
        "command": [sys.executable, "-c", TASK], "resources": {"nodes": 2, "tasks_per_node": 1, "time": "2:00"},
        **spec}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_"))}
    return subprocess.run([sys.executable, "-m", "hpc.cli", "launch", "job.yaml", "--wait", "--site", "local",
                           "--set", f"runs_dir={project / 'runs'}"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False)


def logs(project: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(project.glob("runs/*/logs/*.out")))


def test_node_steps_run_once_here_and_job_lines_reach_the_tasks(tmp_path: Path) -> None:
    launched = launch(tmp_path, {"name": "local-steps", "setup": [
        "export FROM_SETUP=batch-shell", {"node": "echo node-step >> node-step.txt"}]})
    assert launched.returncode == 0, launched.stderr + logs(tmp_path)
    assert (tmp_path / "node-step.txt").read_text() == "node-step\n"
    assert "task 0 sees batch-shell" in logs(tmp_path) and "task 1 sees batch-shell" in logs(tmp_path)


def test_a_failing_step_fails_the_local_job_before_its_tasks(tmp_path: Path) -> None:
    launched = launch(tmp_path, {"name": "local-failing-step", "setup": [{"node": "exit 4"}]})
    assert launched.returncode != 0
    assert ("hpc-tf: setup failed: setup[0] (once per node) exited with status 4: exit 4: fix it under setup in "
            "job.yaml") in logs(tmp_path)
    assert "task 0 sees" not in logs(tmp_path)
