"""hpc.scheduler against the real test cluster (``sudo tests/cluster/up``), as the non-root user.

The outages a user meets (controller down or hanging, slurmdbd down, munge unusable) are produced
with the real tools against COPIES of the cluster's slurm.conf pointing at a closed port, a silent
listener or a missing munge socket: the cluster itself is never touched.

A handful of jobs in known states (completed, exit 3, cancelled, pending on the GPU quota, stuck on
a failed dependency, held, an array, a het job) must each come out of ONE batched ``query`` right.
The cluster gate (fail under CI, skip elsewhere) and the fixtures are tests/conftest.py's.

With HPC_TF_RECORD_SCHEDULER_FIXTURES=DIR what the tools printed is also written to DIR/scenario and
DIR/errors as ``.rec`` files, which the unit tests replay. Regenerate (as root, cluster up):
``HPC_TF_RECORD_SCHEDULER_FIXTURES=tests/fixtures/scheduler/slurm-22.05 pytest -m slurm
tests/integration/test_scheduler_slurm.py``.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from hpc.errors import SchedulerCommandFailed, SchedulerUnavailable
from hpc.scheduler import JobState, JobStatus, ReasonCategory, SlurmCli, SlurmScheduler
from hpc.scheduler.replay import format_recording
from hpc.scheduler.run import CommandResult, RetryPolicy, classify, subprocess_runner
from tests._slurm_probes import diagnostics, show_job
from tests.conftest import SlurmCluster
from tests.integration._outage import SilentListener, conf_copy, free_port

pytestmark = pytest.mark.slurm

RECORD_DIR = os.environ.get("HPC_TF_RECORD_SCHEDULER_FIXTURES")


class UserRunner:
    """Runs Slurm tools as the cluster's user (runuser: tests run as root) with a clean environment
    in its scratch dir; keeps every result, with the tool's argv (no runuser prefix)."""

    def __init__(self, user: str, workdir: Path, slurm_conf: Path | None = None) -> None:
        self.user = user
        self.workdir = workdir
        self.slurm_conf = slurm_conf
        self.results: list[CommandResult] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult:
        home = pwd.getpwnam(self.user).pw_dir
        env = ["env", "-i", f"--chdir={self.workdir}", "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={home}"]
        env += [f"USER={self.user}", f"LOGNAME={self.user}", "LANG=C.UTF-8"]
        env += [f"SLURM_CONF={self.slurm_conf}"] if self.slurm_conf else []
        done = subprocess_runner(["runuser", "-u", self.user, "--", *env, *argv], timeout)
        result = CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)
        self.results.append(result)
        return result


@pytest.fixture
def runner(slurm_cluster: SlurmCluster, scratch_dir: Path) -> UserRunner:
    return UserRunner(slurm_cluster.user, scratch_dir)


def write_script(workdir: Path, name: str, body: str) -> Path:
    path = workdir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def wait_for(
    scheduler: SlurmScheduler,
    ids: Sequence[str],
    ready: Callable[[dict[str, JobStatus]], bool],
    timeout_s: float = 90,
) -> dict[str, JobStatus]:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = scheduler.query(ids)
        if ready(statuses) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.5)


