"""Parsers on output recorded from the real test cluster, once for each Slurm version it runs.

``tests/fixtures/slurm-<version>/`` is written by tests/cluster/record-fixtures on that version; its
README.md names the command behind every file, and the field lists are read from there, so a
re-recording with other fields is still parsed with the right ones. Every test here runs on every
version's recording (the ``recorded`` fixture).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpc.errors import SchedulerOutputError
from hpc.scheduler import JobState, ReasonCategory
from hpc.scheduler.fields import ExitCode
from hpc.scheduler.parse import (
    SacctRow,
    SqueueRow,
    config_number,
    parse_sacct,
    parse_sbatch_parsable,
    parse_scontrol_config,
    parse_scontrol_record,
    parse_scontrol_show_job,
    parse_sdiag,
    parse_squeue,
)
from hpc.scheduler.replay import load_recording
from hpc.scheduler.status import statuses_from_sacct

FIXTURES = Path(__file__).parents[1] / "fixtures"
VERSIONS = sorted(p.name for p in FIXTURES.glob("slurm-[0-9]*.[0-9]*") if p.is_dir())
RECORDED = FIXTURES / VERSIONS[0]  # set per test by the ``recorded`` fixture


@pytest.fixture(autouse=True, params=VERSIONS)
def recorded(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test once per recorded Slurm version: RECORDED points at that version's files."""
    directory = FIXTURES / request.param
    monkeypatch.setattr(sys.modules[__name__], "RECORDED", directory)
    yield directory


def test_both_supported_versions_are_recorded() -> None:
    assert {"slurm-22.05", "slurm-25.11"} <= set(VERSIONS)
SCENARIO = Path(__file__).parents[1] / "fixtures" / "scheduler" / "slurm-22.05" / "scenario"

# squeue -o letters used by record-fixtures → the --Format names parse_squeue knows
SQUEUE_LETTERS = {"%i": "JobArrayID", "%T": "State", "%r": "Reason", "%D": "NumNodes", "%N": "NodeList",
                  "%M": "TimeUsed", "%l": "TimeLimit", "%P": "Partition", "%u": "UserName"}  # fmt: skip


def recorded_argv(name: str) -> list[str]:
    """The command behind a recorded file, from the fixture README (``- `file`: `command` — note``)."""
    readme = (RECORDED / "README.md").read_text()
    match = re.search(rf"^- `{re.escape(name)}`: `([^`]*)`", readme, re.MULTILINE)
    assert match, f"{name} is not listed in {RECORDED / 'README.md'}"
    return shlex.split(match[1])


def option(argv: list[str], *names: str) -> str:
    for i, arg in enumerate(argv):
        if arg in names:
            return argv[i + 1]
    raise AssertionError(f"none of {names} in {argv}")


def sacct_rows(name: str) -> list[SacctRow]:
    fields = option(recorded_argv(name), "-o", "--format").split(",")
    return parse_sacct((RECORDED / name).read_text(), fields)


def squeue_rows(name: str) -> list[SqueueRow]:
    letters = option(recorded_argv(name), "-o", "--format").split("|")
    return parse_squeue((RECORDED / name).read_text(), [SQUEUE_LETTERS[x] for x in letters])


def test_sacct_batched_query_of_every_state() -> None:
    rows = {row.job_id.job: row for row in sacct_rows("sacct/batched-all-states.txt")}
    by_name = {row.state: row for row in rows.values()}
    assert {
        JobState.RUNNING,
        JobState.PENDING,
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
    } <= set(by_name)
    failed = by_name[JobState.FAILED]
    assert failed.exit_code == ExitCode(3, 0)
    cancelled = [r for r in rows.values() if r.state is JobState.CANCELLED]
    assert all(r.cancelled_by == "1001" and r.state_text == "CANCELLED by 1001" for r in cancelled)
    holding = [r for r in rows.values() if r.gpus == 4]
    assert len(holding) == 1 and holding[0].state is JobState.RUNNING  # AllocTRES gres/gpu=4
    assert holding[0].node_list == "node1"
    waiting = [r for r in rows.values() if r.state is JobState.PENDING]
    assert all(r.node_list == "" and r.alloc_tres == {} for r in waiting)  # "None assigned"
    assert sorted(r.gpus for r in waiting) == [0, 0, 0, 0, 1]  # the over-quota job asked for 1 (ReqTRES)
    ranges = [r for r in rows.values() if r.job_id.is_task_range]
    assert len(ranges) == 1 and ranges[0].job_id.array_task == "[2-5%2]"
    assert ranges[0].reason is not None and ranges[0].reason.code == "JobArrayTaskLimit"
    limits = {r.time_limit_s for r in rows.values()}
    assert limits == {60, 3600}  # 00:01:00 and 01:00:00


