"""TF_CONFIG in Slurm's rank order, ports per job and per task (hpc.runtime.node.tf_config, layout)."""

from __future__ import annotations

import json

import pytest
from _runtime_fixtures import lab_task, recorded_tasks
from hypothesis import given
from hypothesis import strategies as st

from hpc.errors import RuntimeSetupError
from hpc.runtime.node.layout import step_layout
from hpc.runtime.node.slurm_env import read_slurm_step
from hpc.runtime.node.tf_config import parse_address_map, task_port, tf_config, worker_addresses

RANGE = (20000, 29999)


def workers(env: dict[str, str], address_map: dict[str, str] | None = None) -> list[str]:
    step = read_slurm_step(env)
    return worker_addresses(step, step_layout(step), port_range=RANGE, address_map=address_map or {})


def hosts(env: dict[str, str]) -> list[str]:
    return [address.rpartition(":")[0] for address in workers(env)]


def ports(env: dict[str, str]) -> list[int]:
    return [int(address.rpartition(":")[2]) for address in workers(env)]


def task(
    nodelist: str, tasks_per_node: str, rank: int, node_index: int, local_rank: int, **extra: str
) -> dict[str, str]:
    return lab_task(
        SLURM_STEP_NODELIST=nodelist,
        SLURM_STEP_TASKS_PER_NODE=tasks_per_node,
        SLURM_STEP_NUM_TASKS=None,
        SLURM_STEP_NUM_NODES=None,
        SLURMD_NODENAME=None,
        SLURM_PROCID=str(rank),
        SLURM_NODEID=str(node_index),
        SLURM_LOCALID=str(local_rank),
        **extra,
    )


def test_every_recorded_task_agrees_with_slurms_placement_and_with_the_others() -> None:
    for variant in (
        "gres2-1task-per-node",
        "gres2-2tasks-per-node",
        "gres2-cyclic",
        "gres2-cyclic-3tasks-uneven",
        "gres2-plane2",
        "sbatch-gpus-per-task-1",
        "cpu-2tasks",
    ):
        tasks = recorded_tasks(variant)
        lists = [workers(env) for env in tasks]
        assert all(other == lists[0] for other in lists), variant  # one cluster, seen the same by all
        base = min(ports(tasks[0]))
        for env in tasks:  # worker r is where rank r runs, on the port of its local rank
            host, _, port = lists[0][int(env["SLURM_PROCID"])].rpartition(":")
            assert host == env["SLURMD_NODENAME"]
            assert int(port) == base + int(env["SLURM_LOCALID"])


def test_recorded_cyclic_ranks_alternate_nodes() -> None:
    tasks = recorded_tasks("gres2-cyclic")
    assert hosts(tasks[0]) == ["node1", "node2", "node1", "node2"]
    p = ports(tasks[0])
    assert p == [p[0], p[0], p[0] + 1, p[0] + 1]
    assert hosts(recorded_tasks("gres2-cyclic-3tasks-uneven")[1]) == ["node1", "node2", "node1"]
    assert hosts(recorded_tasks("gres2-2tasks-per-node")[0]) == ["node1", "node1", "node2", "node2"]


def test_tf_config_names_rank_as_task_index() -> None:
    env = recorded_tasks("gres2-cyclic")[3]
    config = json.loads(tf_config(workers(env), read_slurm_step(env).rank))
    assert config == {"cluster": {"worker": workers(env)}, "task": {"type": "worker", "index": 3}}


# --- TF's SlurmClusterResolver tests where their expectations are right (lab tf notes §3) ---


def test_tf_simple_retrieval_one_task_per_node() -> None:
    # testSimpleRetrievalFromEnv: t02n13,t02n41,t02n43 with 1(x3): one worker per node, same port
    env = task("t02n13,t02n41,t02n43", "1(x3)", rank=0, node_index=0, local_rank=0)
    assert hosts(env) == ["t02n13", "t02n41", "t02n43"]
    assert len(set(ports(env))) == 1


def test_tf_multi_task_per_node_ports_are_consecutive_on_a_node() -> None:
    # testMultiTaskPerNodeRetrieval: 2(x2),1 → t02n13:p, t02n13:p+1, t02n41:p, t02n41:p+1, t02n43:p
    env = task("t02n13,t02n41,t02n43", "2(x2),1", rank=1, node_index=0, local_rank=1)
    p = ports(env)[0]
    assert workers(env) == [f"t02n13:{p}", f"t02n13:{p + 1}", f"t02n41:{p}", f"t02n41:{p + 1}", f"t02n43:{p}"]


# --- the resolver's bugs, which must not come back (lab tf notes §3 table) ---


def test_hosts_are_never_sorted() -> None:
    # gpu-[01-02,10],cpu07: the resolver told rank 0 (on gpu-01) that it was cpu07
    env = task("gpu-[01-02,10],cpu07", "1(x4)", rank=3, node_index=3, local_rank=0)
    assert hosts(env) == ["gpu-01", "gpu-02", "gpu-10", "cpu07"]
    # n[9-10] and n[1-10]: unpadded numbers stay in numeric order
    assert hosts(task("n[9-10]", "1(x2)", rank=0, node_index=0, local_rank=0)) == ["n9", "n10"]
    assert hosts(task("n[1-10]", "1(x10)", rank=9, node_index=9, local_rank=0)) == [
        f"n{i}" for i in range(1, 11)
    ]


