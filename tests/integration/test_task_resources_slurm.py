"""Which GPUs and CPUs each task of a launched job really gets, on the test cluster.

Witnesses independent of hpc-tf, as in test_runtime_launch.py: the controller's allocation
(``scontrol show job -d``), the devices cgroup (which fake GPU device files a task may open) and the
kernel's CPU affinity of the task's process (``os.sched_getaffinity``), all recorded inside the task by
``tests/fixtures/tf/record_devices.py``. The bootstrap's record line says what hpc-tf set.

- ``resources.gpu_binding``: task (a share per task), node (every task sees its node's GPUs), slurm
  (Slurm's variables untouched); TF_CONFIG the same in every mode.
- AMD GPUs (node amd1, partition amd): Slurm sets ROCR_VISIBLE_DEVICES only; hpc-tf slices it per task.
- ``cpus_per_task`` reaches every task: the cluster restarted with this machine's real CPUs and
  task/affinity (``tests/cluster/up --cpus=real``; the fake 8-CPU nodes cannot be pinned), restored after.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.integration import test_runtime_launch
from tests.integration.test_runtime_launch import (
    FAKE_GPU_DIR,
    Run,
    WaitForJob,
    bootstrap_records,
    cluster_now,
    launch,
    logs,
    slurm_gpu_indices,
    wait_for_quiet_cluster,
    write_spec,
)

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm]

project = test_runtime_launch.project  # the same fixture: the instrument and mwms_fit.py in a scratch dir


def run_recorded(
    run: Run, project: Path, wait_for_job: WaitForJob, name: str, resources: dict[str, Any], then: list[str],
    **spec: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, set[int]]]:
    """Launch ``record_devices.py … -- THEN`` on every task; (bootstrap records, what each task saw, the
    GPUs the controller allocated per node)."""
    out = f"out-{name}"
    command = ["python", "record_devices.py", str(FAKE_GPU_DIR), out, "--", *then]
    job_id, run_dir = launch(run, project, write_spec(project, name, command, resources, **spec))
    wait_for_job(job_id, timeout=600, until=lambda s: s.state not in ("PENDING", "UNKNOWN"))
    held = slurm_gpu_indices(job_id)
    status = wait_for_job(job_id, timeout=900)
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0"), logs(run_dir)
    tasks = resources.get("nodes", 1) * resources.get("tasks_per_node", 1)
    seen = [json.loads((project / out / f"devices-{rank}.json").read_text()) for rank in range(tasks)]
    return bootstrap_records(run_dir, job_id, range(tasks)), seen, held


def same_shape_tf_config(records: list[dict[str, Any]]) -> list[Any]:
    """Every task's TF_CONFIG with host names and the job's port base taken out (both differ per job)."""
    shapes = []
    for record in records:
        config = json.loads(record["env"]["TF_CONFIG"])
        workers = config["cluster"]["worker"]
        base = min(int(w.rpartition(":")[2]) for w in workers)
        hosts = [w.rpartition(":")[0] for w in workers]
        shapes.append({"workers": [(hosts.index(h), int(w.rpartition(":")[2]) - base)
                                   for h, w in zip(hosts, workers, strict=True)], "task": config["task"]})
    return shapes


# the tasks outlive the test's look at the allocation (scontrol shows a job's GPU indices only while it runs)
HOLD = ["sleep", "3"]

# two tasks on one node; gpus_per_task makes Slurm bind one GPU to each task itself
BINDING_CASES: dict[str, dict[str, Any]] = {
    "task": {"gpus_per_node": 2},
    "node": {"gpus_per_task": 1},
    "slurm": {"gpus_per_node": 2},
    "slurm-gpu-bind": {"gpus_per_node": 2, "srun_extra": ["--gpu-bind=per_task:1"]},
}


@pytest.mark.parametrize("case", list(BINDING_CASES))
def test_each_gpu_binding_gives_the_devices_it_promises(
    case: str, researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, wait_for_job: WaitForJob
) -> None:
    binding = case.partition("-")[0]
    resources = {"nodes": 1, "tasks_per_node": 2, "gpu_binding": binding, **BINDING_CASES[case]}
    extra = {"srun_extra": resources.pop("srun_extra")} if "srun_extra" in resources else {}
    records, seen, held = run_recorded(researcher_run, project, wait_for_job, f"bind-{case}", resources, HOLD,
                                       **extra)
    (node,) = held
    mine = sorted(held[node])
    assert len(mine) == 2, held
    # the job's GPUs as the task's CUDA numbers them: renumbered 0,1 under device cgroups, physical without
    slurm_ids = ["0", "1"] if slurm_cluster.cgroup else [str(i) for i in mine]
    visible = [view["cuda_visible_devices"] for view in seen]
    opened = [view["allowed_devices"] for view in seen]
    if extra:
        # Slurm bound one GPU to each task (--gpu-bind=per_task:1) and hpc-tf left it at that
        assert sorted(visible) == (["0", "0"] if slurm_cluster.cgroup else slurm_ids), visible
        assert all("CUDA_VISIBLE_DEVICES" not in record["env"] for record in records)
        if slurm_cluster.cgroup:
            assert sorted(device for devices in opened for device in devices) == mine, (opened, held)
    elif binding == "task":
        # one each, sliced from the two the step sees (env only: both may open both)
        assert sorted(visible) == slurm_ids, visible
        assert [record["env"]["CUDA_VISIBLE_DEVICES"] for record in records] == visible
    else:
        # node: asked for per node (--gres), so Slurm binds none per task; slurm: what Slurm set, unsliced
        assert visible == [",".join(slurm_ids)] * 2, visible
        if binding == "slurm":
            assert all("CUDA_VISIBLE_DEVICES" not in record["env"] for record in records)
    if slurm_cluster.cgroup and not extra:
        assert opened == [mine, mine], (opened, held)  # every task may open both of the job's GPUs
    assert same_shape_tf_config(records) == [
        {"workers": [(0, 0), (0, 1)], "task": {"type": "worker", "index": rank}} for rank in range(2)]


def test_amd_gpus_are_sliced_per_task_on_the_amd_node(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, wait_for_job: WaitForJob
) -> None:
    assert slurm_cluster.amd_partition and slurm_cluster.amd_nodes, "no AMD node: re-run tests/cluster/up"
    resources = {"nodes": 1, "tasks_per_node": 2, "gpus_per_node": 2, "partition": slurm_cluster.amd_partition}
    records, seen, held = run_recorded(researcher_run, project, wait_for_job, "amd", resources, HOLD)
    assert list(held) == list(slurm_cluster.amd_nodes), held
    mine = sorted(held[slurm_cluster.amd_nodes[0]])
    slurm_ids = ["0", "1"] if slurm_cluster.cgroup else [str(i) for i in mine]
    # Slurm gave the step ROCR_VISIBLE_DEVICES only (no CUDA_VISIBLE_DEVICES to inherit)
    assert [record["inherited_rocr_visible_devices"] for record in records] == [",".join(slurm_ids)] * 2
    assert "inherited_cuda_visible_devices" not in records[0]
    assert sorted(view["rocr_visible_devices"] for view in seen) == slurm_ids, seen
    # HIP (and HIP's reading of CUDA_VISIBLE_DEVICES) number the task's one GPU 0
    assert [(view["hip_visible_devices"], view["cuda_visible_devices"]) for view in seen] == [("0", "0")] * 2
    if slurm_cluster.cgroup:
        assert [view["allowed_amd_devices"] for view in seen] == [mine, mine], (seen, held)
    assert [record["env"]["ROCR_VISIBLE_DEVICES"] for record in records] == [v["rocr_visible_devices"] for v in seen]


@pytest.fixture
def real_cpus(restart_cluster: Callable[..., SlurmCluster]) -> Iterator[SlurmCluster]:
    """The cluster restarted with this machine's real CPU topology and task/affinity; restored after."""
    original = cluster_now()
    cgroup = "1" if original.cgroup else "0"
    wait_for_quiet_cluster()
    try:
        yield restart_cluster(cgroup, cpus="real")
    finally:
        wait_for_quiet_cluster()
        restart_cluster(cgroup, cpus=original.cpus)


@pytest.mark.tf
def test_cpus_per_task_reach_every_tensorflow_task(
    real_cpus: SlurmCluster, researcher_run: Run, project: Path, wait_for_job: WaitForJob
) -> None:
    shown = subprocess.run(["scontrol", "show", "node", real_cpus.gpu_nodes[0]], capture_output=True, text=True,
                           timeout=30, check=True).stdout
    cpus = int(re.findall(r"CPUTot=(\d+)", shown)[0])  # this machine's, as tests/cluster/up --cpus=real declared
    assert cpus >= 2, "this test needs a machine with at least 2 CPUs"
    resources = {"nodes": 2, "tasks_per_node": 1, "cpus_per_task": cpus}
    then = ["python", "mwms_fit.py", "out-cpus", "--epochs", "1"]
    _, seen, _ = run_recorded(researcher_run, project, wait_for_job, "cpus", resources, then)
    # task/affinity bound each task to the CPUs its step got: all of them only if srun asked for them
    assert [len(view["cpus"]) for view in seen] == [cpus, cpus], seen
    assert sorted(view["hostname"] for view in seen) == sorted(real_cpus.gpu_nodes)

