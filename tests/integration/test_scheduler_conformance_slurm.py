"""The same scenarios against both Slurm schedulers: the tools (``scheduler: cli``) and pyslurm.

Each scheduler, as the site's ``scheduler:`` key picks it (hpc.backends.slurm_scheduler), submits
jobs in every state a user meets (completed, exit 3, cancelled while running, running, held, an
array with its pending range, a dependant cancelled because its dependency failed, a GPU job),
reads them back in one batched query, cancels an array task and a whole array, refuses a bad
partition and reads the controller's configuration. With pyslurm, every status must equal the
CLI's for the same jobs at the same moment, field by field.

Calls go through tests/integration/_scheduler_driver.py, run as the cluster user (pyslurm talks to
Slurm as its process's user). pyslurm exists only for Slurm 25.11: on 22.05 its variant is skipped;
on 25.11 a missing pyslurm fails under CI (tests/install installs it once 25.11 is built).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from hpc.scheduler.choice import installed_pyslurm, release
from hpc.scheduler.parse import config_number
from tests.conftest import SlurmCluster, run_as_user

pytestmark = pytest.mark.slurm

DRIVER = Path(__file__).with_name("_scheduler_driver.py")
# HPC_TF_RECORD_SCHEDULER_FIXTURES=tests/fixtures/slurm-25.11: also write what pyslurm gave, for the
# unit tests (tests/unit/test_scheduler_pyslurm_rows.py)
RECORD_DIR = os.environ.get("HPC_TF_RECORD_SCHEDULER_FIXTURES")
NAMES = {"cli": "slurm", "pyslurm": "pyslurm"}  # Scheduler.name of each
PYSLURM_RELEASE = "25.11"


def pyslurm_problem(cluster: SlurmCluster) -> str | None:
    """Why the pyslurm variant cannot run here, or None; skipped (not failed) on another Slurm release."""
    if release(cluster.slurm_version) != PYSLURM_RELEASE:
        pytest.skip(f"pyslurm exists only for Slurm {PYSLURM_RELEASE}; the cluster runs {cluster.slurm_version}")
    version = installed_pyslurm()
    if version is None:
        return f"pyslurm is not installed in {sys.prefix} (tests/install installs it once Slurm 25.11 is built)"
    if release(version) != PYSLURM_RELEASE:
        return f"pyslurm {version} in {sys.prefix} is not made for Slurm {cluster.slurm_version}"
    return None


@pytest.fixture(params=list(NAMES))
def kind(request: pytest.FixtureRequest, slurm_cluster: SlurmCluster) -> str:
    if request.param == "pyslurm":
        problem = pyslurm_problem(slurm_cluster)
        if problem is not None:
            if os.environ.get("CI"):
                pytest.fail(f"{problem} (CI: the pyslurm scheduler must be tested on Slurm 25.11)", pytrace=False)
            pytest.skip(problem)
    return str(request.param)


class Driver:
    """One scheduler's calls, each a process run as the cluster user in ``workdir``."""

    def __init__(self, kind: str, cluster: SlurmCluster, workdir: Path) -> None:
        self.kind = kind
        self.cluster = cluster
        self.workdir = workdir

    def call(self, op: str, arg: Any = None, *, error: bool = False) -> Any:
        done = run_as_user(self.cluster.user, [sys.executable, str(DRIVER), self.kind, op, json.dumps(arg)],
                           cwd=self.workdir, timeout=120, check=False)
        lines = done.stdout.strip().splitlines()
        assert lines, f"{self.kind} {op}: no answer (exit {done.returncode}): {done.stderr}"
        answer = json.loads(lines[-1])
        if error:
            assert done.returncode == 1 and "error" in answer, answer
            return answer["error"]
        assert done.returncode == 0, f"{self.kind} {op} {arg}: {answer} {done.stderr}"
        assert answer["scheduler"] == NAMES[self.kind]  # the scheduler asked for, not a fallback
        return answer["result"]

    def submit(self, script: Path, **options: Any) -> str:
        return str(self.call("submit", {"script": str(script), "options": options}))

    def query(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        result: dict[str, dict[str, Any]] = self.call("query", list(ids))
        return result

    def cancel(self, ids: Sequence[str]) -> None:
        self.call("cancel", list(ids))

    def wait(self, ids: Sequence[str], ready: Callable[[dict[str, dict[str, Any]]], bool],
             timeout_s: float = 120) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = self.query(ids)
            if ready(statuses):
                return statuses
            if time.monotonic() > deadline:
                pytest.fail(f"{self.kind}: not settled after {timeout_s} s: "
                            f"{ {k: (v['state'], v['reason']) for k, v in statuses.items()} }", pytrace=False)
            time.sleep(1)


@pytest.fixture
def driver(kind: str, slurm_cluster: SlurmCluster, scratch_dir: Path) -> Driver:
    return Driver(kind, slurm_cluster, scratch_dir)


def script(workdir: Path, name: str, body: str, *directives: str) -> Path:
    """A batch script as hpc-tf renders one: ``#SBATCH --name=value`` lines, then the body."""
    path = workdir / name
    lines = ["#!/bin/sh", f"#SBATCH --job-name={name}", "#SBATCH --output=/dev/null", "#SBATCH --time=5",
             *(f"#SBATCH {d}" for d in directives), body]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def _state(statuses: Mapping[str, Mapping[str, Any]], job_id: str) -> str:
    # an array task can be missing for a moment (gone from squeue, not yet in sacct): waits go on
    return str(statuses[job_id]["state"]) if job_id in statuses else "(not listed)"


def test_every_state_submit_query_cancel(driver: Driver, slurm_cluster: SlurmCluster) -> None:
    work, cpu, gpu = driver.workdir, f"--partition={slurm_cluster.cpu_partition}", slurm_cluster.gpu_partition
    sleep_sh = script(work, "sleep.sh", "sleep 300", cpu)
    ids: dict[str, str] = {}
    try:
        ids["completed"] = driver.submit(script(work, "true.sh", "true", cpu, "--nodes=1", "--ntasks-per-node=2"))
        ids["failed"] = driver.submit(script(work, "exit3.sh", "exit 3", cpu))
        ids["cancelled"] = driver.submit(sleep_sh)
        ids["running"] = driver.submit(sleep_sh)
        ids["held"] = driver.submit(script(work, "held.sh", "true", cpu), hold=True)
        ids["array"] = driver.submit(sleep_sh, array={"indices": [0, 1, 2, 3], "throttle": 1})
        ids["after_failed"] = driver.submit(script(work, "after.sh", "true", cpu),
                                            after=[["afterok", [ids["failed"]]]], cancel_if_never_satisfied=True)
        ids["gpu"] = driver.submit(script(work, "gpu.sh", "true", f"--partition={gpu}", "--gres=gpu:1"))
        driver.wait([ids["cancelled"]], lambda s: _state(s, ids["cancelled"]) == "RUNNING")
        driver.cancel([ids["cancelled"]])
        ids["unknown"] = "99999999"
        everything = list(ids.values())

        def settled(s: dict[str, dict[str, Any]]) -> bool:
            return (
                [_state(s, ids[k]) for k in ("completed", "failed", "cancelled", "running", "held", "array")]
                == ["COMPLETED", "FAILED", "CANCELLED", "RUNNING", "PENDING", "RUNNING"]
                and _state(s, ids["after_failed"]) == "CANCELLED" and _state(s, ids["gpu"]) == "COMPLETED"
                and f"{ids['array']}_[1-3%1]" in s[ids["array"]]["tasks"]
                and s[ids["held"]]["reason"] is not None
            )

        statuses = driver.wait(everything, settled)
        assert statuses[ids["completed"]]["exit_code"] == {"status": 0, "signal": 0}
        assert statuses[ids["completed"]]["nodes"] == 1
        assert statuses[ids["failed"]]["exit_code"]["status"] == 3
        uid = str(os.stat(work).st_uid)  # the cluster user cancelled it
        assert statuses[ids["cancelled"]]["state_text"] == f"CANCELLED by {uid}"
        assert statuses[ids["cancelled"]]["cancelled_by"] == uid
        assert statuses[ids["running"]]["node_list"] == slurm_cluster.cpu_nodes[0]
        assert statuses[ids["running"]]["partition"] == slurm_cluster.cpu_partition
        assert statuses[ids["running"]]["account"] == slurm_cluster.account
        assert statuses[ids["running"]]["time_limit_s"] == 300
        assert statuses[ids["held"]]["reason"]["code"] == "JobHeldUser"
        assert statuses[ids["gpu"]]["gpus"] == 1
        assert statuses[ids["unknown"]]["state"] == "UNKNOWN"
        array = statuses[ids["array"]]
        assert array["source"] == "summary"
        assert array["tasks"][0] == f"{ids['array']}_0"
        assert _state(statuses, f"{ids['array']}_0") == "RUNNING"
        assert statuses[f"{ids['array']}_[1-3%1]"]["reason"]["code"] == "JobArrayTaskLimit"

        if driver.kind == "pyslurm":  # the same jobs, the same moment: the CLI's view, field by field
            records = driver.call("records", everything)
            assert_same_statuses(records["statuses"], Driver("cli", slurm_cluster, work).query(everything))
            if RECORD_DIR:
                record_scenario(Path(RECORD_DIR), everything, records)

        # an array task on its own (the running one), then the whole array with its pending range
        driver.cancel([f"{ids['array']}_0"])
        after = driver.wait([ids["array"]], lambda s: _state(s, f"{ids['array']}_0") == "CANCELLED")
        assert _state(after, ids["array"]) in ("RUNNING", "PENDING")  # the next task may already run
        driver.cancel([ids["array"], ids["running"], ids["completed"]])  # a finished one is no error
        final = driver.wait([ids["array"], ids["running"]],
                            lambda s: [_state(s, ids["array"]), _state(s, ids["running"])] == ["CANCELLED"] * 2)
        assert all(_state(final, t) == "CANCELLED" for t in final[ids["array"]]["tasks"])
    finally:
        if ids:
            Driver("cli", slurm_cluster, work).cancel([i for i in ids.values() if i != "99999999"])


def record_scenario(out: Path, ids: Sequence[str], records: Mapping[str, Any]) -> None:
    """The fields pyslurm gave for the scenario's jobs, and the statuses made of them (equal to the CLI's)."""
    (out / "pyslurm").mkdir(parents=True, exist_ok=True)
    note = ("tests/integration/test_scheduler_conformance_slurm.py, pyslurm variant: fields of db.Jobs "
            "(accounting) and Jobs (live), and the statuses made of them, equal to the CLI's query after them")
    scenario = {"note": note, "ids": list(ids), **records}
    (out / "pyslurm" / "scenario.json").write_text(json.dumps(scenario, indent=1, sort_keys=True) + "\n")


def assert_same_statuses(mine: Mapping[str, Mapping[str, Any]], cli: Mapping[str, Mapping[str, Any]]) -> None:
    """Equal JobStatus values; a running job's elapsed time may move on by a second or two between two reads."""
    assert sorted(mine) == sorted(cli)
    differ = {}
    for job_id in cli:
        ours, theirs = dict(mine[job_id]), dict(cli[job_id])
        elapsed = ours.pop("elapsed_s"), theirs.pop("elapsed_s")
        moved = None not in elapsed and abs(elapsed[0] - elapsed[1]) <= 3
        if not moved and elapsed[0] != elapsed[1]:
            ours["elapsed_s"], theirs["elapsed_s"] = elapsed
        differ.update({f"{job_id}.{key}": (ours.get(key), theirs.get(key))
                       for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)})
    assert differ == {}, "pyslurm vs CLI: " + "; ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in differ.items())