def test_one_query_maps_every_state(slurm_cluster: SlurmCluster, runner: UserRunner) -> None:
    scheduler = SlurmScheduler(SlurmCli(runner))
    workdir = runner.workdir
    cpu, gpu = slurm_cluster.cpu_partition, slurm_cluster.gpu_partition
    common = ["--output=/dev/null", f"--chdir={workdir}", "--time=5"]
    true_sh = write_script(workdir, "true.sh", "true")
    sleep_sh = write_script(workdir, "sleep.sh", "sleep 300")
    submitted: list[str] = []

    def submit(script: Path, *args: str) -> str:
        job_id = scheduler.submit(script, sbatch_args=[*common, *args])
        submitted.append(job_id)
        return job_id

    too_many_gpus = slurm_cluster.gpu_quota + 2  # more than the account may ever hold: pends forever
    try:
        ids = {
            "completed": submit(true_sh, f"--partition={cpu}"),
            "failed": submit(write_script(workdir, "exit3.sh", "exit 3"), f"--partition={cpu}"),
            "cancelled": submit(sleep_sh, f"--partition={cpu}"),
            "running": submit(sleep_sh, f"--partition={cpu}"),
            "quota": submit(true_sh, f"--partition={gpu}", "--nodes=2", f"--gres=gpu:{too_many_gpus // 2}"),
            "held": submit(true_sh, f"--partition={cpu}", "--hold"),
            "array": submit(sleep_sh, f"--partition={cpu}", "--array=0-3%1"),
            "het": submit(true_sh, f"--partition={cpu}", ":", f"--partition={gpu}"),
        }
        ids["never"] = submit(true_sh, f"--partition={cpu}", f"--dependency=afterok:{ids['failed']}")
        wait_for(scheduler, [ids["cancelled"]], lambda s: s[ids["cancelled"]].state is JobState.RUNNING)
        scheduler.cancel([ids["cancelled"]])
        ids["unknown"] = "99999999"
        all_ids = list(ids.values())

        def settled(s: dict[str, JobStatus]) -> bool:
            return (
                s[ids["completed"]].state is JobState.COMPLETED
                and s[ids["failed"]].state is JobState.FAILED
                and s[ids["cancelled"]].state is JobState.CANCELLED
                and s[ids["running"]].state is JobState.RUNNING
                and s[ids["het"]].state is JobState.COMPLETED
                # slurmdbd first stores a finished het job as one bare record ("35", no partition),
                # and its components ("35+0", "35+1") a moment later
                and s[ids["het"]].source == "summary"
                and s[ids["array"]].state is JobState.RUNNING
                and all(s[ids[k]].reason is not None for k in ("quota", "held", "never"))
                and s[ids["never"]].reason.code == "DependencyNeverSatisfied"  # type: ignore[union-attr]
            )

        wait_for(scheduler, all_ids, settled)
        before = len(runner.results)
        statuses = scheduler.query(all_ids)
        final_calls = runner.results[before:]

        # one accounting query for everything, one squeue for the jobs still alive
        assert [r.argv[0] for r in final_calls] == ["sacct", "squeue"]
        assert all(r.returncode == 0 for r in final_calls)

        assert statuses[ids["completed"]].state.is_success
        assert str(statuses[ids["completed"]].exit_code) == "0:0"
        assert statuses[ids["failed"]].state is JobState.FAILED
        failed_code = statuses[ids["failed"]].exit_code
        assert failed_code is not None and failed_code.status == 3
        uid = pwd.getpwnam(slurm_cluster.user).pw_uid
        assert statuses[ids["cancelled"]].state_text == f"CANCELLED by {uid}"
        assert statuses[ids["running"]].node_list == slurm_cluster.cpu_nodes[0]

        quota = statuses[ids["quota"]]
        assert quota.state is JobState.PENDING
        assert quota.reason is not None and quota.reason.code == "AssocGrpGRES"
        assert quota.reason.category is ReasonCategory.QUOTA
        assert quota.gpus == too_many_gpus // 2 * 2

        never = statuses[ids["never"]]
        assert never.reason is not None and never.reason.stuck
        assert f"hpc-tf cancel {ids['never']}" in (never.reason_sentence or "")
        held = statuses[ids["held"]]
        assert held.reason is not None and held.reason.code == "JobHeldUser"

        array = statuses[ids["array"]]
        assert array.source == "summary"
        assert f"{ids['array']}_0" in array.tasks
        assert statuses[f"{ids['array']}_0"].state is JobState.RUNNING
        pending_range = [t for t in array.tasks if "[" in t]
        assert pending_range == [f"{ids['array']}_[1-3%1]"]
        assert statuses[pending_range[0]].reason is not None
        assert statuses[pending_range[0]].reason.code == "JobArrayTaskLimit"  # type: ignore[union-attr]

        assert statuses[ids["het"]].tasks[0] == f"{ids['het']}+0"
        assert statuses[ids["unknown"]].state is JobState.UNKNOWN

        if RECORD_DIR:
            record_scenario(Path(RECORD_DIR) / "scenario", ids, final_calls, scheduler, runner)
    finally:
        if submitted:
            scheduler.cancel(submitted)


