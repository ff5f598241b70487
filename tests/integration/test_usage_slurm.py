"""``hpc-tf usage`` against Slurm's own accounting, on the test cluster, as the cluster's user.

Jobs holding 0, 1 and 2 GPUs and a two-task array run to completion; what ``hpc-tf usage --json``
says each cost must equal allocated GPUs × ElapsedRaw as ``sacct -X -P -o JobID,AllocTRES,ElapsedRaw``
prints them, and the total of those jobs the sum. A running job counts to now; a requeued job's earlier
run stays counted. The cluster gate (fail
under CI, skip elsewhere) and the fixtures are tests/conftest.py's.

With HPC_TF_RECORD_SCHEDULER_FIXTURES=DIR the calls of :meth:`SlurmScheduler.usage` (by time, by job
id, a running job, a requeued one) are written to DIR/usage as ``.rec`` files, which tests/unit/test_usage.py replays.
Regenerate (as root, cluster up): ``HPC_TF_RECORD_SCHEDULER_FIXTURES=tests/fixtures/scheduler/slurm-22.05
pytest -m slurm tests/integration/test_usage_slurm.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from hpc.scheduler import JobState, SlurmCli, SlurmScheduler
from hpc.scheduler.replay import format_recording
from tests._readme import readme_argv
from tests.conftest import SlurmCluster, run_as_researcher
from tests.integration.test_scheduler_slurm import UserRunner, wait_for, write_script

pytestmark = pytest.mark.slurm

RECORD_DIR = os.environ.get("HPC_TF_RECORD_SCHEDULER_FIXTURES")


def sacct_gpu_seconds(slurm_cluster: SlurmCluster, cwd: Path, job_ids: list[str]) -> dict[str, int]:
    """Slurm's own numbers: allocated gres/gpu × ElapsedRaw per allocation (summed over a requeued job's runs)."""
    argv = ["sacct", "-X", "-P", "-n", "-o", "JobID,AllocTRES,ElapsedRaw", "-j", ",".join(job_ids)]
    found: dict[str, int] = {}
    for line in run_as_researcher(slurm_cluster, argv, cwd=cwd).stdout.splitlines():
        job_id, tres, elapsed = line.split("|")
        gpus = next((int(item.split("=")[1]) for item in tres.split(",") if item.startswith("gres/gpu=")), 0)
        found[job_id] = found.get(job_id, 0) + gpus * int(elapsed)
    return found


def test_usage_equals_sacct_allocated_gpus_times_elapsed(slurm_cluster: SlurmCluster, scratch_dir: Path) -> None:
    runner = UserRunner(slurm_cluster.user, scratch_dir)
    scheduler = SlurmScheduler(SlurmCli(runner))
    started = time.time()
    common = ["--output=/dev/null", "--time=5"]
    gpu = [f"--partition={slurm_cluster.gpu_partition}", *common]
    jobs = {
        "cpu": scheduler.submit(write_script(scratch_dir, "cpu.sh", "sleep 2"),
                                sbatch_args=[f"--partition={slurm_cluster.cpu_partition}", *common]),
        "one-gpu": scheduler.submit(write_script(scratch_dir, "one.sh", "sleep 3"),
                                    sbatch_args=[*gpu, "--gres=gpu:1"]),
        "two-gpus": scheduler.submit(write_script(scratch_dir, "two.sh", "sleep 4"),
                                     sbatch_args=[*gpu, "--gres=gpu:2"]),
        "array": scheduler.submit(write_script(scratch_dir, "array.sh", "sleep 2"),
                                  sbatch_args=[*gpu, "--gres=gpu:1", "--array=0-1"]),
    }
    ids = list(jobs.values())
    wait_for(scheduler, ids, lambda s: all(st.state.is_terminal for st in s.values()), timeout_s=180)
    time.sleep(2)  # slurmdbd stores the end records a moment after the controller
    expected = sacct_gpu_seconds(slurm_cluster, scratch_dir, ids)
    array = jobs["array"]
    assert sorted(expected) == sorted([jobs["cpu"], jobs["one-gpu"], jobs["two-gpus"], f"{array}_0", f"{array}_1"])
    assert expected[jobs["cpu"]] == 0 and expected[jobs["two-gpus"]] >= 2 * 4  # the jobs held what they asked

    # what the user types (README), as JSON: every allocation of the last 7 days, by campaign
    argv = [*readme_argv("hpc-tf usage --since 7d --by campaign"), "--site", "sandbox", "--json"]
    report = json.loads(run_as_researcher(slurm_cluster, argv, cwd=scratch_dir, timeout=120).stdout)
    mine = {job["job_id"]: job for job in report["jobs"] if job["job_id"].split("_")[0] in ids}
    assert {job_id: job["gpu_seconds"] for job_id, job in mine.items()} == expected
    assert {job_id: job["gpus"] for job_id, job in mine.items()} == {
        jobs["cpu"]: 0, jobs["one-gpu"]: 1, jobs["two-gpus"]: 2, f"{array}_0": 1, f"{array}_1": 1}
    rows = {row["key"]: row["gpu_seconds"] for row in report["rows"]}
    assert rows["-"] >= sum(expected.values())  # none of these jobs is a campaign's
    assert report["gpu_seconds"] == sum(job["gpu_seconds"] for job in report["jobs"]) >= sum(expected.values())
    assert report["budgets"] == []  # account lab has GrpTRES, no GrpTRESMins: no budget to show

    # the same through the scheduler in process: one sacct call each way, by time and by job id
    before = len(runner.results)
    by_time = scheduler.usage(since=started - 60, user=slurm_cluster.user)
    by_id = scheduler.usage(ids)
    calls = runner.results[before:]
    assert [call.argv[0] for call in calls] == ["sacct", "sacct"]
    assert {u.job_id: u.gpu_seconds for u in by_id} == expected
    assert {u.job_id: u.gpu_seconds for u in by_time if u.base in ids} == expected

    # a running job counts to now
    running = scheduler.submit(write_script(scratch_dir, "long.sh", "sleep 120"), sbatch_args=[*gpu, "--gres=gpu:1"])
    try:
        deadline = time.monotonic() + 120
        while not (first := scheduler.usage([running])) or first[0].state is not JobState.RUNNING:
            assert time.monotonic() < deadline, first  # accounting learns of a job after the controller
            time.sleep(1)
        running_call = runner.results[-1]
        time.sleep(3)
        later = scheduler.usage([running])
        assert first[0].gpus == 1 and later[0].gpu_seconds >= first[0].gpu_seconds + 2
        # a requeued job's earlier run held its GPU too: it stays counted beside the new run
        run_as_researcher(slurm_cluster, ["scontrol", "requeue", running], cwd=scratch_dir)
        while len(runs := scheduler.usage([running])) < 2:
            assert time.monotonic() < deadline, runs
            time.sleep(1)
        requeued_call = runner.results[-1]
        assert runs[0].state is JobState.REQUEUED and runs[0].gpu_seconds >= later[0].gpu_seconds
        assert [r.job_id for r in runs] == [running, running]
    finally:
        scheduler.cancel([running])

    if RECORD_DIR:
        out = Path(RECORD_DIR) / "usage"
        out.mkdir(parents=True, exist_ok=True)
        note = "tests/integration/test_usage_slurm.py; roles in scenario.json, sacct's own numbers in expected.json"
        (out / "by-time.rec").write_text(format_recording(calls[0], note))
        (out / "by-id.rec").write_text(format_recording(calls[1], note))
        (out / "running.rec").write_text(format_recording(running_call, f"{note}; job {running} running"))
        (out / "requeued.rec").write_text(format_recording(requeued_call, f"{note}; job {running} requeued"))
        (out / "scenario.json").write_text(json.dumps(jobs, indent=2) + "\n")
        (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
