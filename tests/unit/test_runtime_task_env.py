"""What the bootstrap exports for a task (hpc.runtime.node.task_env) and `node_env`, its library face."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _runtime_fixtures import recorded_tasks

from hpc.errors import RuntimeSetupError
from hpc.runtime import install_into, node_env
from hpc.runtime.node.hook_config import HookConfig
from hpc.runtime.node.settings import RuntimeSettings
from hpc.runtime.node.task_env import plan_task

SITE = "/opt/run/runtime/hpc_tf_runtime/sitedir"


def test_multi_worker_task_gets_gpus_tf_config_and_hooks() -> None:
    env = recorded_tasks("gres2-2tasks-per-node")[3]
    plan = plan_task(env, RuntimeSettings(coordination_timeout_s=42, memory_growth=False), site_dir=SITE)
    assert list(plan.env) == [
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "TF_CONFIG",
        "HPC_TF_HOOKS",
        "PYTHONPATH",
    ]
    assert plan.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert plan.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    config = json.loads(plan.env["TF_CONFIG"])
    assert config["task"] == {"type": "worker", "index": 3}
    assert [w.rpartition(":")[0] for w in config["cluster"]["worker"]] == ["node1", "node1", "node2", "node2"]
    assert plan.address == config["cluster"]["worker"][3]
    hooks = HookConfig.from_json(plan.env["HPC_TF_HOOKS"])
    assert hooks == HookConfig(
        coordination_timeout_s=42, keras_mwms_fix=True, worker_nodes=("node1", "node1", "node2", "node2")
    )
    assert plan.env["PYTHONPATH"] == SITE


def test_pythonpath_keeps_the_users_entries_after_ours() -> None:
    env = {**recorded_tasks("gres2-cyclic")[0], "PYTHONPATH": f"/home/u/lib:{SITE}:/opt/x"}
    assert plan_task(env, RuntimeSettings(), site_dir=SITE).env["PYTHONPATH"] == f"{SITE}:/home/u/lib:/opt/x"


def test_memory_options_are_set_for_gpu_tasks_only() -> None:
    settings = RuntimeSettings(memory_growth=True, gpu_allocator="cuda_malloc_async")
    gpu = plan_task(recorded_tasks("gres2-1task-per-node")[0], settings, site_dir=SITE).env
    assert (gpu["TF_FORCE_GPU_ALLOW_GROWTH"], gpu["TF_GPU_ALLOCATOR"]) == ("true", "cuda_malloc_async")
    cpu = plan_task(recorded_tasks("cpu-2tasks")[0], settings, site_dir=SITE).env
    assert cpu["CUDA_VISIBLE_DEVICES"] == ""
    assert "TF_FORCE_GPU_ALLOW_GROWTH" not in cpu and "TF_GPU_ALLOCATOR" not in cpu
    # growth off: nothing is exported, so a script's own tf.config choice stands
    assert (
        "TF_FORCE_GPU_ALLOW_GROWTH"
        not in plan_task(recorded_tasks("gres2-1task-per-node")[0], RuntimeSettings(memory_growth=False),
                         site_dir=SITE).env
    )


@pytest.mark.parametrize("strategy", ["mirrored", "none"])
def test_single_process_strategies_get_only_the_gpu_variables_and_the_runtime(strategy: str) -> None:
    settings = RuntimeSettings(strategy=strategy, memory_growth=False)  # type: ignore[arg-type]
    plan = plan_task(recorded_tasks("gres2-1task-per-node")[1], settings, site_dir=SITE)
    assert plan.env == {"CUDA_VISIBLE_DEVICES": "0,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "PYTHONPATH": SITE}
    assert plan.address is None


def test_a_bad_address_map_is_a_setup_error() -> None:
    env = {**recorded_tasks("gres2-cyclic")[0], "HPC_TF_NODE_ADDRESS_MAP": "node1"}
    with pytest.raises(RuntimeSetupError, match="expected node=address"):
        plan_task(env, RuntimeSettings(), site_dir=SITE)


def test_node_env_reads_the_resolved_job_and_names_the_run_dirs_hooks(tmp_path: Path) -> None:
    resolved = tmp_path / "resolved.json"
    resolved.write_text(
        json.dumps({"runtime": {"gpus_per_task": 1, "port_range": [31000, 31099]}}), encoding="utf-8"
    )
    env = recorded_tasks("gres2-2tasks-per-node")[1]
    without_runtime = node_env(env, resolved)
    assert without_runtime["CUDA_VISIBLE_DEVICES"] == "1"
    assert all(
        31000 <= int(w.rpartition(":")[2]) <= 31099
        for w in json.loads(without_runtime["TF_CONFIG"])["cluster"]["worker"]
    )
    assert without_runtime["PYTHONPATH"].endswith("hpc/runtime/node/sitedir")  # this hpc-tf's hooks

    install_into(tmp_path / "runtime")
    with_runtime = node_env(env, resolved)
    assert with_runtime["PYTHONPATH"] == str(tmp_path.resolve() / "runtime" / "hpc_tf_runtime" / "sitedir")
    assert {k: v for k, v in with_runtime.items() if k != "PYTHONPATH"} == {
        k: v for k, v in without_runtime.items() if k != "PYTHONPATH"
    }
    assert node_env(env)["CUDA_VISIBLE_DEVICES"] == "1"  # defaults: the node's 2 GPUs over its 2 tasks


def test_every_task_can_import_the_runtime_whatever_its_checkpoint_settings() -> None:
    """PYTHONPATH names the sitecustomize that loads hpc_tf_runtime (Resumable) even for a single-worker
    job without preemption or checkpoints, which gets no hooks."""
    plan = plan_task(recorded_tasks("cpu-2tasks")[0], RuntimeSettings(strategy="none"), site_dir=SITE)
    assert "HPC_TF_HOOKS" not in plan.env
    assert plan.env["PYTHONPATH"] == SITE
