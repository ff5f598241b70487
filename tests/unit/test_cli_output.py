"""What commands print into a pipe: whole lines (commands, paths, ids never wrapped or cut), tables as wide
as their cells; and the convention for people and scripts (text by default, ``--json`` for scripts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# deep enough that every line holding it is wider than a terminal's 80 (or a former 160) columns
DEEP = "/".join(["scratch-area-of-the-lab"] * 8)


def piped(*argv: str | Path, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``hpc-tf ARGV`` with stdout and stderr into pipes, as in a script or ``| less``; COLUMNS=80 as a
    shell that exports it would set."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HPC_TF_")}
    environ.update({"HOME": str(home), "USER": "alice", "COLUMNS": "80", **(env or {})})
    return subprocess.run([sys.executable, "-m", "hpc.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=60, check=False, env=environ)


@pytest.fixture
def deep(tmp_path: Path) -> Path:
    path = tmp_path / DEEP
    path.mkdir(parents=True)
    return path


def test_config_show_in_a_pipe_keeps_every_key_value_and_source_whole(tmp_path: Path, deep: Path) -> None:
    site_file = deep / "my-site.yaml"
    site_file.write_text((REPO / "site_configs" / "local.yaml").read_text())
    result = piped("config", "show", "--site", site_file, "--set", f"runs_dir={deep / 'runs'}", home=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["runs_dir", str(deep / "runs"), "--set", "runs_dir"] in rows
    assert ["launcher", "local", "site", "file", str(site_file)] in rows
    assert "partitions.local.gpus_per_node" in [row[0] for row in rows]
    assert "…" not in result.stdout


def test_campaign_dry_run_in_a_pipe_prints_the_directory_on_one_line(tmp_path: Path, deep: Path) -> None:
    campaign = REPO / "examples" / "quickstart" / "campaign.yaml"
    result = piped("campaign", "run", campaign, "--site", "sandbox", "--dry-run", "--gpu-limit", "4",
                   "--set", f"runs_dir={deep}", home=tmp_path)
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stderr.splitlines() if "directory" in line]
    directory = Path(line.split("; directory ", 1)[1])
    assert directory.parent == deep  # whole: the campaign's directory under the runs directory


def test_campaign_status_in_a_pipe_shows_the_failure_log_path_whole(tmp_path: Path, deep: Path) -> None:
    root = deep / "sweep-1"
    stage_dir = root / "stages" / "main"
    stage_dir.mkdir(parents=True)
    manifest = {
        "id": "sweep-1", "name": "sweep", "root": str(root), "source": "c.yaml", "site": "sandbox",
        "created_at": "2026-11-24T00:00:00+00:00", "max_array_size": 1001, "chunk_size": 1001,
        "stages": [{"name": "main", "per_task": True, "partition": "cpu", "nodes": 1, "gpus": 0, "throttle": None,
                    "after": [], "run_dir": str(stage_dir)}],
        "tasks": [{"id": 0, "key": "k", "params": {"lr": 0.1}, "dir": str(root / "tasks" / "0"),
                   "stages": {"main": {"output_dir": "o", "attempts": [
                       {"job_id": "5_0", "submission": "5", "raw_id": "6", "state": "FAILED", "exit_code": 3}]}}}],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    # finished tasks are read from the manifest: no Slurm tool runs (none is on this PATH)
    result = piped("campaign", "status", "sweep-1", "--site", "sandbox", "--set", f"runs_dir={deep}",
                   home=tmp_path, env={"PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    [row] = [line.split() for line in result.stdout.splitlines() if line.split()[:2] == ["main", "0"]]
    assert row[-1] == str(stage_dir / "logs" / "batch-6.out")
    assert "exit code 3" in " ".join(row)