def test_an_exit_status_over_128_reads_whole(slurm_cluster: SlurmCluster, runner: UserRunner) -> None:
    # A task killed by SIGKILL: srun returns 137 and the batch script passes it on (as hpc-tf's does).
    # sacct before 25.11 printed that 128 short (9:0, "exit code 9"); the status must say 137 on every version.
    scheduler = SlurmScheduler(SlurmCli(runner))
    workdir = runner.workdir
    common = [f"--partition={slurm_cluster.cpu_partition}", "--output=/dev/null", f"--chdir={workdir}", "--time=5"]
    scripts = {
        "killed-task": "srun sh -c 'kill -9 $$'\nexit $?",
        "killed-batch": "kill -9 $$",
        "exit-3": "srun true\nexit 3",
    }
    ids = {name: scheduler.submit(write_script(workdir, f"{name}.sh", body), sbatch_args=common)
           for name, body in scripts.items()}
    wait_for(scheduler, list(ids.values()), lambda s: all(st.state.is_terminal for st in s.values()))
    before = len(runner.results)
    statuses = scheduler.query(list(ids.values()))
    calls = runner.results[before:]
    assert {name: (statuses[i].state, statuses[i].ending) for name, i in ids.items()} == {
        "killed-task": (JobState.FAILED, "exit code 137"),
        "killed-batch": (JobState.FAILED, "exit code 137"),
        "exit-3": (JobState.FAILED, "exit code 3"),
    }
    assert calls[0].argv[0] == "sacct" and all(c.argv[0] != "squeue" for c in calls)  # all ended: no squeue
    if RECORD_DIR:
        out = Path(RECORD_DIR) / "exit-codes"
        out.mkdir(parents=True, exist_ok=True)
        note = "final query of test_an_exit_status_over_128_reads_whole; roles in scenario.json"
        for call in calls:
            (out / f"query-{call.argv[0]}.rec").write_text(format_recording(call, note))
        (out / "scenario.json").write_text(json.dumps(ids, indent=2) + "\n")


def test_errors_and_config(slurm_cluster: SlurmCluster, runner: UserRunner) -> None:
    scheduler = SlurmScheduler(SlurmCli(runner))
    script = write_script(runner.workdir, "true.sh", "true")
    with pytest.raises(SchedulerCommandFailed) as refused:
        scheduler.submit(script, sbatch_args=["--partition=no-such-partition", "--output=/dev/null"])
    assert not refused.value.transient
    assert "invalid partition" in str(refused.value).lower()
    assert [r.argv[0] for r in runner.results] == ["sbatch"]  # a refusal is not retried

    job_id = scheduler.submit(script, sbatch_args=[f"--partition={slurm_cluster.cpu_partition}", "--output=/dev/null"])
    wait_for(scheduler, [job_id], lambda s: s[job_id].state.is_terminal)
    scheduler.cancel([job_id])  # already over: not an error
    config = scheduler.show_config()
    assert int(config["MaxArraySize"]) > 0
    assert config["ClusterName"] == slurm_cluster.name
    assert diagnostics(scheduler.cli).rpc_by_type  # the counters the campaign benchmark compares


