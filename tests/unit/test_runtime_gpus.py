"""GPU mapping per task (hpc.runtime.node.gpus) over recorded Slurm environments.

Cases with the job on physical GPUs 2,3 in both cgroup modes are the lab notes' table (§4a of
the Slurm lab notes: a blocker job held GPUs 0,1); cgroup-mode cases on GPUs 0,1 are this
repository's recording (tests/fixtures/runtime/).
"""

from __future__ import annotations

import pytest
from _runtime_fixtures import lab_task, recorded_tasks

from hpc.errors import RuntimeSetupError
from hpc.runtime.node.gpus import assign_gpus
from hpc.runtime.node.settings import RuntimeSettings
from hpc.runtime.node.slurm_env import read_slurm_step

NO_SPEC = RuntimeSettings()


def devices(env: dict[str, str], settings: RuntimeSettings = NO_SPEC) -> str:
    return ",".join(assign_gpus(read_slurm_step(env), settings).devices)


def two_tasks_on_one_node(task0: dict[str, str], task1: dict[str, str]) -> list[dict[str, str]]:
    """The lab's 2-tasks-per-node variants, per task: layout of one node with two tasks."""
    layout = {
        "SLURM_STEP_NODELIST": "node1",
        "SLURM_STEP_TASKS_PER_NODE": "2",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NUM_NODES": "1",
        "SLURM_NODELIST": "node1",
    }
    return [
        lab_task(**layout, SLURM_PROCID="0", SLURM_LOCALID="0", **task0),
        lab_task(**layout, SLURM_PROCID="1", SLURM_LOCALID="1", **task1),
    ]


# --gres=gpu:2, one task per node, job on physical 2,3
@pytest.mark.parametrize(("mode", "visible"), [("no cgroup", "2,3"), ("cgroup", "0,1")])
def test_task_that_sees_exactly_its_share_keeps_it(mode: str, visible: str) -> None:
    for rank in (0, 1):
        env = lab_task(
            SLURM_PROCID=str(rank),
            SLURM_NODEID=str(rank),
            SLURMD_NODENAME=f"node{rank + 1}",
            CUDA_VISIBLE_DEVICES=visible,
            SLURM_STEP_GPUS="2,3",
            SLURM_JOB_GPUS="2,3",
        )
        assert devices(env) == visible
        assert devices(env, RuntimeSettings(gpus_per_node=2)) == visible


# --gpus-per-task=1 --ntasks-per-node=2: Slurm binds one GPU per task
@pytest.mark.parametrize(
    ("mode", "task0", "task1"),
    [
        (
            "no cgroup",
            {"CUDA_VISIBLE_DEVICES": "2", "SLURM_STEP_GPUS": "2"},
            {"CUDA_VISIBLE_DEVICES": "3", "SLURM_STEP_GPUS": "3"},
        ),
        # cgroup: each task sees its own device as 0; STEP_GPUS=2 for both is wrong for task 1: ignored
        (
            "cgroup",
            {"CUDA_VISIBLE_DEVICES": "0", "SLURM_STEP_GPUS": "2"},
            {"CUDA_VISIBLE_DEVICES": "0", "SLURM_STEP_GPUS": "2"},
        ),
    ],
)
def test_per_task_binding_is_kept_and_step_gpus_ignored(
    mode: str, task0: dict[str, str], task1: dict[str, str]
) -> None:
    tasks = two_tasks_on_one_node(
        {**task0, "SLURM_GPUS_PER_TASK": "1"}, {**task1, "SLURM_GPUS_PER_TASK": "1"}
    )
    assert [devices(env) for env in tasks] == [task0["CUDA_VISIBLE_DEVICES"], task1["CUDA_VISIBLE_DEVICES"]]
    spec = RuntimeSettings(gpus_per_task=1)
    assert [devices(env, spec) for env in tasks] == [
        task0["CUDA_VISIBLE_DEVICES"],
        task1["CUDA_VISIBLE_DEVICES"],
    ]


# --gpu-bind=single:1 (or --gpus-per-node=2 --gpu-bind=per_task:1): bound, but no SLURM_GPUS_PER_TASK
@pytest.mark.parametrize(("mode", "visible0", "visible1"), [("no cgroup", "2", "3"), ("cgroup", "0", "0")])
def test_binding_without_gpus_per_task_uses_the_node_share(mode: str, visible0: str, visible1: str) -> None:
    tasks = two_tasks_on_one_node({"CUDA_VISIBLE_DEVICES": visible0}, {"CUDA_VISIBLE_DEVICES": visible1})
    # the share comes from the spec (gpus_per_node), or from SLURM_GPUS_ON_NODE (recorded: 2)
    assert [devices(env, RuntimeSettings(gpus_per_node=2)) for env in tasks] == [visible0, visible1]
    assert [devices({**env, "SLURM_GPUS_ON_NODE": "2"}) for env in tasks] == [visible0, visible1]


