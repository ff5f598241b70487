"""`hpc-tf node-env`: one call into hpc.runtime, printed as JSON or as shell assignments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from _runtime_fixtures import recorded_tasks
from typer.testing import CliRunner

import hpc.cli.node_env
from hpc.cli.app import app

PLAN = {"CUDA_VISIBLE_DEVICES": "", "TF_CONFIG": '{"cluster": {"worker": ["a b:1"]}}'}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, str], Path | None]]:
    seen: list[tuple[dict[str, str], Path | None]] = []

    def fake(environ: Mapping[str, str], resolved: Path | None = None) -> dict[str, str]:
        seen.append((dict(environ), resolved))
        return PLAN

    monkeypatch.setattr(hpc.cli.node_env, "compute_node_env", fake)
    return seen


def test_json_prints_the_library_answer_exactly(calls: list[tuple[dict[str, str], Path | None]]) -> None:
    result = CliRunner().invoke(
        app, ["node-env", "--json", "--resolved", "run/resolved.json"], env={"X": "1"}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == PLAN
    ((environ, resolved),) = calls
    assert environ["X"] == "1" and resolved == Path("run/resolved.json")


def test_default_output_is_shell_assignments(calls: list[tuple[dict[str, str], Path | None]]) -> None:
    result = CliRunner().invoke(app, ["node-env"])
    assert result.exit_code == 0, result.output
    assert result.output == 'CUDA_VISIBLE_DEVICES=\'\'\nTF_CONFIG=\'{"cluster": {"worker": ["a b:1"]}}\'\n'
    assert calls[0][1] is None


def test_real_command_in_a_recorded_task_and_outside_a_step() -> None:
    hpc_tf = Path(sys.executable).parent / "hpc-tf"
    env = {**recorded_tasks("gres2-cyclic")[2], "PATH": os.environ["PATH"]}
    inside = subprocess.run(
        [hpc_tf, "node-env", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert inside.returncode == 0, inside.stderr
    printed = json.loads(inside.stdout)
    assert printed["CUDA_VISIBLE_DEVICES"] == "1"
    assert json.loads(printed["TF_CONFIG"])["task"] == {"type": "worker", "index": 2}

    outside = subprocess.run(
        [hpc_tf, "node-env"], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=60
    )
    assert outside.returncode == 4
    assert "hpc-tf: error: not inside a Slurm job" in outside.stderr and "run under srun" in outside.stderr
