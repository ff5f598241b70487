"""Batched status: the final query of the integration scenario, replayed from its recording.

tests/fixtures/scheduler/slurm-22.05/scenario/ holds what sacct and squeue printed for one query
over jobs in known roles (scenario.json), recorded by tests/integration/test_scheduler_slurm.py.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hpc.errors import HpcTfError, SchedulerOutputError, SchedulerUnavailable
from hpc.scheduler import JobState, ReasonCategory, SlurmCli, SlurmScheduler, commands
from hpc.scheduler.parse import parse_sacct, restore_exit_codes
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import CommandResult, RetryPolicy
from hpc.scheduler.status import ACCOUNTING_BUDGET_S, STATUS_BUDGET_S, degraded_warnings

SCENARIO = Path(__file__).parents[1] / "fixtures" / "scheduler" / "slurm-22.05" / "scenario"
ROLES: dict[str, str] = json.loads((SCENARIO / "scenario.json").read_text())
SACCT = load_recording(SCENARIO / "query-sacct.rec").result
SQUEUE = load_recording(SCENARIO / "query-squeue.rec").result
OUTAGE = SCENARIO.parent / "outage"


def scheduler_with(*results: CommandResult) -> tuple[SlurmScheduler, ReplayRunner]:
    runner = ReplayRunner(results)
    return SlurmScheduler(SlurmCli(runner, retry=RetryPolicy(attempts=1))), runner


def test_the_recorded_query_is_what_query_asks_for() -> None:
    ids = list(ROLES.values())
    assert list(SACCT.argv) == commands.sacct(ids)
    live = [ROLES[k] for k in ("running", "quota", "held", "array", "never", "unknown")]
    assert list(SQUEUE.argv) == commands.squeue(live)


def test_one_query_maps_every_role() -> None:
    scheduler, runner = scheduler_with(SACCT, SQUEUE)
    statuses = scheduler.query(list(ROLES.values()))
    assert [argv[0] for argv in runner.calls] == ["sacct", "squeue"]

    completed = statuses[ROLES["completed"]]
    assert completed.state.is_success and str(completed.exit_code) == "0:0" and completed.source == "sacct"
    failed = statuses[ROLES["failed"]]
    assert (
        failed.state is JobState.FAILED and failed.exit_code is not None and failed.exit_code.shell_code == 3
    )
    cancelled = statuses[ROLES["cancelled"]]
    assert cancelled.state is JobState.CANCELLED and cancelled.state_text == "CANCELLED by 1001"
    running = statuses[ROLES["running"]]
    assert (running.state, running.node_list, running.source) == (JobState.RUNNING, "cpu1", "squeue")
    assert running.time_limit_s == 300 and running.exit_code is None and running.reason is None

    quota = statuses[ROLES["quota"]]
    assert quota.state is JobState.PENDING and quota.gpus == 6 and quota.nodes == 2
    assert quota.reason is not None and quota.reason.code == "AssocGrpGRES"
    assert quota.reason.category is ReasonCategory.QUOTA
    held = statuses[ROLES["held"]]
    assert held.reason is not None and held.reason.code == "JobHeldUser" and held.reason.stuck
    never = statuses[ROLES["never"]]
    assert never.reason_sentence == (
        f"a job it depends on failed; it will never start: cancel it with hpc-tf cancel {ROLES['never']}"
    )
    assert statuses[ROLES["unknown"]].state is JobState.UNKNOWN
    assert statuses[ROLES["unknown"]].source == "none"


def test_array_summary_and_its_tasks() -> None:
    scheduler, _ = scheduler_with(SACCT, SQUEUE)
    array_id = ROLES["array"]
    statuses = scheduler.query(list(ROLES.values()))
    array = statuses[array_id]
    assert array.source == "summary" and array.state is JobState.RUNNING
    assert array.tasks == (f"{array_id}_0", f"{array_id}_[1-3%1]")
    assert statuses[f"{array_id}_0"].state is JobState.RUNNING
    assert statuses[f"{array_id}_0"].raw_id != array_id  # a task has its own raw id
    pending = statuses[f"{array_id}_[1-3%1]"]
    assert pending.reason is not None and pending.reason.code == "JobArrayTaskLimit"
    assert array.nodes == 1  # what the running task holds


def test_het_job_summary() -> None:
    scheduler, _ = scheduler_with(SACCT, SQUEUE)
    het = ROLES["het"]
    statuses = scheduler.query(list(ROLES.values()))
    assert statuses[het].state is JobState.COMPLETED
    assert statuses[het].tasks == (f"{het}+0", f"{het}+1")
    assert {statuses[f"{het}+{i}"].partition for i in (0, 1)} == {"cpu", "gpu"}


def test_a_task_inside_a_pending_range_and_a_raw_task_id() -> None:
    array_id = ROLES["array"]
    task_raw_id = scheduler_with(SACCT, SQUEUE)[0].query(list(ROLES.values()))[f"{array_id}_0"].raw_id
    ids = [f"{array_id}_2", task_raw_id]
    sacct = CommandResult(tuple(commands.sacct(ids)), 0, SACCT.stdout, "")
    squeue = CommandResult(tuple(commands.squeue(ids)), 0, SQUEUE.stdout, "")
    scheduler, _ = scheduler_with(sacct, squeue)
    statuses = scheduler.query(ids)
    inside = statuses[f"{array_id}_2"]
    assert inside.state is JobState.PENDING and inside.array_task == "2" and inside.job_id == f"{array_id}_2"
    assert inside.reason is not None and inside.reason.code == "JobArrayTaskLimit"
    by_raw = statuses[task_raw_id]
    assert by_raw.job_id == f"{array_id}_0" and by_raw.state is JobState.RUNNING


def test_squeue_view_replaces_a_lagging_sacct_view() -> None:
    # recorded: sacct still had all array tasks pending as one record, and "None" as every pending
    # reason, while squeue showed task 0 running and the real reasons
    lag = SCENARIO.parent / "sacct-lag"
    roles = json.loads((lag / "scenario.json").read_text())
    sacct, squeue = (load_recording(lag / f"query-{tool}.rec").result for tool in ("sacct", "squeue"))
    array_id = roles["array"]
    assert f"{array_id}_[0-3%1]|" in sacct.stdout and f"{array_id}_0|" in squeue.stdout
    statuses = scheduler_with(sacct, squeue)[0].query(list(roles.values()))
    assert f"{array_id}_[0-3%1]" not in statuses
    assert statuses[array_id].tasks == (f"{array_id}_0", f"{array_id}_[1-3%1]")
    assert statuses[f"{array_id}_0"].source == "squeue"
    never = statuses[roles["never"]]
    assert never.reason is not None and never.reason.code == "DependencyNeverSatisfied"


def test_job_known_only_to_squeue_is_not_unknown() -> None:
    # slurmdbd lags behind the controller: a new job may be in squeue only
    quota_line = next(line for line in SQUEUE.stdout.splitlines() if "AssocGrpGRES" in line)
    job_id = quota_line.split("|")[0]
    scheduler, _ = scheduler_with(
        CommandResult(tuple(commands.sacct([job_id])), 0, "", ""),
        CommandResult(tuple(commands.squeue([job_id])), 0, quota_line + "\n", ""),
    )
    status = scheduler.query([job_id])[job_id]
    assert status.state is JobState.PENDING and status.gpus == 6 and status.source == "squeue"


def test_finished_jobs_cost_one_call() -> None:
    done = [ROLES[k] for k in ("completed", "failed", "cancelled")]
    lines = [line for line in SACCT.stdout.splitlines() if line.split("|")[0] in done]
    scheduler, runner = scheduler_with(
        CommandResult(tuple(commands.sacct(done)), 0, "\n".join(lines) + "\n", "")
    )
    statuses = scheduler.query(done)
    assert runner.calls == [tuple(commands.sacct(done))]
    assert all(statuses[j].state.is_terminal for j in done)


def test_nobody_knows_the_job() -> None:
    unknown = load_recording(SCENARIO / "squeue-unknown.rec").result
    scheduler, _ = scheduler_with(CommandResult(tuple(commands.sacct(["99999999"])), 0, "", ""), unknown)
    status = scheduler.query(["99999999"])["99999999"]
    assert status.state is JobState.UNKNOWN and not status.state.is_terminal


def test_no_ids_no_calls() -> None:
    scheduler, runner = scheduler_with()
    assert scheduler.query([]) == {}
    assert runner.calls == []


def test_unknown_state_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    job_id = ROLES["completed"]
    line = next(line for line in SACCT.stdout.splitlines() if line.startswith(f"{job_id}|"))
    weird = line.replace("|COMPLETED|", "|TELEPORTED|")
    scheduler, _ = scheduler_with(
        CommandResult(tuple(commands.sacct([job_id])), 0, weird + "\n", ""),
        CommandResult(tuple(commands.squeue([job_id])), 0, "", ""),
    )
    with caplog.at_level(logging.WARNING):
        status = scheduler.query([job_id])[job_id]
    assert status.state is JobState.UNKNOWN and status.state_text == "TELEPORTED"
    assert "TELEPORTED" in caplog.text


def test_unreadable_output_names_the_command() -> None:
    scheduler, _ = scheduler_with(CommandResult(tuple(commands.sacct(["1"])), 0, "1|2|3\n", ""))
    with pytest.raises(SchedulerOutputError, match="command: sacct --allocations"):
        scheduler.query(["1"])


# --- one daemon not answering: the other one's view, marked ------------------------------------

LIVE = [ROLES[k] for k in ("running", "quota", "held", "array", "never", "unknown")]


def failing(argv: list[str], recording: str) -> CommandResult:
    """What a tool printed in an outage (tests/fixtures/scheduler/slurm-22.05/errors/), for ``argv``."""
    failed = load_recording(SCENARIO.parent / "errors" / recording).result
    return CommandResult(tuple(argv), failed.returncode, failed.stdout, failed.stderr)


def test_controller_down_answers_from_accounting_marked() -> None:
    squeue_down = failing(commands.squeue(LIVE), "controller-down/squeue.rec")
    scheduler, runner = scheduler_with(SACCT, squeue_down)
    scheduler.cli.retry = RetryPolicy()  # the default policy: a refused connection is not asked again
    statuses = scheduler.query(list(ROLES.values()))
    assert [argv[0] for argv in runner.calls] == ["sacct", "squeue"]

    running = statuses[ROLES["running"]]
    assert (running.state, running.source, running.unanswered) == (JobState.RUNNING, "sacct", "slurmctld")
    assert running.unanswered_note == "controller not answering: state from accounting"
    completed = statuses[ROLES["completed"]]  # a finished job's record is accounting's anyway
    assert completed.state is JobState.COMPLETED and completed.unanswered == "" and completed.unanswered_note == ""
    assert statuses[ROLES["unknown"]].state is JobState.UNKNOWN and statuses[ROLES["unknown"]].unanswered
    array = statuses[ROLES["array"]]
    assert array.unanswered == "slurmctld" and all(statuses[t].unanswered for t in array.tasks)
    (warning,) = degraded_warnings(statuses.values())
    assert "slurmctld" in warning and "from accounting" in warning and "\n" not in warning


def test_the_stopped_controller_recording_answers_from_accounting() -> None:
    # recorded with slurmctld really stopped: sacct answered about a completed and a running job
    sacct, squeue = (load_recording(OUTAGE / f"{tool}.rec").result for tool in ("sacct", "squeue"))
    completed, running = sacct.argv[-1].removeprefix("--jobs=").split(",")
    assert list(squeue.argv) == commands.squeue([running])  # what query asks the controller
    scheduler, runner = scheduler_with(sacct, squeue)
    scheduler.cli.retry = RetryPolicy()
    statuses = scheduler.query([completed, running])
    assert len(runner.calls) == 2
    assert (statuses[completed].state, statuses[completed].unanswered) == (JobState.COMPLETED, "")
    assert (statuses[running].state, statuses[running].unanswered) == (JobState.RUNNING, "slurmctld")
    assert statuses[running].node_list == "cpu1" and statuses[running].exit_code is None


def test_cancel_without_the_controller_says_it_is_the_controller() -> None:
    scancel = load_recording(OUTAGE / "scancel.rec").result
    scheduler, runner = scheduler_with(scancel)
    scheduler.cli.retry = RetryPolicy()
    with pytest.raises(SchedulerUnavailable) as raised:
        scheduler.cancel(list(scancel.argv[1:]))
    assert raised.value.summary == "the Slurm controller (slurmctld) is not answering"
    assert len(runner.calls) == 1  # scancel itself already spent ~9 s retrying


def test_a_controller_that_never_answers_costs_the_status_budget_not_a_minute() -> None:
    hung = failing(commands.squeue(LIVE), "controller-hangs/squeue.rec")
    now = [0.0]
    replay = ReplayRunner([SACCT, hung])
    timeouts: dict[str, float] = {}

    def runner(argv: Sequence[str], timeout: float) -> CommandResult:
        timeouts[argv[0]] = timeout
        now[0] += 0.2 if argv[0] == "sacct" else timeout  # squeue is killed at its timeout
        result = replay(argv, timeout)
        return result if argv[0] == "sacct" else CommandResult(result.argv, None, "", "")

    cli = SlurmCli(runner, retry=RetryPolicy(), sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    statuses = SlurmScheduler(cli).query(list(ROLES.values()))
    assert now[0] <= STATUS_BUDGET_S < 15
    assert timeouts["sacct"] <= ACCOUNTING_BUDGET_S
    assert statuses[ROLES["running"]].state is JobState.RUNNING
    assert statuses[ROLES["running"]].unanswered == "slurmctld"


def test_accounting_down_answers_from_the_controller_marked() -> None:
    ids = list(ROLES.values())
    sacct_down = failing(commands.sacct(ids), "slurmdbd-down/sacct.rec")
    squeue_all = CommandResult(tuple(commands.squeue(ids)), 0, SQUEUE.stdout, "")
    scheduler, runner = scheduler_with(sacct_down, squeue_all)
    statuses = scheduler.query(ids)
    assert [argv[0] for argv in runner.calls] == ["sacct", "squeue"]
    running = statuses[ROLES["running"]]
    assert (running.state, running.source, running.unanswered) == (JobState.RUNNING, "squeue", "slurmdbd")
    assert running.unanswered_note == "accounting not answering: state from the controller"
    assert statuses[ROLES["quota"]].reason is not None  # the controller still gives pending reasons
    # squeue has forgotten finished jobs: unknown, and marked as such
    completed = statuses[ROLES["completed"]]
    assert completed.state is JobState.UNKNOWN and completed.unanswered == "slurmdbd"
    (warning,) = degraded_warnings(statuses.values())
    assert "slurmdbd" in warning


def test_neither_daemon_answering_is_an_error() -> None:
    ids = [ROLES["running"]]
    scheduler, _ = scheduler_with(
        failing(commands.sacct(ids), "slurmdbd-down/sacct.rec"),
        failing(commands.squeue(ids), "controller-down/squeue.rec"),
    )
    with pytest.raises(SchedulerUnavailable, match="slurmctld"):
        scheduler.query(ids)


def test_bad_ids_never_reach_a_command() -> None:
    scheduler, runner = scheduler_with()
    with pytest.raises(HpcTfError, match="not a Slurm job id"):
        scheduler.query(["12", "12; scancel -u researcher"])
    assert runner.calls == []


def test_a_thousand_jobs_one_call_each_tool_and_fast() -> None:
    completed_line = next(
        line for line in SACCT.stdout.splitlines() if line.startswith(f"{ROLES['completed']}|")
    )
    ids = [str(100000 + i) for i in range(1000)]
    lines = [completed_line.replace(ROLES["completed"], job_id) for job_id in ids]
    scheduler, runner = scheduler_with(
        CommandResult(tuple(commands.sacct(ids)), 0, "\n".join(lines) + "\n", "")
    )
    started = time.perf_counter()
    statuses = scheduler.query(ids)
    assert time.perf_counter() - started < 1.0
    assert len(runner.calls) == 1
    assert len(statuses) == 1000 and all(s.state is JobState.COMPLETED for s in statuses.values())


def test_a_thousand_array_tasks_summarized() -> None:
    array_id = ROLES["array"]
    task_line = next(line for line in SQUEUE.stdout.splitlines() if line.startswith(f"{array_id}_0|"))
    lines = [task_line.replace(f"{array_id}_0|", f"{array_id}_{i}|") for i in range(1000)]
    scheduler, runner = scheduler_with(
        CommandResult(tuple(commands.sacct([array_id])), 0, "", ""),
        CommandResult(tuple(commands.squeue([array_id])), 0, "\n".join(lines) + "\n", ""),
    )
    statuses = scheduler.query([array_id])
    assert len(runner.calls) == 2
    assert statuses[array_id].state is JobState.RUNNING and len(statuses[array_id].tasks) == 1000
    assert statuses[array_id].tasks[:3] == (f"{array_id}_0", f"{array_id}_1", f"{array_id}_2")


# --- exit codes over 128 --------------------------------------------------------------------------
EXIT_CODES = {v: SCENARIO.parents[1] / f"slurm-{v}" / "exit-codes" for v in ("22.05", "25.11")}


@pytest.mark.parametrize("version", list(EXIT_CODES))
def test_an_exit_status_over_128_reads_whole_on_every_version(version: str) -> None:
    # both recorded: sacct before 25.11 prints 137 as 9:0, and its DerivedExitCode (0:9) and the version
    # say what it was; 25.11 prints 137:0, so no row is a candidate and the version is not asked
    scene = EXIT_CODES[version]
    roles: dict[str, str] = json.loads((scene / "scenario.json").read_text())
    scheduler, runner = scheduler_with(*(load_recording(p).result for p in sorted(scene.glob("*.rec"))))
    statuses = scheduler.query(list(roles.values()))
    endings = {name: statuses[job_id].ending for name, job_id in roles.items()}
    assert endings == {"killed-task": "exit code 137", "killed-batch": "exit code 137", "exit-3": "exit code 3"}
    assert [argv[0] for argv in runner.calls] == (["sacct", "scontrol"] if version == "22.05" else ["sacct"])


@pytest.mark.parametrize(("version", "ending"), [("22.05.8", "exit code 137"), ("24.11.6", "exit code 137"),
                                                 ("25.11.7", "exit code 9"), (None, "exit code 9")])
def test_a_9_with_a_step_killed_by_signal_9_is_137_only_where_sacct_subtracts(version: str | None,
                                                                            ending: str) -> None:
    # the 22.05 recording's killed task (9:0, DerivedExitCode 0:9): from 25.11 on, a 9:0 is a job that
    # exited 9 itself; an unknown version changes nothing
    scene = EXIT_CODES["22.05"]
    killed = json.loads((scene / "scenario.json").read_text())["killed-task"]
    rows = parse_sacct(load_recording(scene / "query-sacct.rec").result.stdout, commands.SACCT_FIELDS)
    (row,) = [r for r in restore_exit_codes(rows, lambda: version) if r.job_id.job == killed]
    assert row.exit_code is not None and f"exit code {row.exit_code.status}" == ending


def test_the_version_is_asked_only_for_an_exit_code_that_may_be_short() -> None:
    # the recorded scenario's failed job (3:0, DerivedExitCode 0:0) is no candidate
    scheduler, runner = scheduler_with(SACCT, SQUEUE)
    scheduler.query(list(ROLES.values()))
    assert [argv[0] for argv in runner.calls] == ["sacct", "squeue"]


def test_without_a_version_an_exit_code_is_left_as_sacct_printed_it() -> None:
    scene = EXIT_CODES["22.05"]
    sacct = load_recording(scene / "query-sacct.rec").result
    no_scontrol = CommandResult(("scontrol", "--version"), 127, "", "scontrol: command not found")
    scheduler, _ = scheduler_with(sacct, no_scontrol)
    roles: dict[str, str] = json.loads((scene / "scenario.json").read_text())
    assert scheduler.query(list(roles.values()))[roles["killed-task"]].ending == "exit code 9"
