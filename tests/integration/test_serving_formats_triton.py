"""The fast served path on a real Triton (the tritonserver bundled in nvidia-pytriton), through the hpc-tf CLI.

``python-onnx``: tf2onnx's conversion run by ONNX Runtime inside the python backend, and ``onnx``: the same
model run by hpc-tf's own backend inside tritonserver (hpc.serving.native_backend), answer like the trained
model (within the ONNX tolerance) over gRPC, also when the dynamic batcher joins concurrent requests into one
run; ``--format auto`` hands off the format that passed parity and ran a request faster, and its record says
which and why. Speed itself is a benchmark (bench/serving.py), not a test.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpc.serving.formats import ONNX_TOLERANCE
from tests.integration.test_serving_triton import HPC_TF, hpc_tf, infer, owner_config, server
from tests.unit._serving_models import export_mlp, predict

pytestmark = [pytest.mark.triton, pytest.mark.tf]
__all__ = ["owner_config", "server"]  # the module fixtures shared with test_serving_triton.py


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_mlp(tmp_path_factory.mktemp("models") / "mlp", seed=3)


@pytest.mark.parametrize(("fmt", "files"), [("python-onnx", ["model.onnx", "model.py"]), ("onnx", ["model.onnx"])])
def test_onnx_formats_serve_the_trained_models_answers(server: dict[str, Any], mlp: Path, fmt: str,
                                                      files: list[str]) -> None:
    """No SavedModel in either: TensorFlow never enters the python stub (python-onnx), and onnx is model.onnx
    alone, run by hpc-tf's backend inside tritonserver. The hand-off record says why the config batches or not."""
    done = hpc_tf("handoff", str(mlp), "--model", f"mlp_{fmt}", "--format", fmt,
                  "--repository", str(server["repo"]), "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["ok"] and record["format"] == fmt
    assert record["parity"]["onnxruntime"]["ok"] and record["parity"]["triton"]["ok"]
    assert record["parity"]["triton"]["max_abs_diff"] <= ONNX_TOLERANCE
    version_dir = server["repo"] / f"mlp_{fmt}" / str(record["version"])
    assert sorted(p.name for p in version_dir.iterdir() if p.name != "__pycache__") == files  # stubs compile model.py
    # the generated config batches where it pays: the python stub's round trip is shared by a batch; an MLP of
    # a few µs run inside tritonserver would pay the batcher's hand-off and gain nothing
    assert record["batching"]["dynamic"] is (fmt == "python-onnx"), record["batching"]
    [publish] = [line for line in done.stderr.splitlines() if line.startswith("publish:")]
    assert ("(dynamic batching off: ONNX Runtime ran a batch of 1 in" in publish) is (fmt == "onnx"), publish
    config = (server["repo"] / f"mlp_{fmt}" / "config.pbtxt").read_text()
    assert ("dynamic_batching" in config) is (fmt == "python-onnx")
    x = np.random.default_rng(5).normal(size=(5, 16)).astype("float32")
    out, version = infer(server, x, model=f"mlp_{fmt}")
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
    assert set(times) == {"python", "onnx"} and all(t > 0 for t in times.values())  # the node has the backend
    faster = min(times, key=times.get)
    assert record["format"] == choice["format"] == faster  # a converted model that passes parity: the faster wins
    assert choice["onnxruntime_parity"]["ok"] and f"{faster} ran a request in" in choice["why"]
    config = (server["repo"] / "mlp_auto" / "config.pbtxt").read_text()
    assert ("intra_op_thread_count" in config) == (faster == "onnx")
    x = np.random.default_rng(6).normal(size=(3, 16)).astype("float32")
    out, _ = infer(server, x, model="mlp_auto")
    np.testing.assert_allclose(out, predict(mlp, x), rtol=0, atol=ONNX_TOLERANCE)


def test_concurrent_requests_joined_into_one_run_each_get_their_own_rows(server: dict[str, Any], mlp: Path) -> None:
    """A queue delay long enough that the dynamic batcher joins what arrives together: every client still gets
    the rows of its own input back, and Triton's statistics (reported by the backend) count the joined runs."""
    import tritonclient.grpc as grpcclient

    from hpc.serving.config import ServingOptions
    from hpc.serving.handoff import handoff
    from hpc.serving.repository import Repository

    record = handoff(mlp, "mlp_joined", Repository.at(server["repo"]), "onnx",
                     options=ServingOptions(dynamic_batching=True, queue_delay_us=300_000))
    rng = np.random.default_rng(8)
    batches = [rng.normal(size=(rows, 16)).astype("float32") for rows in (1, 2, 3, 1, 2, 3)]
    results: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        client = grpcclient.InferenceServerClient(f"{server['host']}:{server['grpc_port']}")
        inp = grpcclient.InferInput("features", list(batches[i].shape), "FP32")
        inp.set_data_from_numpy(batches[i])
        results[i] = client.infer("mlp_joined", [inp], client_timeout=30).as_numpy("output_0")
        client.close()

    before = counts(server, "mlp_joined", record.version)
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, x in enumerate(batches):
        np.testing.assert_allclose(results[i], predict(mlp, x), rtol=0, atol=ONNX_TOLERANCE)
    after = counts(server, "mlp_joined", record.version)
    assert after["success"] - before["success"] == len(batches)
    assert after["inference_count"] - before["inference_count"] == sum(len(x) for x in batches)
    assert after["execution_count"] - before["execution_count"] < len(batches)  # some requests shared a run


def counts(server: dict[str, Any], model: str, version: int) -> dict[str, int]:
    """Triton's statistics of one model version: requests answered, rows inferred, model runs."""
    import tritonclient.grpc as grpcclient

    from hpc.serving import secret

    headers = secret.load(server["repo"]).grpc_headers()  # statistics are the owner's
    client = grpcclient.InferenceServerClient(f"{server['host']}:{server['grpc_port']}")
    stats = client.get_inference_statistics(model, str(version), headers=headers, as_json=True)["model_stats"][0]
    client.close()
    return {"success": int(stats["inference_stats"]["success"].get("count", 0)),
            "inference_count": int(stats.get("inference_count", 0)),
            "execution_count": int(stats.get("execution_count", 0))}


def test_a_node_that_cannot_build_the_backend_serves_and_refuses_onnx_saying_why(tmp_path: Path, mlp: Path) -> None:
    repo, empty = tmp_path / "repo", tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "XDG_CACHE_HOME": str(tmp_path / "cache")}  # no compiler, no build
    up = subprocess.run([HPC_TF, "serve", "up", "--json", "--repository", str(repo), "--site", "local"],
                        capture_output=True, text=True, timeout=120, env=env, check=False)
    assert up.returncode == 0, up.stderr
    try:
        endpoint = json.loads(up.stdout)
        assert "onnxruntime" not in endpoint["backends"]
        assert "no C++ compiler" in endpoint["missing_backends"]["onnxruntime"]
        assert ("hpc-tf: note: format onnx cannot serve on this node, it has no onnxruntime backend: format onnx "
                "compiles hpc-tf's Triton backend once, and no C++ compiler is on PATH") in up.stderr
        done = hpc_tf("handoff", str(mlp), "--model", "m", "--format", "onnx", "--repository", str(repo))
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert "needs Triton's onnxruntime backend" in done.stderr and "no C++ compiler" in done.stderr
        assert not (repo / "m").exists()  # refused before any stage
    finally:
        down = hpc_tf("serve", "down", "--repository", str(repo), timeout=60)
        assert down.returncode == 0, down.stderr


def test_a_batched_config_for_an_onnx_model_without_a_batch_dimension_fails_its_load_saying_why(
    server: dict[str, Any],
) -> None:
    """The backend joins requests along the first dimension: an output that is not the batch (here a sum over
    the batch) could only be split wrongly, so such a model is refused when it loads, naming the fix."""
    import onnx
    import tritonclient.grpc as grpcclient
    from onnx import TensorProto, helper

    from hpc.serving import secret

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)], "sum_over_batch",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [0])])
    model_dir = server["repo"] / "sum_over_batch"
    (model_dir / "1").mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(
        'name: "sum_over_batch" platform: "onnxruntime_onnx" max_batch_size: 8\n'
        'input { name: "x" data_type: TYPE_FP32 dims: [3] }\noutput { name: "y" data_type: TYPE_FP32 dims: [3] }\n')
    client = grpcclient.InferenceServerClient(f"{server['host']}:{server['grpc_port']}")
    refusal = r"ONNX tensor 'y' has no free first \(batch\) dimension: set max_batch_size: 0"
    with pytest.raises(Exception, match=refusal):
        client.load_model("sum_over_batch", headers=secret.load(server["repo"]).grpc_headers())
    client.close()