def test_cyclic_distribution_is_followed() -> None:
    env = task("a,b", "2(x2)", rank=1, node_index=1, local_rank=0, SLURM_DISTRIBUTION="cyclic")
    assert hosts(env) == ["a", "b", "a", "b"]


def test_heterogeneous_tasks_per_node_in_block_order() -> None:
    env = task("n[1-3]", "3(x2),1", rank=6, node_index=2, local_rank=0)
    assert hosts(env) == ["n1"] * 3 + ["n2"] * 3 + ["n3"]


# --- a layout that does not match Slurm's placement fails loudly ---


def test_wrong_distribution_is_caught_by_the_task_it_misplaces() -> None:
    env = dict(recorded_tasks("gres2-cyclic")[1])  # rank 1 runs on node2
    env["SLURM_DISTRIBUTION"] = "block"  # block would put rank 1 on node1
    with pytest.raises(RuntimeSetupError, match="does not match Slurm's placement"):
        workers(env)


def test_gtids_catch_a_wrong_layout_of_the_other_ranks_on_the_node() -> None:
    env = dict(recorded_tasks("gres2-cyclic")[0])  # rank 0 is at (0, 0) in both block and cyclic
    env["SLURM_DISTRIBUTION"] = "block"
    with pytest.raises(RuntimeSetupError, match="SLURM_GTIDS says"):
        workers(env)


@pytest.mark.parametrize("distribution", ["arbitrary", "plane"])
def test_unknown_layouts_are_refused(distribution: str) -> None:
    env = {**recorded_tasks("gres2-2tasks-per-node")[0], "SLURM_DISTRIBUTION": distribution}
    with pytest.raises(RuntimeSetupError, match=distribution):
        workers(env)


def test_socket_level_distribution_is_ignored() -> None:
    env = {**recorded_tasks("gres2-cyclic")[2], "SLURM_DISTRIBUTION": "cyclic:block,Pack"}
    assert hosts(env) == ["node1", "node2", "node1", "node2"]


# --- ports ---


def test_ports_depend_on_the_job_and_stay_in_range() -> None:
    base = recorded_tasks("gres2-2tasks-per-node")[0]
    other_job = {**base, "SLURM_JOB_ID": str(int(base["SLURM_JOB_ID"]) + 1)}
    assert set(ports(base)).isdisjoint(ports(other_job))  # consecutive jobs, same shape: disjoint
    assert task_port(job_id=10**12, local_rank=3, stride=4, port_range=(30000, 30009)) in range(30000, 30010)


@given(st.integers(0, 10**7), st.integers(1, 8), st.integers(20000, 40000), st.integers(7, 500))
def test_tasks_on_a_node_never_share_a_port(job_id: int, tasks: int, low: int, size: int) -> None:
    used = {
        task_port(job_id=job_id, local_rank=k, stride=tasks, port_range=(low, low + size))
        for k in range(tasks)
    }
    assert len(used) == tasks
    assert all(low <= port <= low + size for port in used)


def test_more_tasks_than_ports_is_refused() -> None:
    with pytest.raises(ValueError, match="need 5 ports"):
        task_port(job_id=1, local_rank=0, stride=5, port_range=(30000, 30003))


# --- addresses ---


def test_address_map_overrides_node_names() -> None:
    env = recorded_tasks("gres2-1task-per-node")[0]
    p = ports(env)[0]
    mapped = workers(env, parse_address_map("node1=127.0.0.1, node2=::1"))
    assert mapped == [f"127.0.0.1:{p}", f"[::1]:{p}"]


def test_nodes_sharing_an_address_get_distinct_ports() -> None:
    # the local launcher's emulated nodes all live at 127.0.0.1: one gRPC port each, in rank order
    env = task("local[1-2]", "2(x2)", rank=0, node_index=0, local_rank=0)
    shared = workers(env, parse_address_map("local1=127.0.0.1,local2=127.0.0.1"))
    p = int(shared[0].rpartition(":")[2])
    assert shared == [f"127.0.0.1:{p + k}" for k in range(4)]
    # two of three nodes at one address: those two differ by port, the third is alone at its own
    env = task("a,b,c", "1(x3)", rank=0, node_index=0, local_rank=0)
    first, second, third = workers(env, parse_address_map("a=10.0.0.1,b=10.0.0.1"))
    q = int(first.rpartition(":")[2])
    assert (first, second) == (f"10.0.0.1:{q}", f"10.0.0.1:{q + 1}")
    assert third.startswith("c:")


@pytest.mark.parametrize("bad", ["node1", "=1.2.3.4", "node1="])
def test_malformed_address_maps_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="HPC_TF_NODE_ADDRESS_MAP"):
        parse_address_map(bad)
