"""Following jobs: one batched query per poll, finished jobs never asked again, backoff."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from hpc.scheduler import Follower, JobState, JobStatus, PollBackoff, SlurmCli, SlurmScheduler

UNKNOWN = JobStatus("?", JobState.UNKNOWN, source="none")


class Script:
    """A fake scheduler whose jobs go through given states, one per poll (the last one stays)."""

    def __init__(self, timelines: Mapping[str, Sequence[str]]) -> None:
        self.timelines = {job: list(states) for job, states in timelines.items()}
        self.asked: list[list[str]] = []

    def __call__(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.asked.append(list(job_ids))
        answer = {}
        for job in job_ids:
            states = self.timelines.get(job)
            state = (states.pop(0) if len(states) > 1 else states[0]) if states else "UNKNOWN"
            answer[job] = JobStatus(job, JobState(state))
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_one_query_per_poll_and_finished_jobs_are_not_asked_again() -> None:
    script = Script(
        {"1": ["PENDING", "RUNNING", "COMPLETED"], "2": ["RUNNING", "FAILED"], "3": ["COMPLETED"]}
    )
    clock = Clock()
    final = Follower(script, ["1", "2", "3"], clock=clock).wait(sleep=clock.sleep)
    assert script.asked == [["1", "2", "3"], ["1", "2"], ["1"]]
    assert {j: s.state for j, s in final.items()} == {
        "1": JobState.COMPLETED,
        "2": JobState.FAILED,
        "3": JobState.COMPLETED,
    }


def test_interval_grows_while_nothing_changes_and_is_capped() -> None:
    script = Script({"1": ["PENDING"] * 8 + ["RUNNING", "RUNNING", "COMPLETED"]})
    clock = Clock()
    backoff = PollBackoff(first_s=2, factor=2, max_s=10)
    Follower(script, ["1"], backoff=backoff, clock=clock).wait(sleep=clock.sleep)
    # changed at poll 1 (new) and poll 9 (RUNNING): back to 2 s each time
    assert clock.sleeps == [2, 4, 8, 10, 10, 10, 10, 10, 2, 4]


def test_a_job_nobody_knows_is_given_up_on() -> None:
    script = Script({"1": ["RUNNING"]})
    clock = Clock()
    follower = Follower(script, ["1", "404"], unknown_polls=3, clock=clock)
    follower.wait(sleep=clock.sleep, timeout_s=100)
    assert [ids for ids in script.asked if "404" in ids] == [["1", "404"]] * 3
    assert not follower.done  # job 1 still runs: the timeout ended the wait


def test_callback_and_timeout() -> None:
    script = Script({"1": ["RUNNING"]})
    clock = Clock()
    seen: list[JobState] = []
    final = Follower(script, ["1"], clock=clock).wait(
        sleep=clock.sleep, timeout_s=30, on_update=lambda s: seen.append(s["1"].state)
    )
    assert final["1"].state is JobState.RUNNING
    assert clock.now == pytest.approx(30)
    assert set(seen) == {JobState.RUNNING} and len(seen) == len(script.asked)


def test_polling_is_left_to_the_caller() -> None:
    script = Script({"1": ["PENDING", "COMPLETED"]})
    clock = Clock()
    follower = Follower(script, ["1"], backoff=PollBackoff(first_s=5), clock=clock)
    assert follower.seconds_until_due() == 0
    follower.poll()
    assert follower.seconds_until_due() == 5
    clock.now += 3
    assert follower.seconds_until_due() == 2
    follower.poll()
    assert follower.done and follower.polls == 2
    assert follower.poll()["1"].state is JobState.COMPLETED and follower.polls == 2  # nothing left to ask


def test_array_members_reported_too() -> None:
    def query(ids: Sequence[str]) -> dict[str, JobStatus]:
        return {
            "12": JobStatus("12", JobState.COMPLETED, tasks=("12_0",), source="summary"),
            "12_0": JobStatus("12_0", JobState.COMPLETED),
        }

    clock = Clock()
    final = Follower(query, ["12"], clock=clock).wait(sleep=clock.sleep)
    assert set(final) == {"12", "12_0"}


def test_constructing_a_scheduler_runs_nothing() -> None:
    def refuse(argv: object, timeout: float) -> object:
        raise AssertionError("no command may run at construction")

    SlurmScheduler(SlurmCli(refuse))  # type: ignore[arg-type]
    SlurmScheduler()