def test_sacct_timeout_and_its_elapsed_time() -> None:
    (row,) = sacct_rows("sacct/timeout.txt")
    assert row.state is JobState.TIMEOUT and row.state.is_terminal
    assert row.time_limit_s == 60
    assert row.elapsed_s is not None and row.elapsed_s >= 60


def test_sacct_array_tasks_after_completion() -> None:
    rows = sacct_rows("sacct/array-completed.txt")
    assert [r.job_id.array_task for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert all(r.state is JobState.COMPLETED for r in rows)


def test_sacct_steps_without_allocations_flag() -> None:
    rows = sacct_rows("sacct/steps-completed-and-failed.txt")
    steps = [r for r in rows if r.job_id.step is not None]
    assert [r.job_id.step for r in steps] == ["batch", "batch"]
    assert steps[0].reason is None and steps[0].time_limit_s is None  # steps leave these empty


def test_sacct_requeued_job_counts_its_earlier_run() -> None:
    rows = sacct_rows("sacct/requeued-duplicates.txt")
    assert [r.state for r in rows] == [JobState.REQUEUED, JobState.RUNNING]
    (status,) = statuses_from_sacct(rows).values()
    assert status.state is JobState.RUNNING and status.restarts == 1


def test_sacct_record_written_before_slurmdbd_has_the_whole_job() -> None:
    # right after a job ends sacct may show a bare record: no partition, limit or requested TRES.
    # 22.05's recording caught that moment; 25.11's slurmdbd had the whole record already.
    if RECORDED.name != "slurm-22.05":
        pytest.skip("the bare record is a moment recorded on Slurm 22.05 only")
    (row,) = sacct_rows("sacct/cancelled-pending.txt")
    assert row.state is JobState.CANCELLED
    assert (row.partition, row.time_limit_s, row.req_tres, row.nodes) == ("", None, {}, 0)


def test_sacct_empty_output_is_no_rows() -> None:
    assert parse_sacct("", ["JobID", "State"]) == []
    assert parse_sacct("\n \n", ["JobID", "State"]) == []


def test_sacct_hostile_rows() -> None:
    fields = ["JobID", "State", "Reason"]
    (row,) = parse_sacct("  35 |  RUNNING  | None \n", fields)  # extra spaces
    assert row.job_id.job == "35" and row.state is JobState.RUNNING and row.reason is None
    with pytest.raises(SchedulerOutputError, match="3 were asked for"):
        parse_sacct("35|my|job|RUNNING|None\n", fields)  # a "|" inside a field
    with pytest.raises(SchedulerOutputError):
        parse_sacct("not-a-job|RUNNING|None\n", fields)
    with pytest.raises(ValueError, match="JobID and State"):
        parse_sacct("", ["JobName"])


def test_sacct_unknown_state_does_not_crash() -> None:
    (row,) = parse_sacct("35|TELEPORTED|None\n", ["JobID", "State", "Reason"])
    assert row.state is JobState.UNKNOWN and row.state_text == "TELEPORTED"


def test_squeue_every_pending_reason_recorded() -> None:
    rows = squeue_rows("squeue/all.txt")
    reasons = {r.reason.code for r in rows if r.reason is not None}
    assert reasons == {
        "Resources",
        "JobArrayTaskLimit",
        "DependencyNeverSatisfied",
        "Dependency",
        "AssocGrpGRES",
    }
    running = [r for r in rows if r.state is JobState.RUNNING]
    assert running and all(r.reason is None and r.node_list for r in running)
    quota = next(r for r in rows if r.reason and r.reason.code == "AssocGrpGRES")
    assert quota.reason is not None and quota.reason.category is ReasonCategory.QUOTA
    assert {r.time_limit_s for r in rows} == {60, 600, 3600}  # "1:00", "10:00", "1:00:00"


def test_squeue_array_compressed_and_expanded() -> None:
    compressed = [str(r.job_id) for r in squeue_rows("squeue/all.txt") if r.job_id.array_task is not None]
    expanded = [str(r.job_id) for r in squeue_rows("squeue/all-array-expanded.txt") if r.job_id.array_task]
    assert len(expanded) == len(compressed) - 1 + 4  # one "[2-5%2]" record is four tasks
    assert any("[" in job for job in compressed) and not any("[" in job for job in expanded)


def test_squeue_unknown_job_prints_nothing() -> None:
    assert squeue_rows("squeue/unknown-job.txt") == []


def test_squeue_our_format_with_resources() -> None:
    rows = parse_squeue(load_recording(SCENARIO / "query-squeue.rec").result.stdout)
    quota = next(r for r in rows if r.reason and r.reason.code == "AssocGrpGRES")
    assert quota.gpus == 6 and quota.nodes == 2 and quota.account and quota.partition
    running = next(r for r in rows if r.state is JobState.RUNNING)
    assert running.node_list and running.elapsed_s is not None and running.time_limit_s == 300
    with pytest.raises(SchedulerOutputError):
        parse_squeue("35|35|RUNNING\n")


def test_sbatch_parsable() -> None:
    assert parse_sbatch_parsable((RECORDED / "sbatch/parsable.txt").read_text()).job_id.isdigit()
    submitted = parse_sbatch_parsable((RECORDED / "sbatch/parsable-cluster.txt").read_text())
    assert submitted.job_id.isdigit() and submitted.cluster == "lab"
    for bad in ("", "sbatch: error: x", "35;", "Submitted batch job 35"):
        with pytest.raises(SchedulerOutputError):
            parse_sbatch_parsable(bad)


def test_scontrol_show_config() -> None:
    # the cgroup mode's recording where the version has one (25.11 runs without cgroup here)
    cgroup = (RECORDED / "scontrol/show-config-cgroup.txt").exists()
    name = "show-config-cgroup.txt" if cgroup else "show-config-nocgroup.txt"
    config = parse_scontrol_config((RECORDED / "scontrol" / name).read_text())
    assert config["ClusterName"] == "lab"
    assert config_number(config["MaxArraySize"]) == 1001
    assert config_number(config["MinJobAge"]) == 300  # "300 sec"
    assert "gres/gpu" in config["AccountingStorageTRES"].split(",")  # 25.11 adds gres/gpumem, gres/gpuutil
    assert "Configuration data as of 2026-11-24T21" not in config  # the header is not a key
    if name == "show-config-cgroup.txt":
        assert config["ConstrainDevices"] == "yes"  # from the cgroup section
    assert config_number("(null)") is None


@pytest.mark.parametrize(
    ("name", "state", "reason"),
    [
        ("running", "RUNNING", "None"),
        ("pending-assocgrpgres", "PENDING", "AssocGrpGRES"),
        ("pending-resources", "PENDING", "Resources"),
        ("pending-dependency", "PENDING", "Dependency"),
        ("pending-dependencyneversatisfied", "PENDING", "DependencyNeverSatisfied"),
        ("completed", "COMPLETED", "None"),
        ("failed", "FAILED", "NonZeroExitCode"),
        ("cancelled", "CANCELLED", "None"),
        ("timeout", "TIMEOUT", "TimeLimit"),
    ],
)
def test_scontrol_show_job_records(name: str, state: str, reason: str) -> None:
    (job,) = parse_scontrol_show_job((RECORDED / f"scontrol/show-job-{name}.txt").read_text())
    assert (job["JobState"], job["Reason"]) == (state, reason)
    assert job["UserId"] == "researcher(1001)" and job["Account"] == "lab"
    assert "AllocNode:Sid" in job and "ReqB:S:C:T" in job and "Socks/Node" in job


def test_scontrol_show_job_array_has_a_record_per_task() -> None:
    jobs = parse_scontrol_show_job((RECORDED / "scontrol/show-job-array-running.txt").read_text())
    assert len(jobs) >= 2 and len({j["ArrayJobId"] for j in jobs}) == 1
    assert {j["JobState"] for j in jobs} == {"RUNNING", "PENDING"}


def test_scontrol_record_values_with_spaces() -> None:
    record = parse_scontrol_record(
        "JobId=5 JobName=a b Reason=ReqNodeNotAvail, UnavailableNodes:node1 Command=/x y/job.sh Power= "
    )
    assert record == {
        "JobId": "5",
        "JobName": "a b",
        "Reason": "ReqNodeNotAvail, UnavailableNodes:node1",
        "Command": "/x y/job.sh",
        "Power": "",
    }
    assert parse_scontrol_show_job((RECORDED / "scontrol/show-job-unknown.txt").read_text()) == []


def test_sdiag_rpc_counters() -> None:
    diag = parse_sdiag((RECORDED / "sdiag/sdiag.txt").read_text())
    assert diag.rpc_by_type["REQUEST_SUBMIT_BATCH_JOB"] > 0
    assert "researcher" in diag.rpc_by_user and "root" in diag.rpc_by_user
    assert diag.total_rpcs == sum(diag.rpc_by_type.values())
    assert diag.values["Server thread count"].isdigit()
    assert not any(key.startswith("sdiag output") for key in diag.values)


@pytest.mark.parametrize("target", ["123\n", "123_4\n", "12 3", "x"])
def test_a_job_id_is_matched_whole(tmp_path: Path, target: str) -> None:
    # `$` would let "123\n" through as a job id; a job id is the whole argument or nothing
    from hpc.errors import HpcTfError
    from hpc.runs import find_run

    with pytest.raises(HpcTfError, match="is neither a run directory nor a job id"):
        find_run(target, tmp_path)
