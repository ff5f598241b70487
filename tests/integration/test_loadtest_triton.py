"""``hpc-tf serve bench`` against a REAL tritonserver (a local node from ``hpc-tf serve up --router``) through
the router and on the node itself: what the tool says succeeded is what Triton counted
(``nv_inference_request_success`` on the node's metrics port), the request cap and Ctrl-C bound it, and a
bad model name or an endpoint that does not answer is one line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc.serving.repository import Repository
from hpc.serving.state import update_state
from tests.integration._flaky_model import write_flaky
from tests.integration.test_router_triton import HPC_TF, hpc_tf, owner_config  # noqa: F401 - fixture
from tests.unit._serving_models import export_mlp

pytestmark = [pytest.mark.triton, pytest.mark.tf]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, owner_config: Path) -> Iterator[dict[str, Any]]:  # noqa: F811
    """The service (node and router, local processes) serving the MLP as 'mlp', inference only with the
    owner's token."""
    base = tmp_path_factory.mktemp("bench")
    repo = base / "repo"
    write_flaky(repo, "flaky", {1: 4})  # every 4th request fails
    update_state(Repository.at(repo), lambda state: state.with_model("flaky", [1], "handoff"))
    up = hpc_tf("serve", "up", "--router", "--inference-token", "--json", "--repository", str(repo), timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        done = hpc_tf("handoff", str(export_mlp(base / "export", seed=3)), "--model", "mlp", "--format", "python",
                      "--repository", str(repo))
        assert done.returncode == 0, done.stderr
        yield {**json.loads(up.stdout), "repo": repo}
    finally:
        hpc_tf("serve", "down", "--repository", str(repo), timeout=120)


def _counter(url: str, metric: str, labels: tuple[str, ...]) -> int:
    """The sum of a Prometheus counter over the series with all of ``labels`` (e.g. ``model="mlp"``); 0 while
    there is none (the router makes a series at a variant's first request)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    assert f"# TYPE {metric} counter" in text, (metric, text[:2000])
    return sum(int(m[2]) for m in re.finditer(rf"^{metric}\{{([^}}]*)\}} (\d+)$", text, re.MULTILINE)
               if all(label in m[1] for label in labels))


def served(node: dict[str, Any], model: str = "mlp") -> int:
    """Triton's own count of the node's inferences of ``model`` v1 (a python-backend model's error response
    counts as a success there: Triton counts requests the backend answered)."""
    return _counter(f"http://{node['host']}:{node['metrics_port']}/metrics", "nv_inference_request_success",
                    (f'model="{model}"', 'version="1"'))


def routed(service: dict[str, Any], model: str, metric: str) -> int:
    """The router's count of requests (or errors) it answered for ``model``."""
    return _counter(f"{service['router']['http_url']}/metrics", f"hpctf_router_variant_{metric}_total",
                    (f'model="{model}"',))


def bench(service: dict[str, Any], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return hpc_tf("serve", "bench", *args, "--repository", str(service["repo"]), timeout=timeout)


def test_bench_through_the_router_reports_what_triton_counted(service: dict[str, Any], tmp_path: Path) -> None:
    # a TensorFlow that cannot be imported: the load test never needs it
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text("raise ImportError('serve bench imported TensorFlow')\n")
    before = served(service)
    done = subprocess.run([HPC_TF, "serve", "bench", "mlp", "--concurrency", "1,4", "--duration", "2s", "--json",
                           "--repository", str(service["repo"]), "--site", "local"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["endpoint"] == {"what": "router", "protocol": "grpc", "url": service["router"]["grpc_url"]}
    assert report["inputs"].startswith("hand-off samples") and report["batch"] == 1
    assert [level["concurrency"] for level in report["levels"]] == [1, 4]
    for level in report["levels"]:
        assert level["failed"] == 0 and level["errors"] == {} and level["succeeded"] > 20, level
        assert level["requests"] == level["succeeded"]
        assert 1.9 <= level["seconds"] <= 10, level
        assert level["throughput"] == pytest.approx(level["succeeded"] / level["seconds"], rel=1e-3)
        assert 0 < level["p50_ms"] <= level["p90_ms"] <= level["p99_ms"], level
    assert served(service) - before == report["warmup_requests"] + sum(lv["succeeded"] for lv in report["levels"])


def test_a_split_name_is_measured_with_random_inputs_of_the_served_shapes(service: dict[str, Any]) -> None:
    split = hpc_tf("serve", "split", "public", "mlp=100", "--repository", str(service["repo"]))
    assert split.returncode == 0, split.stderr
    before = served(service)
    done = bench(service, "public", "--concurrency", "2", "--duration", "1s", "--batch", "3", "--protocol", "http",
                 "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["inputs"] == "random, from the model's metadata" and report["endpoint"]["what"] == "router"
    (level,) = report["levels"]
    assert level["failed"] == 0 and level["succeeded"] > 10
    assert served(service) - before == 1 + level["succeeded"]


def test_bench_on_the_node_over_http_stops_at_the_request_cap(service: dict[str, Any]) -> None:
    before = served(service)
    t0 = time.monotonic()
    done = bench(service, "mlp", "--url", f"http://{service['host']}:{service['http_port']}", "--protocol", "http",
                 "--concurrency", "3", "--duration", "60s", "--max-requests", "150", "--batch", "5")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 45  # the cap ended it, not the minute
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"mlp through the serving node at http://{service['host']}:{service['http_port']} "
                               "(http), batch 5, inputs: hand-off samples"), lines
    assert lines[1].split() == ["concurrency", "requests", "failed", "req/s", "p50", "ms", "p90", "ms", "p99", "ms"]
    row = lines[2].split()
    assert row[:3] == ["3", "150", "0"], lines
    assert served(service) - before == 1 + 150  # the warm-up request and the capped ones, each of 5 rows


def test_failed_requests_are_counted_as_the_router_counted_them(service: dict[str, Any]) -> None:
    before = (served(service, "flaky"), routed(service, "flaky", "requests"), routed(service, "flaky", "errors"))
    done = bench(service, "flaky", "--concurrency", "4", "--duration", "60s", "--max-requests", "99", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (level,) = report["levels"]
    # requests 4, 8, ..., 100 of the model's one instance fail by design: the warm-up was the 1st
    assert (level["requests"], level["succeeded"], level["failed"]) == (99, 74, 25), level
    after = (served(service, "flaky"), routed(service, "flaky", "requests"), routed(service, "flaky", "errors"))
    # Triton and the router: the warm-up and the 99 (the router counts inferences, not the metadata call)
    assert [a - b for a, b in zip(after, before, strict=True)] == [100, 100, 25]
    assert len(level["errors"]) == 6 and level["errors"]["(other errors)"] == 20, level["errors"]
    assert all("fails by design" in message for message in level["errors"] if message != "(other errors)")


def test_ctrl_c_prints_what_was_measured(service: dict[str, Any]) -> None:
    before = served(service)
    proc = subprocess.Popen([HPC_TF, "serve", "bench", "mlp", "--concurrency", "2,8", "--duration", "60s", "--json",
                             "--repository", str(service["repo"]), "--site", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    report = json.loads(out)
    assert report["interrupted"] is True
    (level,) = report["levels"]  # the second count never started
    assert level["concurrency"] == 2 and level["succeeded"] > 0 and level["failed"] == 0
    assert level["seconds"] < 30
    counted = served(service) - before - report["warmup_requests"] - level["succeeded"]
    assert 0 <= counted <= level["abandoned"] <= 2  # requests in flight at Ctrl-C may have been answered


def test_a_bad_model_or_an_endpoint_that_does_not_answer_is_one_line(service: dict[str, Any]) -> None:
    cases = {("nosuch",): "hpc-tf: error: model 'nosuch' is not served by the router at "
                          f"{service['router']['grpc_url']} (grpc): ",
             ("mlp", "--url", "127.0.0.1:1"): "hpc-tf: error: nothing answers at 127.0.0.1:1 (grpc, --url)",
             ("mlp", "--url", "127.0.0.1:1", "--protocol", "http"):
                 "hpc-tf: error: nothing answers at http://127.0.0.1:1 (http, --url)",
             ("mlp", "--url", "no-port"): "hpc-tf: error: --url: 'no-port' is not HOST:PORT",
             # the node under a name it was not registered with: no token goes there, and the node refuses
             ("mlp", "--url", f"localhost:{service['grpc_port']}"):
                 f"hpc-tf: error: the first request to 'mlp' at localhost:{service['grpc_port']} failed: "}
    for args, start in cases.items():
        done = bench(service, *args, "--duration", "1s")
        assert done.returncode != 0 and done.stdout == "", (args, done.stdout)
        first, *rest = done.stderr.splitlines()
        assert first.startswith(start), (args, done.stderr)
        assert all(line.startswith("hint: ") for line in rest) and "Traceback" not in done.stderr, done.stderr
