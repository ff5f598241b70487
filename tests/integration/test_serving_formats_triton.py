"""The fast served path on a real Triton (the tritonserver bundled in nvidia-pytriton), through the hpc-tf CLI.

``python-onnx``: tf2onnx's conversion run by ONNX Runtime inside the python backend answers like the trained
model (within the ONNX tolerance) over gRPC; ``--format auto`` hands off the format that passed parity and ran
a request faster, and its record says which and why. Speed itself is a benchmark (bench/serving.py), not a test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpc.serving.formats import ONNX_TOLERANCE
from tests.integration.test_serving_triton import hpc_tf, infer, owner_config, server
from tests.unit._serving_models import export_mlp, predict

pytestmark = [pytest.mark.triton, pytest.mark.tf]
__all__ = ["owner_config", "server"]  # the module fixtures shared with test_serving_triton.py


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_mlp(tmp_path_factory.mktemp("models") / "mlp", seed=3)


def test_python_onnx_serves_the_trained_models_answers(server: dict[str, Any], mlp: Path) -> None:
    done = hpc_tf("handoff", str(mlp), "--model", "mlp_ort", "--format", "python-onnx",
                  "--repository", str(server["repo"]), "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["ok"] and record["format"] == "python-onnx"
    assert record["parity"]["onnxruntime"]["ok"] and record["parity"]["triton"]["ok"]
    assert record["parity"]["triton"]["max_abs_diff"] <= ONNX_TOLERANCE
    version_dir = server["repo"] / "mlp_ort" / str(record["version"])
    served = sorted(p.name for p in version_dir.iterdir() if p.name != "__pycache__")  # the stub compiles model.py
    assert served == ["model.onnx", "model.py"]  # no SavedModel: TensorFlow never enters the stub
    x = np.random.default_rng(5).normal(size=(5, 16)).astype("float32")
    out, version = infer(server, x, model="mlp_ort")
    assert version == str(record["version"])
    np.testing.assert_allclose(out, predict(mlp, x), rtol=0, atol=ONNX_TOLERANCE)


def test_auto_hands_off_the_faster_format_that_passes_parity_and_records_why(server: dict[str, Any],
                                                                            mlp: Path) -> None:
    done = hpc_tf("handoff", str(mlp), "--model", "mlp_auto", "--format", "auto",
                  "--repository", str(server["repo"]), "--json")
    assert done.returncode == 0, done.stderr
    assert "choose:" in done.stderr
    record = json.loads(done.stdout)
    choice = record["choice"]
    times = choice["request_us"]
    assert set(times) == {"python", "python-onnx"} and all(t > 0 for t in times.values())
    faster = min(times, key=times.get)
    assert record["format"] == choice["format"] == faster  # a converted model that passes parity: the faster wins
    assert choice["onnxruntime_parity"]["ok"] and f"{faster} ran a request in" in choice["why"]
    config = (server["repo"] / "mlp_auto" / "config.pbtxt").read_text()
    assert ("ORT_INTRA_OP_THREADS" in config) == (faster == "python-onnx")
    x = np.random.default_rng(6).normal(size=(3, 16)).astype("float32")
    out, _ = infer(server, x, model="mlp_auto")
    np.testing.assert_allclose(out, predict(mlp, x), rtol=0, atol=ONNX_TOLERANCE)
