"""The service (``serve up --router``: the node and the router in front of it) as local processes, with a
REAL tritonserver and real tritonclient HTTP and gRPC clients: after ``serve down`` / ``serve up --router``
(and after the router alone is SIGKILLed and started again) the handed-off models answer through the
router with no new hand-off and the split set before is in force; ``serve status`` shows the split and
per-variant counts equal to what the clients got. The cluster variant: test_serving_service_slurm.py."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration._traffic import Traffic
from tests.integration.test_router_triton import hpc_tf, owner_config  # noqa: F401 - fixture
from tests.unit._serving_models import export_mlp

pytestmark = [pytest.mark.triton, pytest.mark.tf]
X = np.random.default_rng(5).normal(size=(2, 16)).astype("float32")
REQUESTS = 1_200  # per protocol: 2,400 in all


@pytest.fixture()
def repo(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "repo"
    yield root
    if (root / ".hpc-tf" / "server.json").exists() or (root / ".hpc-tf" / "router.json").exists():
        hpc_tf("serve", "down", "--repository", str(root), timeout=120)


def up(repo: Path) -> dict[str, Any]:
    started = hpc_tf("serve", "up", "--router", "--json", "--repository", str(repo), timeout=300)
    assert started.returncode == 0, started.stderr
    answer: dict[str, Any] = json.loads(started.stdout)
    assert (repo / ".hpc-tf" / "router.json").stat().st_mode & 0o777 == 0o600
    return answer


def handoffs(repo: Path) -> int:
    return len(list((repo / ".hpc-tf" / "handoffs").glob("*/*.json")))


def measure(router: dict[str, Any]) -> Traffic:
    with Traffic(router, X, model="ab", max_requests=REQUESTS, max_seconds=300) as traffic:
        for thread in traffic.threads:
            thread.join(300)
    return traffic


def check_split(traffic: Traffic, share_a: float) -> None:
    sent = sum(traffic.sent.values())
    assert sent == 2 * REQUESTS and traffic.failures == [], traffic.failures[:3]
    assert traffic.models["a"] + traffic.models["b"] == sent, traffic.models
    # binomial: sd = sqrt(0.2 * 0.8 / 2400) = 0.8 points; 4 points is 5 sd
    assert abs(traffic.models["a"] / sent - share_a) <= 0.04, traffic.models


def test_the_service_restarted_serves_what_was_handed_off_with_the_split_set_before(tmp_path: Path,
                                                                                   repo: Path) -> None:
    first = up(repo)
    assert first["router"]["pid"] != first["pid"]
    for model, seed in (("a", 1), ("b", 2)):
        done = hpc_tf("handoff", str(export_mlp(tmp_path / f"export_{model}", seed=seed)), "--model", model,
                      "--format", "python", "--repository", str(repo))
        assert done.returncode == 0, done.stderr
    split = hpc_tf("serve", "split", "ab", "a=20", "b=80", "--repository", str(repo))
    assert split.returncode == 0, split.stderr
    handed_off = handoffs(repo)

    down = hpc_tf("serve", "down", "--repository", str(repo), timeout=120)
    assert down.returncode == 0, down.stderr
    assert "router stopped (pid" in down.stderr and "serving node stopped (pid" in down.stderr, down.stderr
    assert not (repo / ".hpc-tf" / "router.json").exists() and not (repo / ".hpc-tf" / "server.json").exists()

    again = up(repo)
    router = again["router"]
    traffic = measure(router)
    check_split(traffic, 0.20)
    assert handoffs(repo) == handed_off  # no new hand-off

    status = hpc_tf("serve", "status", "--repository", str(repo))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert "  split ab: a:served 20%, b:served 80%" in lines, status.stdout
    for model in ("a", "b"):
        (line,) = [line for line in lines if line.startswith(f"  traffic ab -> {model}:-: ")]
        found = re.search(r": (\d+) requests in the last (\d+) s \(([\d.]+)/s\), errors 0\.0%, p50 <= ", line)
        assert found is not None, line
        assert int(found[1]) == traffic.models[model], (line, traffic.models)
    assert any(line.startswith("  replica 127.0.0.1:") and "healthy, 0 in flight" in line for line in lines)

    # the router alone killed (the node keeps running) and started again: the same split, no hand-off
    os.kill(router["pid"], signal.SIGKILL)
    time.sleep(0.5)
    restarted = up(repo)
    assert restarted["pid"] == again["pid"] and restarted["router"]["pid"] != router["pid"]
    check_split(measure(restarted["router"]), 0.20)
    assert handoffs(repo) == handed_off
