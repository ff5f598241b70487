"""Issue 8 end to end on the test cluster, as the cluster user, through the ``hpc-tf`` command:

2-node training (examples/quickstart) → a dependent hand-off job (afterok, CPU partition) → a Triton
serving node running as a Slurm job on the CPU node answers gRPC and HTTP requests for the new
version with the trained model's outputs. Slurm's own tools (conftest helpers) are the witness of
where and in which order the jobs ran.

Run from the serving venv (numpy<2, tritonserver, TensorFlow): every job uses that venv's python.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import yaml

from hpc.serving.formats import ONNX_TOLERANCE
from tests._readme import assert_shows, readme_argv

if TYPE_CHECKING:
    from hpc.serving.secret import NodeSecret
    from tests.conftest import JobStatus, SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.triton, pytest.mark.tf]

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(Path(sys.prefix) / "bin" / "python")  # the venv running pytest: on the shared filesystem
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def project(scratch_dir: Path, slurm_cluster: SlurmCluster) -> Path:
    """The quickstart with a ``handoff:`` section, on the shared filesystem, owned by the user."""
    work = scratch_dir / "quickstart"
    shutil.copytree(REPO / "examples" / "quickstart", work)
    spec = yaml.safe_load((work / "job.yaml").read_text())
    spec["handoff"] = {"model": "quickstart", "format": "python"}
    (work / "job.yaml").write_text(yaml.safe_dump(spec))
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    return work


def hpc_tf(researcher_run: Run, project: Path, *args: str, check: bool = True,
           timeout: float = 180) -> subprocess.CompletedProcess[str]:
    site = ["--site", "sandbox", "--set", f"python={PYTHON}", "--set", f"runs_dir={project / 'runs'}",
            "--set", f"serving.model_repository={project.parent / 'models'}"]
    return researcher_run(["hpc-tf", *args, *site], cwd=project, check=check, timeout=timeout)


@contextlib.contextmanager
def running_node(researcher_run: Run, project: Path, *options: str) -> Iterator[dict[str, Any]]:
    """``hpc-tf serve up [options]`` on the sandbox site: a Slurm job on the CPU partition (site-driven);
    its endpoint while it runs, ``serve down`` after."""
    serve_up = readme_argv("hpc-tf serve up")[1:]
    up = hpc_tf(researcher_run, project, *serve_up, "--json", "--time", "20:00", *options, check=False, timeout=400)
    endpoint = json.loads(up.stdout) if up.returncode == 0 else {}
    try:
        assert up.returncode == 0, up.stderr
        yield endpoint
    finally:
        down = hpc_tf(researcher_run, project, "serve", "down", check=False, timeout=120)
        if endpoint.get("job_id"):
            subprocess.run(["scancel", endpoint["job_id"]], check=False, timeout=30)
        assert down.returncode == 0, down.stderr


@pytest.fixture
def serving_node(researcher_run: Run, project: Path) -> Iterator[dict[str, Any]]:
    with running_node(researcher_run, project) as endpoint:
        yield endpoint


def infer_both(endpoint: dict[str, Any], model: str, version: str, inputs: dict[str, np.ndarray],
               output: str, secret: NodeSecret | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The same request over gRPC and over HTTP, addressed to ``version`` (with the node's inference token
    from ``secret``, if given); both answers."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    answers = []
    grpc_headers, http_headers = (secret.grpc_headers(), secret.http_headers()) if secret else (None, None)
    for mod, url, kwargs in ((grpcclient, f"{endpoint['host']}:{endpoint['grpc_port']}",
                              {"client_timeout": 60, "headers": grpc_headers}),
                             (httpclient, f"{endpoint['host']}:{endpoint['http_port']}",
                              {"timeout": 60, "headers": http_headers})):
        client = mod.InferenceServerClient(url)
        request = []
        for name, value in inputs.items():
            item = mod.InferInput(name, list(value.shape), "FP32")
            item.set_data_from_numpy(value)
            request.append(item)
        result = client.infer(model, request, model_version=version, **kwargs)
        answers.append(result.as_numpy(output))
        client.close()
    return answers[0], answers[1]


def test_training_then_dependent_handoff_to_a_serving_node_job_on_the_cpu_node(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, serving_node: dict[str, Any],
    wait_for_job: Callable[..., JobStatus],
) -> None:
    """What `sudo examples/quickstart/run-on-sandbox` does as the cluster user (serve up, launch job.yaml --wait,
    status, the chief's log, serve predict), with the output README.md shows; then README.md's hand-off block."""
    # the serving node is a running Slurm job on the CPU node, reachable at that node's address
    node_job = serving_node["job_id"]
    assert serving_node["hostname"] in slurm_cluster.cpu_nodes
    assert wait_for_job(node_job, until=lambda s: s.state == "RUNNING" or s.finished).state == "RUNNING"
    node_list = subprocess.run(["squeue", "-h", "-j", node_job, "-o", "%P %N"], capture_output=True, text=True,
                               timeout=30, check=True).stdout.split()
    assert node_list == [slurm_cluster.cpu_partition, serving_node["hostname"]]

    launched = hpc_tf(researcher_run, project, "launch", "job.yaml", "--wait", timeout=900)
    train_job = launched.stdout.strip()
    (run_dir,) = sorted((project / "runs").iterdir())
    handoff = json.loads((run_dir / "handoff.json").read_text())
    assert handoff["after_ok"] == train_job and f"hand-off job {handoff['job_id']}" in launched.stderr
    handoff_job = handoff["job_id"]

    shown = [launched.stderr, hpc_tf(researcher_run, project, "status", train_job).stdout,
             hpc_tf(researcher_run, project, "logs", train_job, "--task", "0").stdout,
             hpc_tf(researcher_run, project, "serve", "predict", "quickstart", timeout=300).stdout]
    ids = {"5007": "training", train_job: "training", "5008": "handoff", handoff_job: "handoff"}
    assert_shows("GPU quota: 2 nodes × 2 GPUs for 10 min fits (account lab: 4 of 4 GPUs free)", "\n".join(shown), ids)
    assert wait_for_job(train_job, timeout=900).state == "COMPLETED"
    final = wait_for_job(handoff_job, timeout=600)
    log = (run_dir / "logs" / f"handoff-{handoff_job}.out")
    assert final.state == "COMPLETED", log.read_text() if log.is_file() else final
    # Slurm's record: the hand-off waited for training (afterok) and ran on the CPU partition
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-j", f"{train_job},{handoff_job}", "-o",
                           "JobID,Partition,Start,End"], capture_output=True, text=True, timeout=30, check=True)
    rows = {r.split("|")[0]: r.split("|") for r in acct.stdout.splitlines()}
    assert rows[handoff_job][1] == slurm_cluster.cpu_partition
    assert rows[handoff_job][2] >= rows[train_job][3]
    text = log.read_text()
    for stage in ("source", "signature", "samples", "connect", "publish", "load", "verify"):
        assert f"{stage}:" in text, text
    assert "quickstart version 1 serving" in text

    # the served version answers gRPC and HTTP with exactly the trained model's outputs
    from hpc.serving.signature import read_signature

    savedmodel = run_dir / "output" / "export"
    sig = read_signature(savedmodel)
    x = {t.name: np.random.default_rng(3).normal(size=(5, *t.shape[1:])).astype("float32") for t in sig.inputs}
    expected = predict_signature(savedmodel, x)
    output = sig.outputs[0].name
    over_grpc, over_http = infer_both(serving_node, "quickstart", "1", x, output)
    assert np.array_equal(over_grpc, expected[output]) and np.array_equal(over_http, expected[output])

    status = json.loads(hpc_tf(researcher_run, project, "serve", "status", "--json").stdout)
    assert status["ready"] and status["endpoint"]["job_id"] == node_job
    assert {(m["name"], m["version"], m["state"]) for m in status["models"]} >= {("quickstart", "1", "READY")}

    # README.md's hand-off block: the same run published again, by hand, as model 'resnet'
    handoff = hpc_tf(researcher_run, project, *readme_argv("hpc-tf handoff RUN_DIR --model resnet",
                                                          RUN_DIR=str(run_dir))[1:], timeout=600)
    assert "resnet version 1 serving" in handoff.stdout + handoff.stderr, handoff.stderr
    listed = hpc_tf(researcher_run, project, *readme_argv("hpc-tf serve status")[1:]).stdout
    models = {tuple(line.split()) for line in listed.splitlines()}
    assert {("quickstart", "v1", "READY"), ("resnet", "v1", "READY")} <= models, listed
    assert ".hpc-tf" not in listed, listed  # the repository's own bookkeeping is no model
    predicted = hpc_tf(researcher_run, project, *readme_argv("hpc-tf serve predict resnet")[1:], timeout=300)
    assert "parity: identical" in predicted.stdout, predicted.stdout + predicted.stderr

    # the same run served by hpc-tf's own onnxruntime backend, which the node job built for its user
    assert "onnxruntime" in status["endpoint"]["backends"], status["endpoint"]
    native = hpc_tf(researcher_run, project, "handoff", str(run_dir), "--model", "quickstart_onnx", "--format", "onnx",
                    timeout=600)
    assert "quickstart_onnx version 1 serving" in native.stdout + native.stderr, native.stderr
    for answer in infer_both(serving_node, "quickstart_onnx", "1", x, output):
        np.testing.assert_allclose(answer, expected[output], rtol=0, atol=ONNX_TOLERANCE)


def predict_signature(savedmodel: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The trained model's own answer: its serving signature run with TensorFlow in this process."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def test_serving_node_job_stops_and_unregisters_on_serve_down(
    researcher_run: Run, project: Path, wait_for_job: Callable[..., JobStatus]
) -> None:
    up = hpc_tf(researcher_run, project, "serve", "up", "--json", "--slurm", "--time", "10:00", timeout=400)
    endpoint = json.loads(up.stdout)
    try:
        again = hpc_tf(researcher_run, project, "serve", "up", check=False)
        assert again.returncode == 5 and f"already runs as Slurm job {endpoint['job_id']}" in again.stderr
        hpc_tf(researcher_run, project, "serve", "down", timeout=120)
        assert wait_for_job(endpoint["job_id"]).state == "CANCELLED"
        assert not (project.parent / "models" / ".hpc-tf" / "server.json").exists()
    finally:
        subprocess.run(["scancel", endpoint["job_id"]], check=False, timeout=30)


def test_rollover_and_rollback_on_the_serving_node_job_under_continuous_traffic(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, serving_node: dict[str, Any],
    tmp_path: Path, wait_for_job: Callable[..., JobStatus],
) -> None:
    """Issue 8's rollover checks on the cluster: v2 handed off to the serving node job on the CPU node while a
    gRPC and an HTTP client send requests to the node's address (0 failures); a broken v3 fails and rolls back
    while v2 keeps serving (0 failures); the node's job cancelled and started again serves v2 with no new
    hand-off (issue 22). Tiny models exported in process: no training needed for this."""
    from hpc.serving.samples import SAMPLES_IN_SAVEDMODEL, compute_samples
    from tests.integration._traffic import Traffic
    from tests.unit._serving_models import export_mlp, predict

    # the clients target only the serving node's own cluster address (its hostname resolved), never loopback
    assert serving_node["hostname"] in slurm_cluster.cpu_nodes
    assert serving_node["host"] == socket.gethostbyname(serving_node["hostname"])
    assert not serving_node["host"].startswith("127.")

    exported = project.parent / "exported"
    v1, v2 = export_mlp(exported / "v1", seed=1), export_mlp(exported / "v2", seed=2)
    # v3 cannot load (garbage weights); samples stored at export time, so it gets as far as the load
    broken = exported / "v3"
    shutil.copytree(v2, broken)
    compute_samples(v2, "serving_default", broken / SAMPLES_IN_SAVEDMODEL)
    for data in (broken / "variables").glob("variables.data-*"):
        data.write_bytes(b"\0garbage" * 64)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(exported)], check=True)
    x = np.random.default_rng(7).normal(size=(8, 16)).astype("float32")

    def handoff(savedmodel: Path) -> subprocess.CompletedProcess[str]:
        return hpc_tf(researcher_run, project, "handoff", str(savedmodel), "--model", "mlp", "--format", "python",
                      "--json", check=False, timeout=300)

    def served(version: str) -> tuple[np.ndarray, np.ndarray]:
        return infer_both(serving_node, "mlp", version, {"features": x}, "output_0")

    first = handoff(v1)
    assert first.returncode == 0 and json.loads(first.stdout)["version"] == 1, first.stderr
    assert all(np.array_equal(out, predict(v1, x)) for out in served("1"))

    with Traffic(serving_node, x, model="mlp", max_requests=5000, max_seconds=120) as traffic:
        second = handoff(v2)
        time.sleep(0.5)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["version"] == 2
    assert traffic.failures == [], (len(traffic.failures), traffic.failures[:3], traffic.sent)
    assert traffic.versions["2"] > 0 and min(traffic.sent.values()) > 0, (traffic.versions, traffic.sent)
    assert all(np.array_equal(out, predict(v2, x)) for out in served("2"))
    assert all(np.array_equal(out, predict(v2, x)) for out in served(""))  # latest policy: v2 is what serves

    with Traffic(serving_node, x, model="mlp", max_requests=5000, max_seconds=120) as traffic:
        third = handoff(broken)
        time.sleep(0.5)
    assert third.returncode == 5 and "failed at stage 'load'" in third.stderr, third.stderr
    assert "previous version keeps serving" in third.stderr
    assert traffic.failures == [], (len(traffic.failures), traffic.failures[:3], traffic.sent)
    assert set(traffic.versions) == {"2"} and min(traffic.sent.values()) > 0, (traffic.versions, traffic.sent)
    repo = project.parent / "models"
    assert sorted(p.name for p in (repo / "mlp").iterdir()) == ["1", "2", "config.pbtxt"]
    assert all(np.array_equal(out, predict(v2, x)) for out in served(""))
    records = [json.loads(p.read_text()) for p in sorted((repo / ".hpc-tf" / "handoffs" / "mlp").glob("*.json"))]
    assert [(r["version"], r["ok"], r["failed_stage"], r["rolled_back"]) for r in records] == [
        (1, True, None, False), (2, True, None, False), (3, False, "load", True)]

    status = json.loads(hpc_tf(researcher_run, project, "serve", "status", "--json").stdout)
    assert status["ready"] and status["endpoint"]["job_id"] == serving_node["job_id"]
    states = {(m["name"], m["version"]): m["state"] for m in status["models"]}
    assert states[("mlp", "2")] == "READY"

    # issue 22: the node's job is cancelled (as at its time limit) and started again: v2, what the rollback
    # restored, is loaded before the new node registers, and answers with no new hand-off
    subprocess.run(["scancel", serving_node["job_id"]], check=True, timeout=30)
    assert wait_for_job(serving_node["job_id"]).finished
    down = hpc_tf(researcher_run, project, "serve", "status")  # what the next node loads
    assert any(line.startswith("  mlp  v2  by rollback ") and line.endswith("NOT SERVED: no serving node answers")
               for line in down.stdout.splitlines()), down.stdout + down.stderr
    up = hpc_tf(researcher_run, project, "serve", "up", "--json", "--time", "20:00", timeout=400)
    again = json.loads(up.stdout)
    assert again["job_id"] != serving_node["job_id"] and "restored mlp v2 (recorded as serving)" in up.stderr
    log = (repo / ".hpc-tf" / "server" / f"slurm-{again['job_id']}.out").read_text()
    assert log.index("restored mlp v2") < log.index("serving node ready"), log
    assert all(np.array_equal(out, predict(v2, x)) for out in infer_both(again, "mlp", "", {"features": x},
                                                                          "output_0"))
    listed = hpc_tf(researcher_run, project, "serve", "status").stdout
    assert "  mlp  v2  READY" in listed.splitlines(), listed
    assert len(list((repo / ".hpc-tf" / "handoffs" / "mlp").glob("*.json"))) == 3  # no new hand-off