# --gpus-per-task=1 --gpu-bind=closest: no binding (no Cores= in gres.conf), every task sees the node's pair
@pytest.mark.parametrize(
    ("mode", "visible", "expected"), [("no cgroup", "2,3", ["2", "3"]), ("cgroup", "0,1", ["0", "1"])]
)
def test_task_that_sees_more_than_its_share_takes_its_slice(
    mode: str, visible: str, expected: list[str]
) -> None:
    tasks = two_tasks_on_one_node(
        {"CUDA_VISIBLE_DEVICES": visible, "SLURM_GPUS_PER_TASK": "1"},
        {"CUDA_VISIBLE_DEVICES": visible, "SLURM_GPUS_PER_TASK": "1"},
    )
    assert [devices(env) for env in tasks] == expected


def test_recorded_two_tasks_per_node_get_one_gpu_each() -> None:
    # --gres=gpu:2 with 2 tasks per node: every task saw 0,1 (cgroup mode)
    tasks = recorded_tasks("gres2-2tasks-per-node")
    assert [read_slurm_step(env).cuda_visible_devices for env in tasks] == [("0", "1")] * 4
    assert [devices(env) for env in tasks] == ["0", "1", "0", "1"]
    # cyclic: local rank, not rank, picks the slice
    assert [devices(env) for env in recorded_tasks("gres2-cyclic")] == ["0", "0", "1", "1"]
    # uneven: the node with one task gives it both GPUs
    assert [devices(env) for env in recorded_tasks("gres2-cyclic-3tasks-uneven")] == ["0", "0,1", "1"]


def test_recorded_per_task_bindings_are_kept() -> None:
    assert [devices(env) for env in recorded_tasks("sbatch-gpus-per-task-1")] == ["0"] * 4
    # srun --gpus-per-task=1 inside a --gres=gpu:2 job: no SLURM_GPUS_PER_TASK; the share comes from
    # SLURM_GPUS_ON_NODE=2 over 2 tasks, and each task keeps the one GPU it was bound to
    tasks = recorded_tasks("gres2-srun-gpus-per-task-1")
    assert all("SLURM_GPUS_PER_TASK" not in env for env in tasks)
    assert [devices(env) for env in tasks] == [env["CUDA_VISIBLE_DEVICES"] for env in tasks]
    assert all(len(devices(env).split(",")) == 1 for env in tasks)


