"""What commands print into a pipe: whole lines (commands, paths, ids never wrapped or cut), tables as wide
as their cells; and the convention for people and scripts (text by default, ``--json`` for scripts)."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpc.cli import app
from hpc.scheduler import JobState, SlurmCli, SlurmScheduler, commands
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import RetryPolicy
from hpc.scheduler.status import statuses_from_sacct
from tests.unit.test_scheduler_parse import sacct_rows

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


# Commands whose result a script reads: each takes --json (one JSON document on stdout), and prints text
# for people without it. The others only act (cancel, serve down) or print what they print (logs, render).
RESULTS = [["launch"], ["status"], ["metrics"], ["quota"], ["config", "show"], ["node-env"], ["handoff"],
           ["campaign", "run"], ["campaign", "status"], ["campaign", "results"], ["campaign", "resubmit"],
           ["serve", "up"], ["serve", "status"], ["serve", "predict"]]


@pytest.mark.parametrize("argv", RESULTS, ids=" ".join)
def test_every_command_with_a_result_takes_json(argv: list[str]) -> None:
    result = CliRunner().invoke(app, [*argv, "--help"], prog_name="hpc-tf", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"^\s+--json\s", result.stdout, re.MULTILINE), result.stdout


def node_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``serve up`` as the CLI sees it: the serving library's answer for a node that came up."""
    from hpc.serving import secret, service
    from hpc.serving.server import Endpoint

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    secret.create(tmp_path)  # what serve up leaves for its owner
    endpoint = Endpoint(host="127.0.0.1", http_port=8000, grpc_port=8001, metrics_port=8002, pid=4242,
                        hostname="login1", repository=str(tmp_path), log=str(tmp_path / "triton.log"), started=0.0)
    monkeypatch.setattr(service, "serve_up", lambda *args, **kwargs: service.NodeUp(endpoint, "pid 4242"))


def test_serve_up_prints_a_sentence_for_people_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    node_up(monkeypatch, tmp_path)
    result = CliRunner().invoke(app, ["serve", "up", "--repository", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "serving node up: grpc 127.0.0.1:8001, http http://127.0.0.1:8000, pid 4242\n"


def test_serve_up_json_prints_the_endpoint_and_nothing_else(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    node_up(monkeypatch, tmp_path)
    result = CliRunner().invoke(app, ["serve", "up", "--repository", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    endpoint = json.loads(result.stdout)
    assert (endpoint["host"], endpoint["grpc_port"], endpoint["pid"], endpoint["job_id"]) == ("127.0.0.1", 8001, 4242,
                                                                                              None)
    assert "serving node up" not in result.stderr  # the sentence is the text form of the same answer


@pytest.mark.parametrize("site", [["--site", "local"], []], ids=["--site local", "the default site"])
def test_quota_on_a_local_site_says_there_is_none_and_asks_no_slurm(tmp_path: Path, site: list[str]) -> None:
    # no Slurm tool on this PATH: asking sacctmgr or scontrol would fail the command
    result = piped("quota", *site, home=tmp_path, env={"PATH": "/nonexistent"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == ("site 'local' uses the local launcher: it has no GPU quota (its jobs share this machine's "
                             "GPUs); a cluster's quota: hpc-tf quota --site NAME\n")
    as_json = piped("quota", *site, "--json", home=tmp_path, env={"PATH": "/nonexistent"})
    assert json.loads(as_json.stdout)["quota"] is None and as_json.returncode == 0


# --- how a finished job ended: what Slurm says, no exit code it did not have -----------------------------

SCENARIO = REPO / "tests" / "fixtures" / "scheduler" / "slurm-22.05" / "scenario"


def replayed_status(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ids: list[str]) -> list[dict[str, object]]:
    """``hpc-tf status IDS --json`` on the sandbox site, sacct answering with its recorded lines for IDS."""
    recorded = load_recording(SCENARIO / "query-sacct.rec").result.stdout.splitlines()
    runner = ReplayRunner()
    runner.answer(commands.sacct(ids), "".join(f"{line}\n" for line in recorded if line.split("|")[0] in ids))
    scheduler = SlurmScheduler(SlurmCli(runner, retry=RetryPolicy(attempts=1)))
    monkeypatch.setattr("hpc.backends.scheduler_for", lambda *_: scheduler)
    result = CliRunner().invoke(app, ["status", *ids, "--json", "--site", "sandbox", "--set",
                                      f"runs_dir={tmp_path / 'runs'}"])
    assert result.exit_code == 0, result.output
    assert runner.count("sacct") == 1 and runner.count("squeue") == 0  # finished: accounting alone
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_status_of_a_cancelled_job_says_who_cancelled_it_and_when(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    failed, cancelled = replayed_status(monkeypatch, tmp_path, ["232", "233"])  # sacct: "CANCELLED by 1001", 0:0
    assert (failed["state"], failed["info"]) == ("FAILED", "exit code 3")
    try:
        by = pwd.getpwuid(1001).pw_name  # the cluster's user, where this host knows the uid
    except KeyError:
        by = "uid 1001"
    assert (cancelled["state"], cancelled["info"]) == ("CANCELLED", f"cancelled by {by} at 2026-11-24 21:48:54")
    assert (failed["exit_code"], cancelled["exit_code"]) == (3, None)  # Slurm's 0:0 is no exit of the job's


def test_other_final_states_read_as_what_happened() -> None:
    (timeout,) = statuses_from_sacct(sacct_rows("sacct/timeout.txt")).values()  # sacct's ExitCode: 0:0
    assert timeout.ending == "reached its time limit at 2026-11-24 21:38:32"
    for state in JobState:
        if state.is_terminal and not state.is_success and state is not JobState.FAILED:
            assert state.ending and "exit code" not in state.ending, state
