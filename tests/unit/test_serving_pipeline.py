from __future__ import annotations

import pytest

from hpc.errors import ModelNameError
from hpc.serving.pipeline import handoff_job


def test_dependent_handoff_job() -> None:
    job = handoff_job(python="/venv/bin/python", run_dir="/runs/a b", model="mlp", fmt="python",
                      savedmodel_subdir="export", site="sandbox", training_job_id="42", partition="cpu")
    assert job.argv == ("/venv/bin/python", "-m", "hpc.cli", "handoff", "/runs/a b", "--model", "mlp",
                        "--site", "sandbox", "--format", "python")
    assert (job.partition, job.dependency) == ("cpu", "afterok:42")


def test_bad_model_name_refused_before_submitting() -> None:
    with pytest.raises(ModelNameError):
        handoff_job(python="p", run_dir="r", model="../x", fmt=None, savedmodel_subdir="export", site="s",
                    training_job_id="1", partition=None)
