"""The metrics file's writer and who gets one (hpc.runtime.node.metrics, task_env.metrics_config).

Model.fit's recording runs with real TensorFlow in tests/integration/test_metrics_local.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpc.errors import SpecError
from hpc.paths import RunPaths
from hpc.resolve import resolve
from hpc.runtime.node import metrics
from hpc.runtime.node.hook_config import METRICS_FILE, HookConfig, MetricsConfig
from hpc.runtime.node.settings import RuntimeSettings, settings_from_mapping
from hpc.runtime.node.task_env import metrics_config, plan_task
from hpc.site.load import load_site
from hpc.spec import load_spec_text
from tests.unit._runtime_fixtures import recorded_tasks

ROW_KEYS = {"v", "kind", "epoch", "step", "epochs", "steps", "values", "time", "attempt", "job"}


def rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process as a chief whose metrics go to ``tmp_path/metrics.jsonl`` (restart 2 of job 77)."""
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    path = tmp_path / METRICS_FILE
    metrics.install(MetricsConfig(str(path)))
    yield path
    monkeypatch.setattr(metrics, "_config", None)
    monkeypatch.setattr(metrics, "_writer", None)


def test_log_appends_one_complete_row_per_call_with_every_key(installed: Path) -> None:
    class Scalar:  # what a tensor offers
        def __float__(self) -> float:
            return 0.25

    metrics.log(step=10, epoch=0, loss=Scalar(), accuracy=1)
    metrics.log(epoch=0, epochs=3, steps=30, loss=0.5, val_loss=float("nan"), lr=float("inf"))
    first, second = rows(installed)
    assert set(first) == set(second) == ROW_KEYS
    assert {k: v for k, v in first.items() if k != "time"} == {
        "v": 1, "kind": "step", "epoch": 0, "step": 10, "epochs": None, "steps": None,
        "values": {"loss": 0.25, "accuracy": 1.0}, "attempt": 2, "job": "77"}
    assert [second[key] for key in ("kind", "epoch", "step", "epochs", "steps")] == ["epoch", 0, None, 3, 30]
    assert second["values"] == {"loss": 0.5, "val_loss": None, "lr": None}  # not finite: null, still valid JSON
    assert isinstance(first["time"], float) and math.isfinite(first["time"])
    assert installed.read_bytes().endswith(b"\n") and installed.read_bytes().count(b"\n") == 2


def test_log_refuses_a_value_that_is_not_a_number_naming_it(installed: Path) -> None:
    with pytest.raises(TypeError, match=r"log: optimizer='adam' is not a number"):
        metrics.log(step=1, optimizer="adam")
    assert not installed.exists()


def test_log_does_nothing_outside_an_hpc_tf_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    metrics.log(step=1, loss=0.1)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_cannot_be_written_is_said_once_and_training_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = metrics.MetricsWriter(str(tmp_path / "missing" / METRICS_FILE), attempt=0, job="")
    writer.write("epoch", {"loss": 1.0}, epoch=0, sync=True)
    writer.write("epoch", {"loss": 0.5}, epoch=1, sync=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"hpc-tf: cannot write metrics to {tmp_path}/missing/metrics.jsonl: ")
    assert lines[0].endswith("; training goes on without them")


def test_rows_are_appended_to_what_an_earlier_attempt_wrote(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    path.write_bytes(b'{"v":1,"kind":"epoch","epoch":0}\n')
    metrics.MetricsWriter(str(path), attempt=1, job="5").write("epoch", {"loss": 1.0}, epoch=0)
    assert [row["attempt"] for row in rows(path)[1:]] == [1] and len(rows(path)) == 2


# ---------------------------------------------------------------- who records: the chief of an hpc-tf run

def test_only_the_chief_of_an_hpc_tf_run_gets_a_metrics_file() -> None:
    run = {"HPC_TF_RUN_DIR": "/runs/r1"}
    assert metrics_config(RuntimeSettings(), run, 0) == MetricsConfig("/runs/r1/metrics.jsonl", None)
    every = RuntimeSettings(metrics_every_steps=50)
    assert metrics_config(every, run, 0) == MetricsConfig("/runs/r1/metrics.jsonl", 50)
    assert metrics_config(RuntimeSettings(), run, 1) is None  # a worker: the chief logs the same values
    assert metrics_config(RuntimeSettings(), {}, 0) is None  # not an hpc-tf run
    assert metrics_config(RuntimeSettings(metrics=False), run, 0) is None  # metrics: {enabled: false}
    assert RunPaths.at("/runs/r1").metrics == Path("/runs/r1") / METRICS_FILE


def test_every_worker_of_a_two_worker_step_gets_hooks_but_only_rank_0_records() -> None:
    tasks = recorded_tasks("cpu-2tasks")
    plans = [plan_task({**env, "HPC_TF_RUN_DIR": "/runs/r1"}, RuntimeSettings(), site_dir="/site") for env in tasks]
    hooks = [HookConfig.from_json(plan.env["HPC_TF_HOOKS"]) for plan in plans]
    assert [h.metrics for h in hooks] == [MetricsConfig("/runs/r1/metrics.jsonl"), None]


def test_the_spec_section_reaches_the_runtime() -> None:
    environ = {"HOME": "/home/alice", "USER": "alice"}
    site = load_site("sandbox", (), environ)

    def runtime(text: str) -> RuntimeSettings:
        spec = load_spec_text("name: m\ncommand: python t.py\n" + text, "job.yaml", Path("/home/alice/m"))
        return settings_from_mapping(json.loads(resolve(spec, site, "m-run", environ).to_json())["runtime"])

    assert (runtime("").metrics, runtime("").metrics_every_steps) == (True, None)
    every = runtime("metrics: {every_steps: 100}\n")
    assert (every.metrics, every.metrics_every_steps) == (True, 100)
    assert runtime("metrics: {enabled: false}\n").metrics is False


@pytest.mark.parametrize(("text", "message"), [
    ("metrics: {every_steps: 0}\n", "job.yaml:3: metrics.every_steps: Input should be greater than or equal to 1"),
    ("metrics: {every: 3}\n", "job.yaml:3: metrics.every: unknown key (did you mean 'every_steps'?)"),
])
def test_a_wrong_metrics_section_is_one_line_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text("name: m\ncommand: python t.py\n" + text, "job.yaml", Path("/home/alice/m"))
    assert str(caught.value).splitlines()[0].startswith(message)
