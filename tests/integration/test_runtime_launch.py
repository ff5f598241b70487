"""The node runtime through ``hpc-tf launch``, as the researcher types it: an unmodified Keras 3
``model.fit`` script with MultiWorkerMirroredStrategy trains across the test cluster's two nodes.

Witnesses independent of hpc-tf: Slurm's accounting for the outcome, ``scontrol show job -d`` for
which GPUs the job holds on each node, and the devices cgroup itself (which fake GPU device files a
task may open; ``tests/fixtures/tf/record_devices.py``). The bootstrap's stderr record line says
what hpc-tf set. This module is the one that switches the cluster's cgroup mode (briefly, restored).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from tests.conftest import JobStatus, SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.tf]

Run = Callable[..., subprocess.CompletedProcess[str]]
WaitForJob = Callable[..., "JobStatus"]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tf"
RECORD_PREFIX = "hpc-tf bootstrap: {"
# tests/cluster/up makes the fake GPU device files here, beside state.env
FAKE_GPU_DIR = Path("/run/hpc-tf-cluster/dev")


@pytest.fixture
def project(scratch_dir: Path, slurm_cluster: SlurmCluster) -> Path:
    for script in ("mwms_fit.py", "record_devices.py"):
        shutil.copy(FIXTURES / script, scratch_dir / script)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True, timeout=30)
    return scratch_dir


def write_spec(project: Path, name: str, command: list[str], resources: dict[str, Any], **extra: Any) -> Path:
    spec = {"name": name, "command": command, "resources": {"time": "15:00", **resources}, **extra}
    path = project / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def hpc_tf(run: Run, project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["hpc-tf", *args, "--site", "sandbox", "--set", f"runs_dir={project / 'runs'}"],
               cwd=project, check=check, timeout=180)


def launch(run: Run, project: Path, spec: Path) -> tuple[str, Path]:
    job_id = hpc_tf(run, project, "launch", spec.name).stdout.strip()
    (run_dir,) = [p for p in (project / "runs").iterdir() if p.name.startswith(spec.stem + "-")]
    return job_id, run_dir


def task_log(run_dir: Path, job_id: str, rank: int) -> str:
    return (run_dir / "logs" / f"task-{job_id}-{rank}.out").read_text(encoding="utf-8", errors="replace")


def logs(run_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted((run_dir / "logs").glob("*.out")))


def bootstrap_records(run_dir: Path, job_id: str, ranks: range) -> list[dict[str, Any]]:
    found = []
    for rank in ranks:
        (line,) = [ln for ln in task_log(run_dir, job_id, rank).splitlines() if ln.startswith(RECORD_PREFIX)]
        found.append(json.loads(line.partition(": ")[2]))
    return found


def assert_same_weights(out: Path, ranks: range) -> None:
    import numpy as np

    weights = [np.load(out / f"weights-{rank}.npz") for rank in ranks]
    assert weights[0].files
    for name in weights[0].files:
        assert all(w[name].tobytes() == weights[0][name].tobytes() for w in weights), name


def slurm_gpu_indices(job_id: str) -> dict[str, set[int]]:
    """The GPU indices the controller allocated to the job on each node (``GRES=gpu:2(IDX:0-1)``)."""
    shown = subprocess.run(["scontrol", "show", "job", "-d", job_id], capture_output=True, text=True,
                           timeout=30, check=True).stdout
    held: dict[str, set[int]] = {}
    for nodes, idx in re.findall(r"^\s*Nodes=(\S+) .*GRES=\S*\(IDX:([0-9,-]+)\)", shown, re.MULTILINE):
        indices: set[int] = set()
        for part in idx.split(","):
            low, _, high = part.partition("-")
            indices.update(range(int(low), int(high or low) + 1))
        hostnames = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True,
                                   timeout=30, check=True).stdout.split()
        for host in hostnames:
            held[host] = indices
    return held


def test_unmodified_fit_script_trains_on_two_nodes_through_launch(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, wait_for_job: WaitForJob
) -> None:
    spec = write_spec(project, "fit2x1", ["python", "mwms_fit.py", "out"],
                      {"nodes": 2, "tasks_per_node": 1, "gpus_per_node": 2}, tf={"coordination_timeout": 120})
    job_id, run_dir = launch(researcher_run, project, spec)
    status = wait_for_job(job_id, timeout=900)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)

    assert_same_weights(project / "out", range(2))
    assert (project / "out" / "saved_model" / "saved_model.pb").is_file()
    (row,) = json.loads(hpc_tf(researcher_run, project, "status", job_id, "--json").stdout)
    assert (row["state"], row["gpus"]) == ("COMPLETED", 4)

    tasks = bootstrap_records(run_dir, job_id, range(2))
    assert [task["rank"] for task in tasks] == [0, 1]
    assert sorted(task["node"] for task in tasks) == sorted(slurm_cluster.gpu_nodes)
    assert all(task["hostname"] == task["node"] for task in tasks)
    workers = json.loads(tasks[0]["env"]["TF_CONFIG"])["cluster"]["worker"]
    assert [w.rpartition(":")[0] for w in workers] == [task["node"] for task in tasks]
    for rank, task in enumerate(tasks):
        assert json.loads(task["env"]["TF_CONFIG"])["task"] == {"type": "worker", "index": rank}
        # one task per node: it keeps the node's two GPUs exactly as Slurm handed them over
        assert task["env"]["CUDA_VISIBLE_DEVICES"] == task["inherited_cuda_visible_devices"]
        assert len(task["env"]["CUDA_VISIBLE_DEVICES"].split(",")) == 2


@pytest.fixture(scope="module")
def cgroup_modes(restart_cluster: Callable[[str], SlurmCluster]) -> Iterator[Callable[[str], SlurmCluster]]:
    """``switch("0"|"1") -> SlurmCluster``; whatever mode the cluster was in is restored at the end."""
    original = "1" if cluster_now().cgroup else "0"
    current = [original]

    def switch(mode: str) -> SlurmCluster:
        if mode != current[0]:
            wait_for_quiet_cluster()
            current[0] = mode
            return restart_cluster(mode)
        return cluster_now()

    try:
        yield switch
    finally:
        if current[0] != original:
            restart_cluster(original)


def cluster_now() -> SlurmCluster:
    from tests.conftest import SlurmCluster

    return SlurmCluster.load()


def wait_for_quiet_cluster(limit_s: float = 90) -> None:
    """Other tests' jobs survive a slurmd restart better when none runs: wait a little for a gap."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        running = subprocess.run(["squeue", "-h", "-t", "R,CG", "-o", "%i"], capture_output=True, text=True,
                                 timeout=30).stdout.split()
        if not running:
            return
        time.sleep(2)


