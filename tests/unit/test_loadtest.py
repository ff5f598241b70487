"""``hpc-tf serve bench`` without a server: its options checked in one line each, the endpoint it picks
(router over node, ``--url``) and the only secret it sends, percentiles, inputs built from metadata, the
report's fields. Against a real tritonserver and router: tests/integration/test_loadtest_triton.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hpc.errors import InputError, ServingError
from hpc.serving import load_inputs, loadtest, secret
from hpc.serving.repository import Repository
from hpc.serving.router.run import RouterEndpoint
from hpc.serving.server import Endpoint


def test_defaults_and_every_bad_option_is_one_line_naming_it() -> None:
    assert loadtest.bench_settings() == loadtest.BenchSettings((1, 8), 10.0, "grpc", 1, 100_000)
    assert loadtest.bench_settings("2,16", "1.5m", "http", 4, 10).duration_s == 90.0
    bad = {("x,8",): "--concurrency: 'x,8' is not a list of client counts",
           ("0",): "--concurrency: each count must be 1 to 256",
           ("1", "10 parsecs"): "--duration: '10 parsecs' is not a duration",
           ("1", "2h"): "--duration: '2h' is not above 0 and at most 600 s",
           ("1", "0s"): "--duration: '0s' is not above 0",
           ("1", "1s", "udp"): "--protocol: 'udp' is not one of grpc, http"}
    for args, start in bad.items():
        with pytest.raises(InputError) as err:
            loadtest.bench_settings(*args)
        assert str(err.value).startswith(start) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(("url", "address"), [("127.0.0.1:8001", "127.0.0.1:8001"),
                                              ("http://node1:8000/", "node1:8000"),
                                              ("grpc://node1:8001", "node1:8001")])
def test_url_forms(url: str, address: str) -> None:
    assert loadtest._address(url) == address


@pytest.mark.parametrize("url", ["node1", "node1:port", "http://node1:8000/v2/models", ":8000", "node1:70000"])
def test_a_url_that_is_not_host_port_is_refused(url: str) -> None:
    with pytest.raises(InputError, match="is not HOST:PORT"):
        loadtest._address(url)


def _registered(root: Path, token: bool) -> Repository:
    """A repository with a registered node and router, and the owner's key (with an inference token)."""
    repo = Repository.at(root)
    (root / ".hpc-tf").mkdir(parents=True, mode=0o700)
    node = Endpoint("10.0.0.5", 8000, 8001, 8002, 1, "node1", str(root), "log", 0.0)
    router = RouterEndpoint("10.0.0.6", 9000, 9001, 1, "node2", str(root), 0.0)
    for path, record in ((repo.endpoint_file, node.__dict__), (repo.router_file, router.__dict__)):
        path.write_text(json.dumps(record))
        path.chmod(0o600)
    secret.create(root, inference_token=token)
    return repo


def test_the_router_is_measured_when_registered_and_only_the_inference_token_is_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    repo = _registered(tmp_path / "repo", token=True)
    token = secret.load(repo.root).inference
    target = loadtest.resolve_target(repo, "grpc")
    assert (target.what, target.url) == ("router", "10.0.0.6:9001")
    assert target.headers == {"triton-grpc-protocol-hpc-tf-inference-key": token}  # never the control key
    target = loadtest.resolve_target(repo, "http", "http://10.0.0.5:8000")
    assert (target.what, target.url, target.headers) == ("serving node", "http://10.0.0.5:8000",
                                                         {"hpc-tf-inference-key": token})
    # an endpoint the repository did not register gets no secret
    target = loadtest.resolve_target(repo, "grpc", "10.9.9.9:8001")
    assert (target.what, target.headers) == ("--url", {})


def test_without_a_router_the_serving_node_is_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    repo = _registered(tmp_path / "repo", token=False)
    repo.router_file.unlink()
    target = loadtest.resolve_target(repo, "http")
    assert (target.what, target.url) == ("serving node", "http://10.0.0.5:8000")
    repo.endpoint_file.unlink()
    with pytest.raises(ServingError, match="no serving node is registered"):
        loadtest.resolve_target(repo, "grpc")


def test_open_inference_sends_no_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    repo = _registered(tmp_path / "repo", token=False)
    assert loadtest.resolve_target(repo, "grpc").headers == {}


def test_nearest_rank_percentiles_and_the_reported_fields() -> None:
    level = loadtest.Level(4, seconds=2.0, latencies_ms=[float(v) for v in range(100, 0, -1)],
                           errors=Counter({"[StatusCode.UNAVAILABLE] gone": 3}))
    row = level.to_dict()
    assert row == {"concurrency": 4, "seconds": 2.0, "requests": 103, "succeeded": 100, "failed": 3,
                   "throughput": 50.0, "p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0,
                   "errors": {"[StatusCode.UNAVAILABLE] gone": 3}, "abandoned": 0}
    empty = loadtest.Level(1, seconds=1.0).to_dict()
    assert (empty["p50_ms"], empty["throughput"]) == (None, 0.0)


def test_failures_are_counted_by_message_with_a_bounded_number_of_kinds() -> None:
    errors: Counter[str] = Counter()
    for i in range(20):
        loadtest._count_error(errors, RuntimeError(f"failure {i % 8}\ndetails"))
    loadtest._count_error(errors, TimeoutError())
    assert sum(errors.values()) == 21 and len(errors) == loadtest._ERROR_KINDS + 1
    # failures 0-3 came 3 times, 4 twice; 5-7 (6 in all) and the timeout fell under "other"
    assert [errors[f"failure {i}"] for i in range(5)] == [3, 3, 3, 3, 2] and errors["(other errors)"] == 7
    timed_out: Counter[str] = Counter()
    loadtest._count_error(timed_out, TimeoutError())
    assert timed_out == {"no answer within 30 s": 1}


def test_random_inputs_follow_the_metadata() -> None:
    declared = {"image": ("FP32", [-1, 8, 8, 3]), "ids": ("INT64", [-1, -1]), "flag": ("BOOL", [-1]),
                "text": ("BYTES", [-1, 2])}
    inputs = load_inputs.random_inputs("m", declared, 4)
    assert {k: (v.dtype.name, v.shape) for k, v in inputs.items()} == {
        "image": ("float32", (4, 8, 8, 3)), "ids": ("int64", (4, 1)), "flag": ("bool", (4,)),
        "text": ("object", (4, 2))}
    assert load_inputs.random_inputs("m", {"x": ("FP16", [3])}, 1)["x"].shape == (3,)  # not batched
    with pytest.raises(InputError, match="'m' input 'x' has the fixed shape \\[3\\]; it takes no batch size"):
        load_inputs.random_inputs("m", {"x": ("FP16", [3])}, 2)


def test_hand_off_samples_are_used_only_when_they_fit_the_served_model() -> None:
    samples = {"features": np.zeros((8, 16), dtype=np.float32)}
    assert load_inputs.fits(samples, {"features": ("FP32", [-1, 16])})
    assert not load_inputs.fits(samples, {"features": ("FP32", [-1, 15])})
    assert not load_inputs.fits(samples, {"features": ("FP64", [-1, 16])})
    assert not load_inputs.fits(samples, {"other": ("FP32", [-1, 16])})
    assert not load_inputs.fits(samples, {"features": ("FP32", [8, 16])})  # not batched: random of its shape


def test_the_load_test_imports_no_tensorflow() -> None:
    code = ("import sys, hpc.cli.serve, hpc.serving.loadtest, hpc.serving.predict\n"
            "print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.stdout.strip() == "False"