def test_four_gpus_two_tasks_per_node_are_split_in_halves() -> None:
    # TF's testMultipleGpusPerTaskRetrieval (gpus_per_node=4, gpus_per_task=2 → rank 1 gets 2,3),
    # here from what the task actually inherits, with and without the spec's numbers
    tasks = two_tasks_on_one_node({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, {"CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert [devices(env) for env in tasks] == ["0,1", "2,3"]
    assert [devices(env, RuntimeSettings(gpus_per_node=4, gpus_per_task=2)) for env in tasks] == [
        "0,1",
        "2,3",
    ]
    # physical ids are sliced, never renumbered
    physical = two_tasks_on_one_node({"CUDA_VISIBLE_DEVICES": "4,5,6,7"}, {"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    assert [devices(env) for env in physical] == ["4,5", "6,7"]


def test_cpu_only_tasks_get_an_empty_list() -> None:
    assert [devices(env) for env in recorded_tasks("cpu-2tasks")] == ["", ""]
    # CUDA_VISIBLE_DEVICES="" is no GPU (TF's resolver counted it as one)
    assert devices(lab_task(CUDA_VISIBLE_DEVICES="")) == ""
    # a CPU job on a GPU node without device cgroups must not see the node's GPUs
    assert devices(lab_task(), RuntimeSettings(gpus_per_task=0)) == ""
    assert devices(lab_task(), RuntimeSettings(gpus_per_node=0)) == ""


def test_gpus_asked_for_but_none_given_is_an_error() -> None:
    with pytest.raises(RuntimeSetupError, match="should get 1 GPU\\(s\\) but Slurm gave it none"):
        devices(recorded_tasks("cpu-2tasks")[0], RuntimeSettings(gpus_per_task=1))


def test_fewer_gpus_than_the_share_is_an_error() -> None:
    with pytest.raises(RuntimeSetupError, match="sees 1 GPU\\(s\\) \\(0\\) but its share is 2"):
        devices(recorded_tasks("sbatch-gpus-per-task-1")[0], RuntimeSettings(gpus_per_task=2))


def test_a_slice_beyond_the_node_is_an_error() -> None:
    env = recorded_tasks("gres2-2tasks-per-node")[1]  # local rank 1, sees 0,1
    with pytest.raises(RuntimeSetupError, match=r"needs GPUs 3\.\.5 of the node's 4"):
        devices({**env, "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, RuntimeSettings(gpus_per_task=3))


def test_uneven_split_needs_an_explicit_share() -> None:
    # TF's resolver gives 3 tasks on a 4-GPU node one GPU each and leaves one idle; we ask
    three = {
        "SLURM_STEP_NODELIST": "n1",
        "SLURM_STEP_TASKS_PER_NODE": "3",
        "SLURM_STEP_NUM_TASKS": "3",
        "SLURM_STEP_NUM_NODES": "1",
        "SLURMD_NODENAME": "n1",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    }
    with pytest.raises(
        RuntimeSetupError, match="4 GPU\\(s\\) on n1 cannot be split evenly among its 3 tasks"
    ):
        devices(lab_task(**three))
    assert (
        devices(lab_task(**three, SLURM_PROCID="2", SLURM_LOCALID="2"), RuntimeSettings(gpus_per_task=1))
        == "2"
    )


# ------------------------------------------------------------------ AMD GPUs (ROCR_VISIBLE_DEVICES)
# What amd1 of the test cluster gives a 2-GPU step of two tasks (gres.conf Flags=amd_gpu_env): Slurm
# sets ROCR_VISIBLE_DEVICES only (recorded with `srun -p amd --gres=gpu:2 --ntasks=2`, cgroup mode)
def amd_tasks(visible: str) -> list[dict[str, str]]:
    nvidia_only = {"CUDA_VISIBLE_DEVICES": None, "GPU_DEVICE_ORDINAL": None, "SLURM_JOB_GPUS": None}
    return two_tasks_on_one_node({**nvidia_only, "ROCR_VISIBLE_DEVICES": visible},
                                 {**nvidia_only, "ROCR_VISIBLE_DEVICES": visible})


def gpu_env(env: dict[str, str], settings: RuntimeSettings = NO_SPEC) -> dict[str, str]:
    return assign_gpus(read_slurm_step(env), settings).env()


def test_amd_gpus_are_sliced_like_nvidia_and_hip_numbers_the_slice() -> None:
    tasks = amd_tasks("0,1")
    assert [gpu_env(env) for env in tasks] == [
        {"ROCR_VISIBLE_DEVICES": "0", "HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "0"},
        {"ROCR_VISIBLE_DEVICES": "1", "HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "0"},
    ]
    # physical ids (no device cgroup) are sliced, never renumbered; HIP counts within the slice
    physical = amd_tasks("4,5,6,7")
    assert [gpu_env(env)["ROCR_VISIBLE_DEVICES"] for env in physical] == ["4,5", "6,7"]
    assert [gpu_env(env)["HIP_VISIBLE_DEVICES"] for env in physical] == ["0,1", "0,1"]


def test_amd_gpus_asked_for_but_none_given_names_rocr() -> None:
    env = {**amd_tasks("0,1")[0], "ROCR_VISIBLE_DEVICES": ""}
    with pytest.raises(RuntimeSetupError, match="Slurm gave it none \\(ROCR_VISIBLE_DEVICES=''\\)"):
        gpu_env(env, RuntimeSettings(gpus_per_task=1))


# ------------------------------------------------------------------ resources.gpu_binding
def test_node_binding_gives_every_task_all_its_nodes_gpus() -> None:
    tasks = two_tasks_on_one_node({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, {"CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    node = RuntimeSettings(gpus_per_task=2, gpu_binding="node")
    assert [devices(env, node) for env in tasks] == ["0,1,2,3", "0,1,2,3"]
    assert [devices(env, RuntimeSettings(gpus_per_task=2)) for env in tasks] == ["0,1", "2,3"]
    # still a task's share at least
    with pytest.raises(RuntimeSetupError, match="but its share is 2"):
        devices({**tasks[0], "CUDA_VISIBLE_DEVICES": "0"}, node)
    assert [gpu_env(env, RuntimeSettings(gpus_per_task=2, gpu_binding="node")) for env in amd_tasks("0,1,2,3")][1] == {
        "ROCR_VISIBLE_DEVICES": "0,1,2,3", "HIP_VISIBLE_DEVICES": "0,1,2,3", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}


def test_slurm_binding_leaves_slurms_variables_alone() -> None:
    slurm = RuntimeSettings(gpus_per_task=1, gpu_binding="slurm")
    tasks = two_tasks_on_one_node({"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "3"})
    assert [gpu_env(env, slurm) for env in tasks] == [{}, {}]
    assert [devices(env, slurm) for env in tasks] == ["0,1", "3"]
    # nothing to check either: a task Slurm gave no GPU is Slurm's decision
    assert gpu_env(lab_task(CUDA_VISIBLE_DEVICES=None), slurm) == {}
