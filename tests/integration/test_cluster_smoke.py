"""The test cluster behaves like a GPU cluster: a 2-node GPU job of the non-root user runs with two
GPUs per task in both cgroup modes, and jobs beyond the account's GPU quota pend with AssocGrpGRES.

The cgroup modes are switched by restarting the cluster (tests/cluster/up --cgroup=...); the mode the
cluster had before this module is restored afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import hpc

if TYPE_CHECKING:
    from conftest import JobStatus, SlurmCluster

pytestmark = pytest.mark.slurm

Run = Callable[..., subprocess.CompletedProcess[str]]
WaitForJob = Callable[..., "JobStatus"]

# Each task records where it ran and what Slurm told it. `python` is the test venv's (first on PATH).
RECORD_TASK = """\
import json, os, socket, sys
import hpc
print(json.dumps({
    "hostname": socket.gethostname(),
    "python": sys.executable,
    "hpc_file": hpc.__file__,
    "env": {k: v for k, v in os.environ.items() if k.startswith("SLURM") or k == "CUDA_VISIBLE_DEVICES"},
}))
"""
TWO_NODE_JOB = """\
#!/bin/bash
#SBATCH --job-name=smoke-2node
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:2
#SBATCH --time=2
#SBATCH --output=batch-%j.out
srun --output=task-%j-%t.json python record_task.py
"""


def submit(run: Run, cwd: Path, *sbatch_args: str) -> str:
    out = run(["sbatch", "--parsable", *sbatch_args], cwd=cwd).stdout.strip()
    return out.split(";")[0]  # "id" or "id;cluster"


def cancel(run: Run, cwd: Path, wait_for_jobs: Callable[..., object], job_ids: Sequence[str]) -> None:
    """Cancel and wait until they are gone, so the next test finds the quota free."""
    run(["scancel", *job_ids], cwd=cwd)
    wait_for_jobs(list(job_ids), timeout=60)


def pending_for(reason: str) -> Callable[[JobStatus], bool]:
    return lambda status: status.state == "PENDING" and status.reason == reason


@pytest.fixture(scope="module")
def restore_cgroup_mode(
    slurm_cluster: SlurmCluster, restart_cluster: Callable[[str], SlurmCluster]
) -> Iterator[None]:
    yield
    restart_cluster("1" if slurm_cluster.cgroup else "0")


@pytest.fixture(scope="module", params=["1", "0"], ids=["cgroup", "nocgroup"])
def cluster_in_mode(
    request: pytest.FixtureRequest, restore_cgroup_mode: None, restart_cluster: Callable[[str], SlurmCluster]
) -> SlurmCluster:
    cluster = restart_cluster(request.param)
    assert cluster.cgroup == (request.param == "1")
    return cluster


def test_two_node_gpu_job_sees_two_gpus_per_task(
    cluster_in_mode: SlurmCluster, researcher_run: Run, scratch_dir: Path, wait_for_job: WaitForJob
) -> None:
    cluster = cluster_in_mode
    (scratch_dir / "record_task.py").write_text(RECORD_TASK)
    (scratch_dir / "job.sbatch").write_text(TWO_NODE_JOB)

    job_id = submit(researcher_run, scratch_dir, f"--partition={cluster.gpu_partition}", "job.sbatch")
    status = wait_for_job(job_id, timeout=120)

    batch_log = (scratch_dir / f"batch-{job_id}.out").read_text()
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), batch_log
    tasks = [json.loads((scratch_dir / f"task-{job_id}-{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(task["hostname"] for task in tasks) == sorted(cluster.gpu_nodes)
    for rank, task in enumerate(tasks):
        env = task["env"]
        assert env["SLURM_PROCID"] == str(rank)
        assert env["SLURMD_NODENAME"] == task["hostname"]  # each node really is its own host
        assert env["SLURM_JOB_USER"] == cluster.user
        physical = env["SLURM_JOB_GPUS"].split(",")
        assert len(physical) == 2
        assert all(0 <= int(index) < cluster.gpus_per_node for index in physical)
        # with device cgroups Slurm renumbers what the task sees; without, it sees the physical indices
        expected = ["0", "1"] if cluster.cgroup else physical
        assert env["CUDA_VISIBLE_DEVICES"].split(",") == expected
        # jobs use the installation the tests run from (readable by the cluster user), not a checkout
        assert task["python"].startswith(sys.prefix)
        assert Path(task["hpc_file"]) == Path(hpc.__file__)


def test_job_beyond_the_whole_quota_pends_assocgrpgres(
    slurm_cluster: SlurmCluster,
    researcher_run: Run,
    scratch_dir: Path,
    wait_for_job: WaitForJob,
    wait_for_jobs: Callable[..., object],
) -> None:
    # Slurm accepts it at submit time (no DenyOnLimit) and it can never start
    gpus = slurm_cluster.gpus_per_node
    assert 2 * gpus > slurm_cluster.gpu_quota
    job_id = submit(researcher_run, scratch_dir, "-N2", f"--gres=gpu:{gpus}", "-o/dev/null", "--wrap=true")
    try:
        wait_for_job(job_id, timeout=30, until=pending_for("AssocGrpGRES"))
    finally:
        cancel(researcher_run, scratch_dir, wait_for_jobs, [job_id])


def test_job_waits_while_the_quota_is_in_use(
    slurm_cluster: SlurmCluster,
    researcher_run: Run,
    scratch_dir: Path,
    wait_for_job: WaitForJob,
    wait_for_jobs: Callable[..., object],
) -> None:
    whole_quota = f"--gres=gpu:{slurm_cluster.gpu_quota}"
    holder = submit(researcher_run, scratch_dir, "-N1", whole_quota, "-o/dev/null", "--wrap=sleep 300")
    jobs = [holder]
    try:
        wait_for_job(holder, timeout=30, until=lambda status: status.state == "RUNNING")
        jobs.append(submit(researcher_run, scratch_dir, "--gres=gpu:1", "-o/dev/null", "--wrap=true"))
        wait_for_job(jobs[1], timeout=30, until=pending_for("AssocGrpGRES"))
    finally:
        cancel(researcher_run, scratch_dir, wait_for_jobs, jobs)
