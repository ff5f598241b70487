"""``metrics: {tensorboard: true}``: from the spec to the chief's hooks, where the event files go, and
what a process without TensorFlow does (hpc.runtime.node.tensorboard). The events themselves, from real
TensorFlow, are compared with Keras' History in tests/integration/test_tensorboard_local.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hpc.paths import RunPaths
from hpc.resolve import resolve
from hpc.runtime.node import metrics
from hpc.runtime.node.hook_config import HookConfig, MetricsConfig
from hpc.runtime.node.settings import RuntimeSettings, settings_from_mapping
from hpc.runtime.node.task_env import metrics_config
from hpc.runtime.node.tensorboard import EventWriter, place
from hpc.site.load import load_site
from hpc.spec import load_spec_text


def test_the_spec_switch_reaches_the_chief_whose_events_go_beside_its_metrics_file() -> None:
    environ = {"HOME": "/home/alice", "USER": "alice"}
    site = load_site("sandbox", (), environ)

    def runtime(text: str) -> RuntimeSettings:
        spec = load_spec_text("name: m\ncommand: python t.py\n" + text, "job.yaml", Path("/home/alice/m"))
        return settings_from_mapping(json.loads(resolve(spec, site, "m-run", environ).to_json())["runtime"])

    assert runtime("").metrics_tensorboard is False  # off unless asked for
    settings = runtime("metrics: {tensorboard: true}\n")
    chief = metrics_config(settings, {"HPC_TF_RUN_DIR": "/runs/r1"}, 0)
    assert chief is not None and chief.tensorboard_dir == str(RunPaths.at("/runs/r1").tensorboard)
    assert metrics_config(settings, {"HPC_TF_RUN_DIR": "/runs/r1"}, 1) is None  # workers write neither
    # a campaign's array task: its own metrics file, so its own event files beside it
    hooks = HookConfig(5, True, (), None, chief).for_task({"HPC_TF_METRICS_FILE": "/c/tasks/3/train/metrics.jsonl"})
    assert hooks.metrics is not None and hooks.metrics.tensorboard_dir == "/c/tasks/3/train/tensorboard"
    assert MetricsConfig("/runs/r1/metrics.jsonl").tensorboard_dir is None


def test_values_are_placed_as_keras_tensorboard_callback_places_them() -> None:
    assert place("epoch", "loss") == ("train", "epoch_loss")
    assert place("epoch", "val_loss") == ("validation", "epoch_loss")
    assert place("epoch", "learning_rate") == ("train", "epoch_learning_rate")
    assert place("step", "mae") == ("train", "batch_mae")


def test_a_process_without_tensorflow_says_so_once_and_its_metrics_file_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    writer = metrics.MetricsWriter(str(tmp_path / "metrics.jsonl"), attempt=0, job="5",
                                   events=EventWriter(str(tmp_path / "tensorboard")))
    writer.write("epoch", {"loss": 1.0}, epoch=0)
    writer.write("epoch", {"loss": 0.5}, epoch=1)
    said = capsys.readouterr().err.splitlines()
    assert said == [f"hpc-tf: no TensorBoard events in {tmp_path / 'tensorboard'}: this process has not imported "
                    "TensorFlow; the metrics file has every value"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "tensorboard").exists()
