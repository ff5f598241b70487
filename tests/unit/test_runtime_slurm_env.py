"""The typed view of a task's Slurm environment (hpc.runtime.node.slurm_env)."""

from __future__ import annotations

import pytest
from _runtime_fixtures import recorded_tasks

from hpc.errors import RuntimeSetupError
from hpc.runtime.node.slurm_env import read_slurm_step


def test_recorded_block_step_is_read() -> None:
    tasks = recorded_tasks("gres2-2tasks-per-node")
    step = read_slurm_step(tasks[3])
    assert step.job_id == int(tasks[3]["SLURM_JOB_ID"])
    assert (step.rank, step.local_rank, step.node_index) == (3, 1, 1)
    assert step.nodes == ("node1", "node2")
    assert step.tasks_per_node == (2, 2)
    assert step.num_tasks == 4
    assert (step.node, step.tasks_on_node, step.node_name) == ("node2", 2, "node2")
    assert step.distribution == "block"
    assert step.node_ranks == (2, 3)
    assert step.cuda_visible_devices == ("0", "1")
    assert step.gpus_on_node == 2
    assert step.gpus_per_task is None


def test_plane_size_and_gpus_per_task_are_read() -> None:
    assert read_slurm_step(recorded_tasks("gres2-plane2")[0]).plane_size == 2
    assert read_slurm_step(recorded_tasks("sbatch-gpus-per-task-1")[1]).gpus_per_task == 1
    assert (
        read_slurm_step(
            {**recorded_tasks("sbatch-gpus-per-task-1")[1], "SLURM_GPUS_PER_TASK": "a100:2"}
        ).gpus_per_task
        == 2
    )


def test_cpu_task_has_no_device_list() -> None:
    step = read_slurm_step(recorded_tasks("cpu-2tasks")[1])
    assert step.cuda_visible_devices is None
    assert step.gpus_on_node is None
    assert step.nodes == ("cpu1",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", ()), ("NoDevFiles", ()), ("2,3", ("2", "3")), ("GPU-a1,GPU-b2", ("GPU-a1", "GPU-b2"))],
)
def test_cuda_visible_devices_values_are_kept_as_strings(value: str, expected: tuple[str, ...]) -> None:
    env = {**recorded_tasks("gres2-1task-per-node")[0], "CUDA_VISIBLE_DEVICES": value}
    assert read_slurm_step(env).cuda_visible_devices == expected


def test_the_batch_shell_is_not_a_step() -> None:
    (batch,) = recorded_tasks("batch-step")
    with pytest.raises(RuntimeSetupError, match="not inside a Slurm job step") as caught:
        read_slurm_step(batch)
    assert caught.value.hint is not None and "run under srun" in caught.value.hint


def test_outside_slurm_says_run_under_srun() -> None:
    with pytest.raises(RuntimeSetupError, match="not inside a Slurm job") as caught:
        read_slurm_step({"PATH": "/usr/bin"})
    assert "run under srun" in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SLURM_PROCID": "x"}, "SLURM_PROCID='x' cannot be read"),
        ({"SLURM_STEP_NODELIST": "node[1-2"}, "SLURM_STEP_NODELIST='node\\[1-2' cannot be read"),
        ({"SLURM_STEP_TASKS_PER_NODE": "2(x3)"}, "2 step nodes but 3 task counts"),
        ({"SLURM_STEP_NUM_TASKS": "5"}, "add up to 4, not 5"),
        ({"SLURM_STEP_NUM_NODES": "3"}, "SLURM_STEP_NUM_NODES does not match"),
        ({"SLURM_PROCID": "4"}, "rank 4 is outside 0..3"),
        ({"SLURM_NODEID": "2"}, "node index 2 is outside"),
        ({"SLURM_LOCALID": "2"}, "local rank 2 but only 2 tasks on node node2"),
        ({"SLURMD_NODENAME": "node1"}, "this is node node1 but node index 1 names node2"),
        ({"SLURM_GTIDS": "2,x"}, "SLURM_GTIDS"),
    ],
)
def test_inconsistent_or_malformed_variables_are_named(overrides: dict[str, str], message: str) -> None:
    env = {**recorded_tasks("gres2-2tasks-per-node")[3], **overrides}
    with pytest.raises(RuntimeSetupError, match=message):
        read_slurm_step(env)


def test_step_num_tasks_defaults_to_the_sum_of_task_counts() -> None:
    env = dict(recorded_tasks("gres2-cyclic-3tasks-uneven")[2])
    del env["SLURM_STEP_NUM_TASKS"]
    assert read_slurm_step(env).num_tasks == 3