def test_a_refused_submission_says_why(driver: Driver, slurm_cluster: SlurmCluster) -> None:
    bad = script(driver.workdir, "bad.sh", "true", "--partition=no-such-partition")
    message = driver.call("submit", {"script": str(bad), "options": {}}, error=True)
    assert "invalid partition" in message.lower()


def test_show_config(driver: Driver, slurm_cluster: SlurmCluster) -> None:
    config = driver.call("show_config")
    assert config["ClusterName"] == slurm_cluster.name
    numbers = {key: config_number(config[key]) for key in ("MaxArraySize", "MinJobAge", "MessageTimeout")}
    assert all(value is not None and value > 0 for value in numbers.values()), numbers
    if driver.kind == "pyslurm":
        cli = Driver("cli", slurm_cluster, driver.workdir).call("show_config")
        assert numbers == {key: config_number(cli[key]) for key in numbers}
        assert config["SLURM_CONF"] == cli["SLURM_CONF"]


def test_hpc_tf_launch_status_logs_cancel_through_the_site_key(
    kind: str, slurm_cluster: SlurmCluster, scratch_dir: Path, wait_for_job: Callable[..., Any]
) -> None:
    """What a researcher types, with ``scheduler:`` set: the rendered script (bootstrap, srun, two
    nodes) is submitted, followed, shown and cancelled through the chosen scheduler."""
    specs = {"echo.yaml": "name: echo\ncommand: [/bin/echo, 'hello from a worker']\n"
                          "resources: {nodes: 2, tasks_per_node: 1, partition: gpu, time: '2:00'}\n",
             "sleep.yaml": "name: sleeper\ncommand: [sleep, '300']\nresources: {nodes: 1, time: '5:00'}\n"}
    for name, text in specs.items():
        (scratch_dir / name).write_text(text)
        os.chown(scratch_dir / name, os.stat(scratch_dir).st_uid, -1)

    def hpc_tf(*args: str) -> str:
        site = ["--site", "sandbox", "--set", f"runs_dir={scratch_dir / 'runs'}", "--set", f"scheduler={kind}"]
        return run_as_user(slurm_cluster.user, ["hpc-tf", *args, *site], cwd=scratch_dir, timeout=180).stdout

    shown = json.loads(hpc_tf("config", "show", "--json"))
    assert shown["scheduler (chosen)"]["value"] == kind
    job_id = hpc_tf("launch", "echo.yaml", "--wait").strip()
    assert wait_for_job(job_id).state == "COMPLETED"  # sacct, the independent witness
    (row,) = json.loads(hpc_tf("status", job_id, "--json"))
    assert (row["job_id"], row["state"]) == (job_id, "COMPLETED")
    for task in ("0", "1"):
        assert "hello from a worker" in hpc_tf("logs", job_id, "--task", task)

    sleeper = hpc_tf("launch", "sleep.yaml").strip()
    try:
        wait_for_job(sleeper, until=lambda s: s.state == "RUNNING")
        hpc_tf("cancel", sleeper)
        assert wait_for_job(sleeper).state == "CANCELLED"
    finally:
        Driver("cli", slurm_cluster, scratch_dir).cancel([sleeper])