def record_scenario(
    out: Path,
    ids: dict[str, str],
    final_calls: Sequence[CommandResult],
    scheduler: SlurmScheduler,
    runner: UserRunner,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    note = "final query of tests/integration/test_scheduler_slurm.py; roles in scenario.json"
    for result in final_calls:
        (out / f"query-{result.argv[0]}.rec").write_text(format_recording(result, note))
    (out / "scenario.json").write_text(json.dumps(ids, indent=2) + "\n")
    extra = {
        "squeue-unknown": lambda: scheduler.query(["99999999"]),
        "scancel-finished": lambda: scheduler.cancel([ids["completed"]]),
        "scontrol-show-job-array": lambda: show_job(scheduler.cli, ids["array"]),
        "scontrol-show-config": scheduler.show_config,
        "sdiag": lambda: diagnostics(scheduler.cli),
    }
    for name, call in extra.items():
        before = len(runner.results)
        call()
        result = runner.results[-1] if name != "squeue-unknown" else runner.results[before:][-1]
        (out / f"{name}.rec").write_text(format_recording(result, f"during the scenario: {name}"))


# --- outages ---------------------------------------------------------------------------------


def test_outages_are_recognised(slurm_cluster: SlurmCluster, runner: UserRunner) -> None:
    real_conf = Path(SlurmScheduler(SlurmCli(runner)).show_config()["SLURM_CONF"])
    script = write_script(runner.workdir, "job.sh", "true")
    sacct_argv = ["sacct", "--allocations", "--parsable2", "--noheader", "--format=JobID,State", "--jobs=1"]
    squeue_argv = ["squeue", "--noheader", "--jobs=1"]
    sbatch_argv = ["sbatch", "--parsable", "--output=/dev/null", str(script.name)]
    cases = {
        # case: (slurm.conf changes, note for the recording, {recording name: argv})
        "controller-down": (
            {"SlurmctldPort": str(free_port())},
            "slurmctld not running: a copy of slurm.conf whose SlurmctldPort nothing listens on",
            {"squeue": squeue_argv, "sbatch": sbatch_argv, "scancel": ["scancel", "1"], "sdiag": ["sdiag"],
             "scontrol-show-config": ["scontrol", "show", "config"]},
        ),
        "slurmdbd-down": (
            {"AccountingStoragePort": str(free_port())},
            "slurmdbd not running: a copy of slurm.conf whose AccountingStoragePort nothing listens on",
            {"sacct": sacct_argv, "sacctmgr": ["sacctmgr", "--noheader", "--parsable2", "show", "assoc"]},
        ),
        "munge-down": (
            {"AuthInfo": "socket=/run/munge/absent.socket"},
            "munged not reachable: a copy of slurm.conf whose AuthInfo=socket= names a missing socket",
            {"squeue": squeue_argv, "sbatch": sbatch_argv},
        ),
    }  # fmt: skip
    with SilentListener() as silent:
        cases["controller-hangs"] = (
            {"SlurmctldHost": f"{slurm_cluster.name}-silent(127.0.0.1)", "SlurmctldPort": str(silent.port)},
            "slurmctld accepts connections and never answers (a listener that reads nothing)",
            {"squeue": squeue_argv, "sbatch": sbatch_argv},
        )
        for case, (changes, note, commands_) in cases.items():
            conf = conf_copy(real_conf, runner.workdir / case, **changes)
            broken = UserRunner(runner.user, runner.workdir, slurm_conf=conf)
            cli = SlurmCli(broken, retry=RetryPolicy(attempts=1), timeout_s=60)
            for name, argv in commands_.items():
                with pytest.raises(SchedulerCommandFailed) as raised:
                    cli.run(argv, repeatable=argv[0] != "sbatch")
                err, result = raised.value, broken.results[-1]
                failure = classify(result)
                assert failure is not None, f"{case}/{name}: {result}"
                if case == "munge-down":
                    assert type(err) is SchedulerCommandFailed and not err.transient and "munge" in str(err)
                else:
                    assert isinstance(err, SchedulerUnavailable) and err.transient, f"{case}/{name}: {err}"
                    assert failure.request_sent == (case == "controller-hangs"), f"{case}/{name}"
                if RECORD_DIR:
                    path = Path(RECORD_DIR) / "errors" / case / f"{name}.rec"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(format_recording(result, note))
