"""A ``submit_function`` job whose worker is killed requeues under the same policy as a launched job.

The launched-job side is tests/integration/test_preemption_slurm.py
(``test_a_killed_worker_ends_the_run_promptly_and_the_job_resumes_and_completes``); both end in
hpc/runtime/node/requeue.py through the batch driver. Witnesses: Slurm's accounting (one record per
run, ``sacct --duplicates``), the batch log, and the function's return values from the second run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.conftest import JobStatus, SlurmCluster

pytestmark = pytest.mark.slurm

Run = Callable[..., subprocess.CompletedProcess[str]]
FUNCTION = Path(__file__).resolve().parent.parent / "fixtures" / "functions" / "killed_once.py"


def runs(job_id: str) -> list[str]:
    """The state of every run of the job (Slurm's accounting, oldest first)."""
    result = subprocess.run(["sacct", "--parsable2", "--noheader", "--allocations", "--duplicates",
                             "--format=State", f"--jobs={job_id}"], capture_output=True, text=True, timeout=30,
                            check=True)
    return result.stdout.split()


def test_a_function_job_whose_worker_is_killed_is_requeued_and_completes(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster, wait_for_job: Callable[..., JobStatus],
) -> None:
    shutil.copy(FUNCTION, scratch_dir / FUNCTION.name)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True, timeout=30)
    spec = {"name": "fn-killed", "resources": {"nodes": 2, "tasks_per_node": 1, "time": "10:00"},
            "preemption": {"enabled": True, "warning_seconds": 60, "max_restarts": 2}}
    argv = [sys.executable, str(scratch_dir / FUNCTION.name), json.dumps(spec), "sandbox",
            "--set", f"runs_dir={scratch_dir / 'runs'}", "--set", f"python={sys.executable}"]
    result = researcher_run(argv, cwd=scratch_dir, env={"PYTHONPATH": str(scratch_dir)}, timeout=600)
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    report: dict[str, Any] = json.loads(line)
    run_dir = Path(report["run_dir"])
    batch = (run_dir / "logs" / f"batch-{report['job_id']}.out").read_text(errors="replace")
    assert "error" not in report, report["error"] + batch

    status = wait_for_job(report["job_id"], timeout=120)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), batch
    assert runs(report["job_id"]) == ["REQUEUED", "COMPLETED"]
    # the policy's own words, as a launched job's batch log has them
    assert "hpc-tf: a task was killed by signal 9 (a lost worker or node): requeueing the job (restart 1 of at " \
           "most 2)" in batch
    assert report["results"] == [{"rank": 0, "restarts": 1}, {"rank": 1, "restarts": 1}]
