"""The real controller stopped: ``hpc-tf status`` answers from accounting within seconds, marked, and
``cancel`` says in one line that it needs the controller; once the controller is back, a job that ran
through the outage is seen running again.

Unlike tests/integration/test_scheduler_slurm.py (copies of slurm.conf; the cluster untouched), the
first test stops slurmctld itself, with the cluster scripts' own functions (tests/cluster/common.sh:
stop_daemons, start_slurmctld), and always starts it again. The cluster is shared with every other
test: the outage lasts about ten seconds. slurmdbd unreachable is the other way round, and produced with
a slurm.conf copy (tests/integration/_outage.py), as the other outage tests do.

With HPC_TF_RECORD_SCHEDULER_FIXTURES=DIR what sacct, squeue and scancel printed during the outage is
also written to DIR/outage/ (the unit tests replay it). Regenerate (as root,
cluster up): ``HPC_TF_RECORD_SCHEDULER_FIXTURES=tests/fixtures/scheduler/slurm-22.05 pytest -m slurm
tests/integration/test_outage_slurm.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from hpc.scheduler import commands
from hpc.scheduler.replay import format_recording
from tests.conftest import CLUSTER_SCRIPTS, SlurmCluster
from tests.integration._outage import conf_copy, free_port
from tests.integration.test_scheduler_slurm import UserRunner

pytestmark = pytest.mark.slurm

Run = Callable[..., subprocess.CompletedProcess[str]]
RECORD_DIR = os.environ.get("HPC_TF_RECORD_SCHEDULER_FIXTURES")
SLURM_CONF = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))


def cluster_shell(snippet: str) -> subprocess.CompletedProcess[str]:
    """``snippet`` in bash with tests/cluster/common.sh sourced: the rig's one way to stop and start daemons."""
    return subprocess.run(["bash", "-c", f'source "$1" && {snippet}', "bash", str(CLUSTER_SCRIPTS / "common.sh")],
                          capture_output=True, text=True, timeout=90, check=False)


def controller_up() -> bool:
    return "is UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30).stdout


@contextmanager
def controller_stopped() -> Iterator[None]:
    try:
        stop = cluster_shell("stop_daemons slurmctld")
        if controller_up():
            pytest.fail(f"slurmctld not stopped (not started by tests/cluster/up?):\n{stop.stdout}{stop.stderr}")
        yield
    finally:
        start = cluster_shell("daemon_alive slurmctld || start_slurmctld; wait_for 30 slurmctld slurmctld_up")
        assert start.returncode == 0, f"slurmctld did not come back:\n{start.stdout}{start.stderr}"


def accounting_state(job_id: str) -> str:
    sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id],
                           capture_output=True, text=True, timeout=30).stdout.split()
    return sacct[-1] if sacct else ""


def wait_for_accounting(job_id: str, state: str, timeout_s: float = 60) -> None:
    """slurmdbd lags behind the controller: wait until accounting itself has the state."""
    deadline = time.monotonic() + timeout_s
    while accounting_state(job_id) != state:
        if time.monotonic() > deadline:
            pytest.fail(f"accounting never showed job {job_id} {state} (last: {accounting_state(job_id)!r})")
        time.sleep(0.5)


