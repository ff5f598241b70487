"""Hand-off against a real Triton (the tritonserver bundled in nvidia-pytriton) through the hpc-tf CLI.

v1 is served with the model's own outputs; v2 is handed off while gRPC and HTTP clients send requests
continuously (0 failures, v2 serving); a v3 that cannot load and a v4 whose outputs differ are rolled
back (0 failures, v2 keeps serving); bad names and missing signatures give clear errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpc.serving.config import parse_config
from hpc.serving.handoff import ONNX_TOLERANCE, _onnx_parity
from hpc.serving.samples import SAMPLES_IN_SAVEDMODEL, compute_samples, load_samples, save_samples
from hpc.serving.signature import read_signature
from tests.integration._owner_config import owner_config as owner_config  # the module's keys
from tests.integration._traffic import Traffic
from tests.unit._serving_models import export_mlp, predict

pytestmark = [pytest.mark.triton, pytest.mark.tf]
HPC_TF = str(Path(sys.prefix) / "bin" / "hpc-tf")


def hpc_tf(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HPC_TF, *args, "--site", "local"], capture_output=True, text=True, timeout=timeout,
                          check=False)



@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    return {"v1": export_mlp(base / "v1", seed=1), "v2": export_mlp(base / "v2", seed=2)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    repo = tmp_path_factory.mktemp("repo")
    up = hpc_tf("serve", "up", "--json", "--repository", str(repo), timeout=120)
    assert up.returncode == 0, up.stderr
    endpoint = json.loads(up.stdout)
    try:
        yield {"repo": repo, **endpoint}
    finally:
        down = hpc_tf("serve", "down", "--repository", str(repo), timeout=60)
        assert down.returncode == 0, down.stderr
        assert not (repo / ".hpc-tf" / "server.json").exists()


def infer(endpoint: dict[str, Any], x: np.ndarray, version: str = "", model: str = "mlp") -> tuple[np.ndarray, str]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"{endpoint['host']}:{endpoint['grpc_port']}")
    inp = grpcclient.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], model_version=version, client_timeout=30)
    client.close()
    return result.as_numpy("output_0"), str(result.get_response().model_version)


def unloadable(model: Path, copy: Path) -> Path:
    """A copy of ``model`` whose weights are garbage, with samples stored at export time: its hand-off gets as
    far as the load, which fails."""
    shutil.copytree(model, copy)
    compute_samples(model, "serving_default", copy / SAMPLES_IN_SAVEDMODEL)
    for data in (copy / "variables").glob("variables.data-*"):
        data.write_bytes(b"\0garbage" * 64)
    return copy


def test_handoff_rollover_and_rollback(server: dict[str, Any], models: dict[str, Path], tmp_path: Path) -> None:
    repo = str(server["repo"])
    x = np.random.default_rng(7).normal(size=(8, 16)).astype("float32")

    first = hpc_tf("handoff", str(models["v1"]), "--model", "mlp", "--format", "python", "--repository", repo,
                   "--json")
    assert first.returncode == 0, first.stderr
    for stage in ("source", "signature", "samples", "connect", "publish", "load", "verify"):
        assert f"{stage}:" in first.stderr
    record = json.loads(first.stdout)
    assert record["ok"] and record["version"] == 1 and record["parity"]["triton"]["max_abs_diff"] == 0.0
    assert Path(record["record_path"]).is_file()
    out, version = infer(server, x)
    assert version == "1" and np.array_equal(out, predict(models["v1"], x))

    with Traffic(server, x) as traffic:
        second = hpc_tf("handoff", str(models["v2"]), "--model", "mlp", "--repository", repo, "--json")
        time.sleep(0.5)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["version"] == 2
    assert traffic.failures == [] and traffic.versions["2"] > 0, (traffic.failures[:3], traffic.versions)
    out, version = infer(server, x)
    assert version == "2" and np.array_equal(out, predict(models["v2"], x))

    # v3 cannot load (its weights are garbage); samples stored at export time, so it gets as far as the load
    broken = unloadable(models["v2"], tmp_path / "v3")
    # v4 loads but answers differently from its stored samples: caught by the parity check
    wrong = tmp_path / "v4"
    shutil.copytree(models["v1"], wrong)
    samples = load_samples(broken / SAMPLES_IN_SAVEDMODEL)
    save_samples(wrong / SAMPLES_IN_SAVEDMODEL, samples.inputs, samples.outputs)

    with Traffic(server, x) as traffic:
        third = hpc_tf("handoff", str(broken), "--model", "mlp", "--repository", repo)
        fourth = hpc_tf("handoff", str(wrong), "--model", "mlp", "--repository", repo)
        time.sleep(0.5)
    assert third.returncode == 5 and "failed at stage 'load'" in third.stderr, third.stderr
    assert "previous version keeps serving" in third.stderr
    assert fourth.returncode == 5 and "failed at stage 'verify'" in fourth.stderr, fourth.stderr
    assert "differ from the trained model's" in fourth.stderr
    assert traffic.failures == [], traffic.failures[:3]
    # v4 served between its load and the failed parity check (latest{1}); nothing failed meanwhile
    assert set(traffic.versions) <= {"2", "4"} and traffic.versions["2"] > 0, traffic.versions
    assert sorted(p.name for p in (server["repo"] / "mlp").iterdir()) == ["1", "2", "config.pbtxt"]
    out, version = infer(server, x)
    assert version == "2" and np.array_equal(out, predict(models["v2"], x))
    records = sorted((server["repo"] / ".hpc-tf" / "handoffs" / "mlp").glob("*.json"))
    failed = [json.loads(p.read_text()) for p in records if not json.loads(p.read_text())["ok"]]
    assert [(r["version"], r["failed_stage"], r["rolled_back"]) for r in failed] == [(3, "load", True),
                                                                                      (4, "verify", True)]

    status = hpc_tf("serve", "status", "--repository", repo, "--json")
    assert status.returncode == 0, status.stderr
    states = {(m["name"], m["version"]): m["state"] for m in json.loads(status.stdout)["models"]}
    assert states[("mlp", "2")] == "READY"


def test_serve_status_shows_only_the_repository_s_models_and_versions(server: dict[str, Any],
                                                                     models: dict[str, Path], tmp_path: Path) -> None:
    """After a rollback the removed version is not listed as a version of the model (Triton's index still
    names it, UNAVAILABLE); it is mentioned as rolled back, from its hand-off record. No '.hpc-tf'."""
    repo = str(server["repo"])
    first = hpc_tf("handoff", str(models["v1"]), "--model", "rb", "--repository", repo)
    assert first.returncode == 0, first.stderr
    broken = unloadable(models["v2"], tmp_path / "broken")
    failed = hpc_tf("handoff", str(broken), "--model", "rb", "--repository", repo)
    assert failed.returncode == 5 and "failed at stage 'load'" in failed.stderr, failed.stderr

    status = hpc_tf("serve", "status", "--repository", repo, "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    for entry in info["models"]:  # every model and version listed is one the repository holds
        assert (server["repo"] / entry["name"] / "config.pbtxt").is_file(), entry
        assert not entry["version"] or (server["repo"] / entry["name"] / entry["version"]).is_dir(), entry
    assert [(m["version"], m["state"]) for m in info["models"] if m["name"] == "rb"] == [("1", "READY")]
    assert [(r["model"], r["version"], r["failed_stage"]) for r in info["rolled_back"] if r["model"] == "rb"] == [
        ("rb", 2, "load")]

    text = hpc_tf("serve", "status", "--repository", repo)
    assert text.returncode == 0, text.stderr
    lines = [line.strip() for line in text.stdout.splitlines()]
    assert "rb  v1  READY" in lines and not any(line.startswith(".hpc-tf") for line in lines), text.stdout
    [mentioned] = [line for line in lines if line.startswith("rb  v2")]
    assert "rolled back, not served" in mentioned and "'load'" in mentioned and "UNAVAILABLE" not in mentioned


def test_a_format_the_node_cannot_load_is_refused_before_any_work(server: dict[str, Any], models: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """The tritonserver hpc-tf starts has the python backend and hpc-tf's onnxruntime, no tensorflow: a
    hand-off in format savedmodel (the site's serving.format) is one line naming the setting and the fix, and
    nothing is published or recorded; a launch whose job hands off in that format is refused before the
    training."""
    repo, fmt = str(server["repo"]), "savedmodel"
    refusal = (f"hpc-tf: error: serving format '{fmt}' needs Triton's tensorflow backend, which the serving node "
               f"at {server['host']}:{server['grpc_port']} does not have (its backends: onnxruntime, python): set "
               "serving.format: onnx in the site config, or ")
    refused = hpc_tf("handoff", str(models["v1"]), "--model", f"m_{fmt}", "--repository", repo,
                     "--set", f"serving.format={fmt}")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [refusal + "pass --format onnx"]
    assert not (server["repo"] / f"m_{fmt}").exists()
    assert not (server["repo"] / ".hpc-tf" / "handoffs" / f"m_{fmt}").exists()

    spec = tmp_path / "job.yaml"
    spec.write_text(f"name: fmt\ncommand: python train.py\nhandoff: {{model: m_{fmt}, format: {fmt}}}\n")
    launch = hpc_tf("launch", str(spec), "--dry-run", "--set", f"serving.model_repository={repo}")
    assert launch.returncode == 2
    assert launch.stderr.splitlines() == [refusal + "handoff.format: onnx in job.yaml"]


def test_clear_errors(server: dict[str, Any], models: dict[str, Path], tmp_path: Path) -> None:
    repo = str(server["repo"])
    bad = hpc_tf("handoff", str(models["v1"]), "--model", "../escape", "--repository", repo)
    assert bad.returncode == 2 and "is not valid: a model name" in bad.stderr
    nosig = hpc_tf("handoff", str(models["v1"]), "--model", "m2", "--repository", repo, "--signature", "predict")
    assert nosig.returncode == 2 and "no signature 'predict'" in nosig.stderr
    empty = hpc_tf("handoff", str(tmp_path), "--model", "m2", "--repository", repo)
    assert empty.returncode != 0 and "neither a SavedModel" in empty.stderr
    assert not (server["repo"] / "m2").exists()


def test_onnx_and_savedmodel_formats_without_their_backends(models: dict[str, Path], tmp_path: Path) -> None:
    """Without a serving node: onnx is checked with onnxruntime in process and both configs with Triton's
    schema; the version directories hold what those backends expect."""
    from hpc.serving.config import config_pbtxt
    from hpc.serving.formats import build_version
    from hpc.serving.repository import Repository

    repo = Repository.at(tmp_path / "repo")
    sig = read_signature(models["v1"])
    samples = compute_samples(models["v1"], sig.key, tmp_path / "samples.npz")
    onnx_dir = repo.publish("mlp_onnx", 1, lambda stage: build_version(stage, models["v1"], sig, "onnx"))
    parity = _onnx_parity(onnx_dir, samples)
    assert parity["ok"] and parity["max_abs_diff"] <= ONNX_TOLERANCE
    onnx_cfg = parse_config(config_pbtxt("mlp_onnx", sig, "onnx"))
    assert onnx_cfg.platform == "onnxruntime_onnx" and (onnx_dir / onnx_cfg.default_model_filename).is_file()
    sm_dir = repo.publish("mlp_sm", 1, lambda stage: build_version(stage, models["v1"], sig, "savedmodel"))
    sm_cfg = parse_config(config_pbtxt("mlp_sm", sig, "savedmodel"))
    assert sm_cfg.platform == "tensorflow_savedmodel"
    assert (sm_dir / sm_cfg.default_model_filename / "saved_model.pb").is_file()


def test_a_local_node_is_locked_for_everyone_but_its_owner_and_a_lost_node_is_one_line(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """Finding 1 on a local node (the cluster variant with another Unix user: test_serving_lock_slurm.py):
    control needs the owner's key, the endpoint file is the owner's alone, ``serve status`` lists models
    only; a node that died is one line naming it and what still works."""
    import os
    import signal

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from hpc.serving import secret as node_secret

    repo = tmp_path / "repo"
    up = hpc_tf("serve", "up", "--json", "--repository", str(repo), timeout=120)
    assert up.returncode == 0, up.stderr
    endpoint = json.loads(up.stdout)
    try:
        assert (repo / ".hpc-tf" / "server.json").stat().st_mode & 0o077 == 0
        secret = node_secret.load(repo)
        client = grpcclient.InferenceServerClient(f"{endpoint['host']}:{endpoint['grpc_port']}")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index(client_timeout=30)
        with pytest.raises(InferenceServerException, match="restricted"):
            client.load_model("mlp", client_timeout=30)
        assert client.get_model_repository_index(headers=secret.grpc_headers(), client_timeout=30) is not None
        client.close()
        status = hpc_tf("serve", "status", "--json", "--repository", str(repo))
        assert status.returncode == 0 and json.loads(status.stdout)["models"] == [], status.stdout  # no ".hpc-tf"
    finally:
        os.kill(endpoint["pid"], signal.SIGKILL)  # the node we started is lost; its registration stays
    lost = hpc_tf("serve", "status", "--repository", str(repo))
    line = f"the serving node at {endpoint['host']}:{endpoint['grpc_port']} is not answering"
    assert "NOT READY" in lost.stdout and line in lost.stderr and "published versions are intact" in lost.stderr
    handoff = hpc_tf("handoff", str(models["v1"]), "--model", "mlp", "--repository", str(repo))
    assert handoff.returncode == 5 and line in handoff.stderr and "Traceback" not in handoff.stderr
    down = hpc_tf("serve", "down", "--repository", str(repo))
    assert down.returncode == 0 and not (repo / ".hpc-tf" / "server.json").exists(), down.stderr
    assert not node_secret.key_file(repo).exists()  # a stopped node's key is forgotten
