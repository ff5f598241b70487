"""The pure parts of preemption and resume: positions, decisions, configuration, what the bootstrap exports."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _runtime_fixtures import recorded_tasks

from hpc.errors import RuntimeSetupError
from hpc.resolve import resolve
from hpc.runtime.node import keras_resume, preemption
from hpc.runtime.node.hook_config import CHECKPOINT_DIR_VARIABLE, METRICS_FILE_VARIABLE, HookConfig, MetricsConfig
from hpc.runtime.node.preemption import (
    REQUEUE_EXIT_CODE,
    Cluster,
    Position,
    PreemptionConfig,
    crossed_save_point,
    restore_action,
)
from hpc.runtime.node.settings import RuntimeSettings, settings_from_mapping
from hpc.runtime.node.task_env import plan_task, preemption_config
from hpc.site.load import load_site
from hpc.spec import load_spec_text

SITE = "/opt/run/runtime/hpc_tf_runtime/sitedir"
CONFIG = PreemptionConfig(checkpoint_dir="/scratch/run/ckpt", every_steps=50, keep=2, handle_signals=True)


def test_requeue_code_is_a_plain_exit_status_apart_from_signals_and_oom() -> None:
    # the batch script tells it from 128 + signal (a lost task) and from srun's 253 (out of memory)
    assert 1 < REQUEUE_EXIT_CODE < 128


@pytest.mark.parametrize(
    ("saved", "fit_call", "action"),
    [
        (None, 0, "fresh"),
        (Position(fit_call=0, epoch=1, batch=7, consumed=7, global_step=39), 0, "resume"),
        (Position(fit_call=1, epoch=0, batch=3, consumed=3, global_step=99), 0, "replay"),  # a later fit's
        (Position(fit_call=0, epoch=2, batch=0, consumed=0, global_step=64), 1, "fresh"),  # an earlier fit's
    ],
)
def test_restore_action_depends_on_which_fit_call_saved(saved: Position | None, fit_call: int, action: str) -> None:
    assert restore_action(saved, fit_call) == action


@pytest.mark.parametrize(
    ("last", "now", "every", "due"),
    [
        (0, 0, 10, False),
        (0, 9, 10, False),
        (0, 10, 10, True),
        (10, 10, 10, False),  # just saved (or just resumed from) this step
        (10, 20, 10, True),
        (8, 12, 4, True),  # steps_per_execution 4: 8 -> 12 crosses 12
        (6, 9, 4, True),  # steps_per_execution 3 crosses a multiple without landing on it
        (24, 40, None, False),
        (24, 40, 0, False),
    ],
)
def test_periodic_checkpoints_are_due_when_a_multiple_is_crossed(last: int, now: int, every: int | None,
                                                                 due: bool) -> None:
    assert crossed_save_point(last, now, every) is due


def test_position_round_trips_through_the_checkpoint_variable() -> None:
    position = Position(fit_call=1, epoch=2, batch=5, consumed=69, global_step=133)
    assert Position.from_list(position.as_list()) == position
    assert Position().as_list() == [0, 0, 0, 0, 0]


def test_a_task_that_shares_its_run_directory_keeps_its_own_checkpoints_and_metrics() -> None:
    """A campaign's array tasks share their stage's run directory: each task's process checkpoints and
    records metrics where its environment says, not into files every task of the array writes."""
    hooks = HookConfig(30, True, ("n1",), preemption=CONFIG, metrics=MetricsConfig("/scratch/run/metrics.jsonl", 10))
    mine = hooks.for_task({CHECKPOINT_DIR_VARIABLE: "/c/tasks/3/train/checkpoints",
                           METRICS_FILE_VARIABLE: "/c/tasks/3/train/metrics.jsonl"})
    assert mine.preemption == PreemptionConfig("/c/tasks/3/train/checkpoints", 50, 2, True)
    assert mine.metrics == MetricsConfig("/c/tasks/3/train/metrics.jsonl", 10)
    assert hooks.for_task({}) == hooks
    assert HookConfig(30, True, ("n1",)).for_task({METRICS_FILE_VARIABLE: "/m"}).metrics is None  # not the chief


def test_hook_config_carries_the_preemption_settings() -> None:
    hooks = HookConfig(coordination_timeout_s=30, keras_mwms_fix=True, worker_nodes=("n1", "n2"), preemption=CONFIG)
    assert HookConfig.from_json(hooks.to_json()) == hooks
    plain = HookConfig(coordination_timeout_s=30, keras_mwms_fix=True, worker_nodes=("n1", "n2"))
    assert HookConfig.from_json(plain.to_json()).preemption is None
    # a hook variable written before preemption existed still reads
    assert HookConfig.from_json('{"coordination_timeout_s":5,"keras_mwms_fix":false,"worker_nodes":[]}') == \
        HookConfig(coordination_timeout_s=5, keras_mwms_fix=False, worker_nodes=())


def test_settings_read_the_checkpoint_keys() -> None:
    settings = settings_from_mapping({
        "checkpoint_dir": "/scratch/c", "checkpoint_every_steps": 25, "checkpoint_keep": 4, "preemption": True,
    })
    assert (settings.checkpoint_dir, settings.checkpoint_every_steps, settings.checkpoint_keep, settings.preemption) \
        == ("/scratch/c", 25, 4, True)
    assert settings_from_mapping({}).checkpoint_dir is None
    with pytest.raises(RuntimeSetupError, match=r"runtime\.preemption: expected true or false"):
        settings_from_mapping({"preemption": "yes"})
    with pytest.raises(RuntimeSetupError, match=r"runtime\.checkpoint_keep"):
        settings_from_mapping({"checkpoint_keep": 0})


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (RuntimeSettings(checkpoint_dir="/c", preemption=True), PreemptionConfig("/c", None, 3, True)),
        (RuntimeSettings(checkpoint_dir="/c", checkpoint_every_steps=10), PreemptionConfig("/c", 10, 3, False)),
        (RuntimeSettings(checkpoint_dir="/c"), None),  # neither: nothing to do
        (RuntimeSettings(preemption=True), None),  # no directory (an old resolved.json)
    ],
)
def test_checkpointing_is_on_with_preemption_or_periodic_checkpoints(
    settings: RuntimeSettings, expected: PreemptionConfig | None
) -> None:
    assert preemption_config(settings, {}) == expected


def test_the_checkpoint_directory_is_the_one_the_batch_script_expanded() -> None:
    """resolved.json keeps checkpoint.dir as written (``${SCRATCH}/ckpt``); the batch script exports
    it expanded, and that is where the workers checkpoint."""
    settings = RuntimeSettings(checkpoint_dir="${SCRATCH}/ckpt", preemption=True)
    config = preemption_config(settings, {"HPC_TF_CHECKPOINT_DIR": "/scratch/u/ckpt"})
    assert config is not None and config.checkpoint_dir == "/scratch/u/ckpt"


def test_a_single_worker_job_with_preemption_gets_the_hooks_without_tf_config() -> None:
    env = recorded_tasks("gres2-1task-per-node")[0]
    settings = RuntimeSettings(strategy="none", checkpoint_dir="/c", checkpoint_every_steps=5, preemption=True)
    plan = plan_task(env, settings, site_dir=SITE).env
    assert "TF_CONFIG" not in plan
    assert plan["PYTHONPATH"] == SITE
    hooks = HookConfig.from_json(plan["HPC_TF_HOOKS"])
    assert hooks.worker_nodes == ()
    assert hooks.preemption == PreemptionConfig("/c", 5, 3, True)
    # and without preemption or checkpoints such a job gets no hooks at all
    assert "HPC_TF_HOOKS" not in plan_task(env, RuntimeSettings(strategy="none"), site_dir=SITE).env


def test_resolve_carries_the_spec_into_the_runtime_plan() -> None:
    text = ("name: p\ncommand: python t.py\nresources: {nodes: 2, time: '1:00:00'}\n"
            "checkpoint: {every_steps: 200, keep: 5}\n"
            "preemption: {enabled: true, warning_seconds: 120, max_restarts: 2}\n")
    environ = {"HOME": "/home/alice", "USER": "alice"}
    job = resolve(load_spec_text(text, "job.yaml", Path("/home/alice/p")), load_site("sandbox", (), environ),
                  "p-run", environ)
    runtime = job.runtime
    assert (runtime.checkpoint_every_steps, runtime.checkpoint_keep, runtime.preemption, runtime.max_restarts) == \
        (200, 5, True, 2)
    assert runtime.checkpoint_dir == f"{job.output_dir}/checkpoints"
    settings = settings_from_mapping(json.loads(job.to_json())["runtime"])
    assert preemption_config(settings, {}) == PreemptionConfig(runtime.checkpoint_dir, 200, 5, True)


def _resolver(task_type: str, task_id: int, spec: dict[str, list[str]]) -> Any:
    cluster_spec = SimpleNamespace(as_dict=lambda: spec)
    return SimpleNamespace(cluster_resolver=SimpleNamespace(
        task_type=task_type, task_id=task_id, cluster_spec=lambda: cluster_spec))


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (SimpleNamespace(), Cluster(0, 1, True)),  # the default strategy has no resolver
        (_resolver("worker", 0, {}), Cluster(0, 1, True)),  # MWMS without TF_CONFIG
        (_resolver("worker", 0, {"worker": ["a:1", "b:1"]}), Cluster(0, 2, True)),
        (_resolver("worker", 1, {"worker": ["a:1", "b:1"]}), Cluster(1, 2, False)),
        (_resolver("chief", 0, {"chief": ["c:1"], "worker": ["a:1"]}), Cluster(0, 2, True)),
        (_resolver("worker", 0, {"chief": ["c:1"], "worker": ["a:1"]}), Cluster(1, 2, False)),
    ],
)
def test_cluster_view_names_the_chief(strategy: Any, expected: Cluster) -> None:
    assert Cluster.of(strategy) == expected


def test_fit_loop_check_refuses_a_loop_it_does_not_know() -> None:
    def fit(self: Any, initial_epoch: int = 0) -> None:
        initial_epoch = self._initial_epoch or initial_epoch
        for _ in range(initial_epoch):
            self.train_function(None)

    with pytest.raises(RuntimeSetupError, match=r"missing: callbacks\.on_train_batch_begin"):
        keras_resume.check_fit_loop(fit, "9.9.9")


def test_the_warning_handler_only_sets_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preemption, "_warning", type(preemption._warning)())
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        preemption.install(CONFIG)
        assert preemption.configured() == CONFIG and not preemption.warned()
        signal.raise_signal(signal.SIGUSR1)  # the process survives it
        assert preemption.warned()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        monkeypatch.setattr(preemption, "_config", None)