def test_status_answers_from_accounting_while_the_controller_is_stopped(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster
) -> None:
    def hpc_tf(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return researcher_run(["hpc-tf", *args, "--site", "sandbox", "--set", f"runs_dir={scratch_dir / 'runs'}"],
                              cwd=scratch_dir, check=False, timeout=timeout)

    def sbatch(command: str) -> str:
        return researcher_run(["sbatch", "--parsable", "-p", slurm_cluster.cpu_partition, "-t", "5",
                               "-o", "/dev/null", "--wrap", command], cwd=scratch_dir).stdout.strip()

    finished, running = sbatch("true"), sbatch("sleep 300")
    try:
        wait_for_accounting(finished, "COMPLETED")
        wait_for_accounting(running, "RUNNING")
        recorder = UserRunner(slurm_cluster.user, scratch_dir)
        recordings = {
            "sacct": commands.sacct([finished, running]),
            "squeue": commands.squeue([running]),
            "scancel": commands.scancel([running]),
        }
        def timed_status() -> tuple[subprocess.CompletedProcess[str], float]:
            started = time.monotonic()
            return hpc_tf("status", finished, running, "--json"), time.monotonic() - started

        with controller_stopped(), ThreadPoolExecutor(max_workers=5) as pool:
            # all at once: the outage lasts as long as the slowest call, not their sum
            status_call = pool.submit(timed_status)
            cancel_call = pool.submit(hpc_tf, "cancel", running)
            record_calls = {name: pool.submit(recorder, argv, 60) for name, argv in recordings.items() if RECORD_DIR}
            status, elapsed = status_call.result()
            cancel = cancel_call.result()
            recorded = {name: call.result() for name, call in record_calls.items()}

        assert elapsed < 15, f"hpc-tf status took {elapsed:.1f} s with the controller stopped"
        assert status.returncode == 0, status.stderr
        rows = {row["job_id"]: row for row in json.loads(status.stdout)}
        assert rows[finished]["state"] == "COMPLETED"
        assert rows[running]["state"] == "RUNNING"
        assert rows[running]["unanswered"] == "slurmctld"
        assert rows[running]["info"].startswith("controller not answering: state from accounting")
        (warning,) = status.stderr.strip().splitlines()
        assert warning.startswith("hpc-tf: warning: the Slurm controller (slurmctld) is not answering")
        assert "from accounting" in warning

        assert cancel.returncode != 0
        (line,) = cancel.stderr.strip().splitlines()
        assert line.startswith(f"hpc-tf: error: cannot cancel {running}: the Slurm controller (slurmctld)")
        assert "only the controller can cancel jobs" in line and "status still works" in line

        # the controller is back: the job ran through the outage and is seen live again, unmarked
        after = hpc_tf("status", running, "--json")
        (row,) = json.loads(after.stdout)
        assert (row["state"], row["unanswered"]) == ("RUNNING", None), after.stderr
        assert after.stderr.strip() == ""

        if RECORD_DIR:
            out = Path(RECORD_DIR) / "outage"
            out.mkdir(parents=True, exist_ok=True)
            note = ("slurmctld stopped (tests/integration/test_outage_slurm.py); "
                    f"job {finished} had completed, job {running} was running")
            for name, result in recorded.items():
                (out / f"{name}.rec").write_text(format_recording(result, note))
    finally:
        researcher_run(["scancel", running], cwd=scratch_dir, check=False)


def test_status_answers_from_the_controller_when_accounting_does_not(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster
) -> None:
    running = researcher_run(["sbatch", "--parsable", "-p", slurm_cluster.cpu_partition, "-t", "5",
                              "-o", "/dev/null", "--wrap", "sleep 300"], cwd=scratch_dir).stdout.strip()
    try:
        conf = conf_copy(SLURM_CONF, scratch_dir / "dbd-down",
                         AccountingStoragePort=str(free_port()))
        started = time.monotonic()
        status = researcher_run(["hpc-tf", "status", running, "--json", "--site", "sandbox",
                                 "--set", f"runs_dir={scratch_dir / 'runs'}"],
                                cwd=scratch_dir, env={"SLURM_CONF": str(conf)}, check=False)
        assert time.monotonic() - started < 15
        assert status.returncode == 0, status.stderr
        (row,) = json.loads(status.stdout)
        assert row["state"] in ("PENDING", "RUNNING") and row["unanswered"] == "slurmdbd"
        assert row["info"].startswith("accounting not answering: state from the controller")
        (warning,) = status.stderr.strip().splitlines()
        assert warning.startswith("hpc-tf: warning: Slurm's accounting daemon (slurmdbd) is not answering")
    finally:
        researcher_run(["scancel", running], cwd=scratch_dir, check=False)