@pytest.mark.parametrize("cgroup", ["1", "0"], ids=["cgroup", "no-cgroup"])
def test_two_tasks_per_node_each_see_only_their_own_gpu(
    cgroup: str,
    cgroup_modes: Callable[[str], SlurmCluster],
    researcher_run: Run,
    project: Path,
    wait_for_job: WaitForJob,
) -> None:
    cluster = cgroup_modes(cgroup)
    assert cluster.cgroup is (cgroup == "1")
    command = ["python", "record_devices.py", str(FAKE_GPU_DIR), "out", "--",
               "python", "mwms_fit.py", "out", "--epochs", "1"]
    spec = write_spec(project, "fit2x2", command, {"nodes": 2, "tasks_per_node": 2, "gpus_per_task": 1},
                      tf={"coordination_timeout": 180})
    job_id, run_dir = launch(researcher_run, project, spec)
    wait_for_job(job_id, timeout=600, until=lambda s: s.state not in ("PENDING", "UNKNOWN"))
    held = slurm_gpu_indices(job_id)  # the controller's allocation, while the job runs
    status = wait_for_job(job_id, timeout=900)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)
    assert_same_weights(project / "out", range(4))

    tasks = bootstrap_records(run_dir, job_id, range(4))
    seen = [json.loads((project / "out" / f"devices-{rank}.json").read_text()) for rank in range(4)]
    assert sorted(held) == sorted(cluster.gpu_nodes), held
    per_node: dict[str, list[dict[str, Any]]] = {}
    for task, view in zip(tasks, seen, strict=True):
        assert task["hostname"] == task["node"] == view["hostname"]
        devices = task["env"]["CUDA_VISIBLE_DEVICES"]
        assert view["cuda_visible_devices"] == devices  # the user's process got what the record says
        assert len(devices.split(",")) == 1
        assert devices in task["inherited_cuda_visible_devices"].split(",")
        assert len(held[task["node"]]) == 2
        per_node.setdefault(task["node"], []).append({**view, "devices": devices})
    for node, views in per_node.items():
        assert len(views) == 2, per_node
        if cluster.cgroup:
            # Slurm renumbers: every task sees its one GPU as 0; the devices cgroup lets each task open
            # exactly one of the job's GPUs on the node, and not the same one as its neighbour
            assert [v["devices"] for v in views] == ["0", "0"]
            allowed = [tuple(v["allowed_devices"]) for v in views]
            assert all(len(a) == 1 and a[0] in held[node] for a in allowed), (node, allowed, held)
            assert allowed[0] != allowed[1], (node, allowed)
        else:
            # physical indices: nothing stops a task opening any GPU, so the ids themselves must be
            # the job's GPUs on that node, one each
            assert all(v["allowed_devices"] == [0, 1, 2, 3] for v in views), views
            physical = {int(v["devices"]) for v in views}
            assert physical == held[node], (node, physical, held)


def test_a_worker_that_cannot_start_fails_the_job_within_the_bound(
    researcher_run: Run, project: Path, wait_for_job: WaitForJob
) -> None:
    bound_s = 20
    # rank 1 never reaches Python (a stuck container, a hung file system ...)
    command = ["bash", "-c", 'if [ "$$SLURM_PROCID" = 1 ]; then exec sleep 3000; fi; exec python mwms_fit.py out']
    spec = write_spec(project, "missing", command, {"nodes": 2, "tasks_per_node": 1},
                      tf={"coordination_timeout": bound_s})
    job_id, run_dir = launch(researcher_run, project, spec)
    wait_for_job(job_id, timeout=600, until=lambda s: s.state not in ("PENDING", "UNKNOWN"))
    running_at = time.monotonic()
    status = wait_for_job(job_id, timeout=300)
    ended_after = time.monotonic() - running_at
    assert status.state == "FAILED", logs(run_dir)
    # TF's import, the bound, TF's own RPC deadline: about a minute, not the 15-minute time limit
    assert ended_after < bound_s + 60, ended_after

    (rank0,) = bootstrap_records(run_dir, job_id, range(1))
    worker1 = json.loads(rank0["env"]["TF_CONFIG"])["cluster"]["worker"][1]
    host1 = worker1.rpartition(":")[0]
    expected = (f"the TensorFlow cluster did not form within {bound_s} s: worker 1 (Slurm rank 1 on host "
                f"{host1}, address {worker1}) never joined")
    assert expected in hpc_tf(researcher_run, project, "logs", job_id, "--task", "0").stdout
    (row,) = json.loads(hpc_tf(researcher_run, project, "status", job_id, "--json").stdout)
    assert row["state"] == "FAILED"
