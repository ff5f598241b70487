"""Running Slurm commands: failures recorded from the real tools are classified, retried or not."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hpc.errors import SchedulerCommandFailed, SchedulerUnavailable
from hpc.scheduler import SlurmCli, SlurmScheduler, commands
from hpc.scheduler.replay import ReplayRunner, format_recording, load_recording, parse_recording
from hpc.scheduler.run import CommandResult, RetryPolicy, classify, subprocess_runner
from tests._slurm_probes import diagnostics, show_job

ERRORS = Path(__file__).parents[1] / "fixtures" / "scheduler" / "slurm-22.05" / "errors"
RECORDED = Path(__file__).parents[1] / "fixtures" / "slurm-22.05"
ALL_ERRORS = sorted(p.relative_to(ERRORS).as_posix() for p in ERRORS.rglob("*.rec"))


def recorded(name: str) -> CommandResult:
    return load_recording(ERRORS / name).result


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def cli_for(runner: ReplayRunner, sleeps: Sleeps | None = None, **retry: float) -> SlurmCli:
    return SlurmCli(runner, retry=RetryPolicy(**retry), sleep=sleeps or Sleeps())  # type: ignore[arg-type]


def test_every_recorded_error_is_classified() -> None:
    assert len(ALL_ERRORS) >= 10
    for name in ALL_ERRORS:
        failure = classify(recorded(name))
        assert failure is not None, name
        assert not failure.summary.startswith(recorded(name).argv[0] + " failed"), f"{name}: not recognised"


@pytest.mark.parametrize("name", [n for n in ALL_ERRORS if n.startswith("controller-down/")])
def test_controller_down(name: str) -> None:
    failure = classify(recorded(name))
    assert failure is not None
    assert (failure.unavailable, failure.transient, failure.request_sent) == (True, True, False)
    assert "slurmctld" in failure.summary


@pytest.mark.parametrize("name", ["slurmdbd-down/sacct.rec", "slurmdbd-down/sacctmgr.rec"])
def test_accounting_daemon_down(name: str) -> None:
    failure = classify(recorded(name))
    assert failure is not None
    assert failure.unavailable and failure.transient and "slurmdbd" in failure.summary


@pytest.mark.parametrize("name", ["controller-hangs/squeue.rec", "controller-hangs/sbatch.rec"])
def test_controller_hangs_means_the_request_may_have_arrived(name: str) -> None:
    failure = classify(recorded(name))
    assert failure is not None
    assert (failure.unavailable, failure.transient, failure.request_sent) == (True, True, True)


@pytest.mark.parametrize("name", ["munge-down/squeue.rec", "munge-down/sbatch.rec"])
def test_munge_down_is_not_retried(name: str) -> None:
    failure = classify(recorded(name))
    assert failure is not None
    assert not failure.transient and not failure.unavailable and "munged" in failure.summary


def test_success_and_timeout() -> None:
    assert classify(CommandResult(("squeue",), 0, "", "")) is None
    failure = classify(CommandResult(("squeue",), None, "", ""), timeout=30)
    assert (
        failure is not None
        and failure.request_sent
        and failure.summary == "squeue did not answer within 30 s"
    )


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("sbatch/error-invalid-partition.txt", "sbatch failed: Invalid partition name specified"),
        (
            "sbatch/error-invalid-account.txt",
            "sbatch failed: Invalid account or account/partition combination",
        ),
        ("sbatch/error-too-many-gpus-per-node.txt", "sbatch failed: Requested node configuration is not"),
    ],
)
def test_sbatch_refusals_are_final(name: str, summary: str) -> None:
    result = CommandResult(("sbatch", "--parsable", "job.sbatch"), 1, "", (RECORDED / name).read_text())
    failure = classify(result)
    assert failure is not None and not failure.transient and not failure.unavailable
    assert failure.summary.startswith(summary)


def test_transient_failure_is_retried_with_growing_delays() -> None:
    argv = recorded("controller-hangs/squeue.rec").argv
    runner = ReplayRunner([recorded("controller-hangs/squeue.rec")] * 2)
    runner.answer(argv, stdout="")
    sleeps = Sleeps()
    result = cli_for(runner, sleeps, attempts=3, first_delay_s=1, factor=2).run(argv)
    assert result.returncode == 0
    assert sleeps.calls == [1, 2]
    assert len(runner.calls) == 3


def test_retries_are_bounded() -> None:
    slow = recorded("controller-hangs/squeue.rec")
    runner = ReplayRunner([slow])
    with pytest.raises(SchedulerUnavailable) as raised:
        cli_for(runner, attempts=3).run(slow.argv)
    assert len(runner.calls) == 3
    err = raised.value
    assert err.transient and err.returncode == 1 and "Socket timed out" in err.stderr
    assert "controller" in str(err) and "squeue --noheader" in str(err) and "hint: " in str(err)


def test_a_controller_that_refused_the_connection_is_not_asked_again() -> None:
    # the tool already kept trying for about MessageTimeout (squeue ~18 s): asking again only adds that
    down = recorded("controller-down/squeue.rec")
    runner = ReplayRunner([down])
    sleeps = Sleeps()
    with pytest.raises(SchedulerUnavailable) as raised:
        cli_for(runner, sleeps, attempts=3).run(down.argv)
    assert len(runner.calls) == 1 and sleeps.calls == []
    err = raised.value
    assert err.transient and "Unable to contact slurm controller" in err.stderr and "slurmctld" in str(err)


def test_a_deadline_bounds_every_attempt_and_the_retries() -> None:
    slow = recorded("controller-hangs/squeue.rec")
    now = [100.0]
    timeouts: list[float] = []

    def hung(argv: object, timeout: float) -> CommandResult:
        timeouts.append(timeout)
        now[0] += timeout  # killed at its timeout
        return CommandResult(slow.argv, None, "", "")

    def sleep(seconds: float) -> None:
        now[0] += seconds

    cli = SlurmCli(hung, timeout_s=30, retry=RetryPolicy(attempts=5), sleep=sleep, clock=lambda: now[0])
    with pytest.raises(SchedulerUnavailable, match="did not answer within 8 s"):
        cli.run(slow.argv, deadline=108.0)
    assert timeouts == [8.0] and now[0] == 108.0


def test_retries_stop_when_time_is_up() -> None:
    down = recorded("controller-hangs/squeue.rec")
    runner = ReplayRunner([down])
    now = [0.0]

    def slow(argv: object, timeout: float) -> CommandResult:
        now[0] += 18  # what a real squeue spends when the controller is down
        return runner(down.argv, timeout)

    cli = SlurmCli(
        slow, retry=RetryPolicy(attempts=5, give_up_after_s=30), sleep=Sleeps(), clock=lambda: now[0]
    )
    with pytest.raises(SchedulerUnavailable):
        cli.run(down.argv)
    assert len(runner.calls) == 2


def test_a_refusal_is_not_retried() -> None:
    result = CommandResult(
        ("sbatch", "--parsable", "job.sbatch"),
        1,
        "",
        (RECORDED / "sbatch/error-invalid-partition.txt").read_text(),
    )
    runner = ReplayRunner([result])
    with pytest.raises(SchedulerCommandFailed) as raised:
        SlurmScheduler(cli_for(runner)).submit("job.sbatch")
    assert type(raised.value) is SchedulerCommandFailed and not raised.value.transient
    assert len(runner.calls) == 1


def test_sbatch_to_a_controller_that_is_down_fails_at_once() -> None:
    down = recorded("controller-down/sbatch.rec")
    argv = commands.sbatch("job.sh")
    runner = ReplayRunner([CommandResult(tuple(argv), down.returncode, down.stdout, down.stderr)])
    with pytest.raises(SchedulerUnavailable, match="slurmctld") as raised:
        SlurmScheduler(cli_for(runner)).submit("job.sh")
    assert len(runner.calls) == 1 and raised.value.transient


def test_sbatch_that_may_have_been_submitted_is_not_repeated() -> None:
    hung = recorded("controller-hangs/sbatch.rec")
    argv = commands.sbatch("job.sh")
    runner = ReplayRunner([CommandResult(tuple(argv), hung.returncode, hung.stdout, hung.stderr)])
    runner.answer(argv, stdout="4242\n")
    with pytest.raises(SchedulerUnavailable, match="may have been submitted anyway") as raised:
        SlurmScheduler(cli_for(runner)).submit("job.sh")
    assert len(runner.calls) == 1 and raised.value.transient


def test_tolerated_answers() -> None:
    unknown = load_recording(ERRORS.parent / "scenario" / "squeue-unknown.rec").result
    runner = ReplayRunner([unknown])
    result = cli_for(runner).run(unknown.argv, tolerate=("Invalid job id specified",))
    assert result.returncode == 1 and result.stdout == ""
    with pytest.raises(SchedulerCommandFailed, match="Invalid job id specified"):
        cli_for(runner).run(unknown.argv)


def test_cancel_of_finished_and_unknown_jobs_is_quiet() -> None:
    finished = load_recording(ERRORS.parent / "scenario" / "scancel-finished.rec").result
    runner = ReplayRunner([finished])
    SlurmScheduler(cli_for(runner)).cancel(list(finished.argv[1:]))
    SlurmScheduler(cli_for(runner)).cancel([])  # nothing to do: no call
    assert runner.count("scancel") == 1


# --- the real process runner --------------------------------------------------------------------


def test_subprocess_runner_captures_everything() -> None:
    result = subprocess_runner(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")


def test_subprocess_runner_kills_at_the_timeout() -> None:
    started = time.monotonic()
    result = subprocess_runner(["sh", "-c", "echo early; exec sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 10
    assert result.returncode is None
    assert classify(result, 0.5) is not None


def test_missing_tool() -> None:
    result = subprocess_runner(["hpc-tf-no-such-slurm-tool"], timeout=5)
    failure = classify(result)
    assert result.returncode == 127 and failure is not None and "not found" in failure.summary


def test_no_shell_is_involved(tmp_path: Path) -> None:
    canary = tmp_path / "PWNED"
    result = subprocess_runner(["echo", f"$(touch {canary})", ";", "touch", str(canary)], timeout=5)
    assert result.returncode == 0 and not canary.exists()


# --- recordings ---------------------------------------------------------------------------------


def test_recording_round_trip() -> None:
    original = CommandResult(("squeue", "--format=%i|%T", "--jobs=1,2"), None, "a|b\n", "oops")
    again = parse_recording(format_recording(original, "a note")).result
    assert again == original
    assert parse_recording(format_recording(CommandResult(("true",), 0), "")).result.stdout == ""


def test_replay_runner_refuses_unrecorded_commands() -> None:
    with pytest.raises(LookupError, match="no recording for: squeue"):
        ReplayRunner()(["squeue"], 1)


def test_config_job_record_and_diagnostics_through_the_scheduler() -> None:
    scenario = ERRORS.parent / "scenario"
    results = [load_recording(scenario / f"{n}.rec").result for n in ("scontrol-show-config", "sdiag")]
    job = load_recording(scenario / "scontrol-show-job-array.rec").result
    runner = ReplayRunner([*results, job])
    scheduler = SlurmScheduler(cli_for(runner))
    config = scheduler.show_config()
    assert config["ClusterName"] == "lab" and config["MaxArraySize"].isdigit()
    records = show_job(scheduler.cli, job.argv[-1])
    assert {r["ArrayJobId"] for r in records} == {job.argv[-1]}
    assert any(r["JobState"] == "RUNNING" for r in records)
    diag = diagnostics(scheduler.cli)
    assert diag.rpc_by_type["REQUEST_JOB_INFO"] > 0 and diag.rpc_by_user["researcher"] > 0
    assert [argv[0] for argv in runner.calls] == ["scontrol", "scontrol", "sdiag"]


def test_timeout_kills_what_the_command_started() -> None:
    # a child that keeps the pipes open would make a plain subprocess.run wait for it
    started = time.monotonic()
    result = subprocess_runner(["sh", "-c", "sleep 30 & sleep 30; echo never"], timeout=0.5)
    assert result.returncode is None and "never" not in result.stdout
    assert time.monotonic() - started < 10
