"""A serving node that restarts serves what served before, with no new hand-off (issue 22), against a real
Triton through the hpc-tf CLI: after ``serve down`` / ``serve up`` the handed-off version answers; a
rollback's restored version is what comes back, not a newer directory no hand-off verified; a recorded
version that cannot load is one line in ``serve up``, ``serve status`` and the node log while the others
serve. The cluster variant (the node as a Slurm job, scancelled): test_handoff_slurm.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_serving_triton import hpc_tf, infer, owner_config, unloadable  # noqa: F401 - fixture
from tests.unit._serving_models import export_mlp, predict

pytestmark = [pytest.mark.triton, pytest.mark.tf]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    return {"v1": export_mlp(base / "v1", seed=1), "v2": export_mlp(base / "v2", seed=2)}


@pytest.fixture()
def repo(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "repo"
    yield root
    if (root / ".hpc-tf" / "server.json").exists():
        hpc_tf("serve", "down", "--repository", str(root), timeout=60)


def up(repo: Path) -> tuple[dict[str, object], str]:
    started = hpc_tf("serve", "up", "--json", "--repository", str(repo), timeout=300)
    assert started.returncode == 0, started.stderr
    return json.loads(started.stdout), started.stderr


def down(repo: Path) -> None:
    stopped = hpc_tf("serve", "down", "--repository", str(repo), timeout=60)
    assert stopped.returncode == 0, stopped.stderr


def handoff(repo: Path, source: Path, model: str = "quickstart") -> int:
    done = hpc_tf("handoff", str(source), "--model", model, "--repository", str(repo))
    return done.returncode


def records(repo: Path, model: str = "quickstart") -> int:
    return len(list((repo / ".hpc-tf" / "handoffs" / model).glob("*.json")))


def test_a_restarted_node_serves_the_handed_off_version_with_no_new_handoff(repo: Path,
                                                                             models: dict[str, Path]) -> None:
    x = np.random.default_rng(3).normal(size=(4, 16)).astype("float32")
    up(repo)
    assert handoff(repo, models["v1"]) == 0
    down(repo)
    handed_off = records(repo)

    recorded = hpc_tf("serve", "status", "--repository", str(repo))  # the node is down: what the next one loads
    assert "no serving node runs for" in recorded.stderr, recorded.stderr
    assert "  quickstart  v1  by handoff" in recorded.stdout, recorded.stdout

    endpoint, said = up(repo)
    assert "restored quickstart v1 (recorded as serving)" in said, said
    status = hpc_tf("serve", "status", "--repository", str(repo))
    assert status.returncode == 0 and "  quickstart  v1  READY" in status.stdout.splitlines(), status.stdout
    answer = hpc_tf("serve", "predict", "quickstart", "--repository", str(repo), "--json")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["version"] == "1" and json.loads(answer.stdout)["max_abs_diff"] == 0.0
    out, version = infer(endpoint, x, model="quickstart")
    assert version == "1" and np.array_equal(out, predict(models["v1"], x))
    assert records(repo) == handed_off  # no new hand-off


def test_a_rollback_s_restored_version_comes_back_and_a_broken_one_is_one_line(
    repo: Path, models: dict[str, Path], tmp_path: Path
) -> None:
    x = np.random.default_rng(4).normal(size=(4, 16)).astype("float32")
    up(repo)
    assert handoff(repo, models["v1"]) == 0
    assert handoff(repo, models["v1"], model="other") == 0
    assert handoff(repo, models["v2"]) == 0
    assert handoff(repo, unloadable(models["v2"], tmp_path / "broken")) == 5  # v3 rolled back to v2
    state = json.loads((repo / ".hpc-tf" / "serving.json").read_text())
    assert state["models"]["quickstart"]["versions"] == [2] and state["models"]["quickstart"]["by"] == "rollback"
    down(repo)
    # what a hand-off interrupted with its node leaves: a newer version no parity check passed
    shutil.copytree(repo / "quickstart" / "1", repo / "quickstart" / "7")
    # and a recorded version that no longer loads
    for data in (repo / "other" / "1").rglob("variables.data-*"):
        data.write_bytes(b"\0garbage" * 64)

    endpoint, said = up(repo)
    assert "restored quickstart v2 (recorded as serving)" in said, said
    [line] = [line for line in said.splitlines() if " other v1 " in line]
    assert line.startswith("hpc-tf: NOT restored: other v1 was recorded as serving but ") and "Traceback" not in said
    out, version = infer(endpoint, x, model="quickstart")
    assert version == "2" and np.array_equal(out, predict(models["v2"], x))
    assert "hpc-tf: NOT restored: other v1" in Path(str(endpoint["log"])).read_text()

    status = hpc_tf("serve", "status", "--repository", str(repo))
    lines = status.stdout.splitlines()
    assert "  quickstart  v2  READY" in lines and "  quickstart  v7  READY" not in lines, status.stdout
    [other] = [line for line in lines if line.startswith("  other  v1  by handoff")]
    assert "UNAVAILABLE: " in other, status.stdout
