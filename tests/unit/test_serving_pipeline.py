from __future__ import annotations

import pytest

from hpc.errors import ModelNameError
from hpc.serving.pipeline import handoff_command


def test_dependent_handoff_job() -> None:
    argv = handoff_command(python="/venv/bin/python", run_dir="/runs/a b", model="mlp", fmt="python",
                           savedmodel_subdir="export", site="sandbox")
    assert argv == ("/venv/bin/python", "-m", "hpc.cli", "handoff", "/runs/a b", "--model", "mlp",
                    "--site", "sandbox", "--format", "python")


def test_bad_model_name_refused_before_submitting() -> None:
    with pytest.raises(ModelNameError):
        handoff_command(python="p", run_dir="r", model="../x", fmt=None, savedmodel_subdir="export", site="s")
