"""The bootstrap on the test cluster: an unmodified Keras 3 MWMS script across two nodes.

The batch script is written by hand (not by `hpc-tf launch`) and starts every task the way the
rendered script does: ``srun ... python runtime/bootstrap.py --resolved resolved.json -- CMD``.
The cluster is used in whatever cgroup mode it is in; the expected device lists follow it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hpc.runtime import install_into

if TYPE_CHECKING:
    from conftest import JobStatus, SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.tf]

Run = Callable[..., subprocess.CompletedProcess[str]]
WaitForJob = Callable[..., "JobStatus"]

SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "tf" / "mwms_fit.py"
RECORD_PREFIX = "hpc-tf bootstrap: {"

JOB = """\
#!/bin/bash
#SBATCH --job-name=runtime-{name}
#SBATCH --partition={partition}
#SBATCH --nodes=2
#SBATCH --ntasks-per-node={tasks_per_node}
#SBATCH --gres=gpu:{gpus_per_node}
#SBATCH --time=10
#SBATCH --output=batch-%j.out
srun --kill-on-bad-exit=1 --output=task-%j-%t.out \\
  python runtime/bootstrap.py --resolved resolved.json -- {command}
"""


def prepare(
    run_dir: Path,
    cluster: SlurmCluster,
    *,
    name: str,
    tasks_per_node: int,
    gpus_per_node: int,
    runtime: dict[str, object],
    command: str,
) -> Path:
    install_into(run_dir / "runtime")
    shutil.copy(SCRIPT, run_dir / SCRIPT.name)
    (run_dir / "resolved.json").write_text(json.dumps({"runtime": runtime}), encoding="utf-8")
    script = JOB.format(
        name=name,
        partition=cluster.gpu_partition,
        tasks_per_node=tasks_per_node,
        gpus_per_node=gpus_per_node,
        command=command,
    )
    (run_dir / "job.sbatch").write_text(script, encoding="utf-8")
    return run_dir / "job.sbatch"


def submit(run: Run, run_dir: Path) -> str:
    return run(["sbatch", "--parsable", "job.sbatch"], cwd=run_dir).stdout.strip().split(";")[0]


def records(run_dir: Path, job_id: str, ranks: range) -> list[dict[str, Any]]:
    found = []
    for rank in ranks:
        log = (run_dir / f"task-{job_id}-{rank}.out").read_text(encoding="utf-8")
        (line,) = [line for line in log.splitlines() if line.startswith(RECORD_PREFIX)]
        found.append(json.loads(line.partition(": ")[2]))
    return found


def logs(run_dir: Path) -> str:
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
        for path in sorted(run_dir.glob("*.out"))
    )


def assert_same_weights(out: Path, ranks: range) -> None:
    import numpy as np

    weights = [np.load(out / f"weights-{rank}.npz") for rank in ranks]
    for name in weights[0].files:
        assert all(w[name].tobytes() == weights[0][name].tobytes() for w in weights), name


def test_two_nodes_one_task_each_train_identically(
    slurm_cluster: SlurmCluster, researcher_run: Run, scratch_dir: Path, wait_for_job: WaitForJob
) -> None:
    prepare(
        scratch_dir,
        slurm_cluster,
        name="2x1",
        tasks_per_node=1,
        gpus_per_node=2,
        runtime={"gpus_per_node": 2, "coordination_timeout_s": 120},
        command="python mwms_fit.py out",
    )
    job_id = submit(researcher_run, scratch_dir)
    status = wait_for_job(job_id, timeout=600)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(scratch_dir)

    assert_same_weights(scratch_dir / "out", range(2))
    assert (scratch_dir / "out" / "saved_model" / "saved_model.pb").is_file()
    tasks = records(scratch_dir, job_id, range(2))
    assert sorted(str(task["node"]) for task in tasks) == sorted(slurm_cluster.gpu_nodes)
    assert all(task["hostname"] == task["node"] for task in tasks)  # each rank runs where we said
    configs = [json.loads(task["env"]["TF_CONFIG"]) for task in tasks]
    workers = configs[0]["cluster"]["worker"]
    assert [w.rpartition(":")[0] for w in workers] == [task["node"] for task in tasks]
    assert len({w.rpartition(":")[2] for w in workers}) == 1  # one task per node: the job's port
    for task in tasks:
        # the task saw exactly its share: kept as Slurm gave it (0,1 with cgroups, physical ids without)
        assert task["env"]["CUDA_VISIBLE_DEVICES"] == task["inherited_cuda_visible_devices"]
        assert len(task["env"]["CUDA_VISIBLE_DEVICES"].split(",")) == 2


def test_two_tasks_per_node_each_get_their_own_gpu(
    slurm_cluster: SlurmCluster, researcher_run: Run, scratch_dir: Path, wait_for_job: WaitForJob
) -> None:
    prepare(
        scratch_dir,
        slurm_cluster,
        name="2x2",
        tasks_per_node=2,
        gpus_per_node=2,
        runtime={"gpus_per_task": 1, "coordination_timeout_s": 180},
        command="python mwms_fit.py out --epochs 1",
    )
    job_id = submit(researcher_run, scratch_dir)
    status = wait_for_job(job_id, timeout=900)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(scratch_dir)

    assert_same_weights(scratch_dir / "out", range(4))
    tasks = records(scratch_dir, job_id, range(4))
    by_node: dict[str, list[str]] = {}
    assert all(task["hostname"] == task["node"] for task in tasks)
    for task in tasks:
        devices = task["env"]["CUDA_VISIBLE_DEVICES"]
        assert len(devices.split(",")) == 1
        assert devices in task["inherited_cuda_visible_devices"].split(",")
        by_node.setdefault(str(task["node"]), []).append(devices)
    assert all(len(set(devices)) == 2 for devices in by_node.values()), by_node  # no shared GPU on a node


def test_a_worker_that_never_starts_fails_the_job_within_the_bound(
    slurm_cluster: SlurmCluster, researcher_run: Run, scratch_dir: Path, wait_for_job: WaitForJob
) -> None:
    bound_s = 20
    # rank 1 hangs before its Python starts (a stuck container, a dead file system ...)
    command = "bash -c 'if [ \"$SLURM_PROCID\" = 1 ]; then exec sleep 3000; fi; exec python mwms_fit.py out'"
    prepare(
        scratch_dir,
        slurm_cluster,
        name="missing",
        tasks_per_node=1,
        gpus_per_node=1,
        runtime={"gpus_per_node": 1, "coordination_timeout_s": bound_s},
        command=command,
    )
    started = time.monotonic()
    job_id = submit(researcher_run, scratch_dir)
    wait_for_job(job_id, timeout=300, until=lambda status: status.state != "PENDING")
    running_at = time.monotonic()
    status = wait_for_job(job_id, timeout=300)
    assert status.state == "FAILED", logs(scratch_dir)
    # TF import, the bound, TF's RPC deadline: a minute, not the 10-minute time limit
    assert time.monotonic() - running_at < bound_s + 60, time.monotonic() - started
    (rank0,) = records(scratch_dir, job_id, range(1))
    worker1 = json.loads(rank0["env"]["TF_CONFIG"])["cluster"]["worker"][1]
    expected = (
        f"the TensorFlow cluster did not form within {bound_s} s: worker 1 (Slurm rank 1 on host "
        f"{worker1.rpartition(':')[0]}, address {worker1}) never joined"
    )
    assert expected in (scratch_dir / f"task-{job_id}-0.out").read_text(encoding="utf-8")
