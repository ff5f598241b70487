"""Following jobs until they end (``launch --wait``, ``logs --follow``) without hammering the controller.

One batched query per poll for every job not yet finished; finished jobs are remembered and never
asked about again. The interval grows while nothing changes (capped) and drops back to the first
interval when something does, as submitit's watcher does. A job no tool knows is given up on after
a few polls instead of being waited for forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hpc.scheduler.states import JobState
from hpc.scheduler.status import JobStatus

QueryFn = Callable[[Sequence[str]], Mapping[str, JobStatus]]


@dataclass(frozen=True)
class PollBackoff:
    first_s: float = 2.0
    factor: float = 1.5
    max_s: float = 60.0

    def next_s(self, current_s: float, changed: bool) -> float:
        return self.first_s if changed else min(current_s * self.factor, self.max_s)


class Follower:
    """Polls a set of jobs; the caller decides when to sleep (so it can tail logs in between)."""

    def __init__(
        self,
        query: QueryFn,
        job_ids: Sequence[str],
        *,
        backoff: PollBackoff | None = None,
        unknown_polls: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._query = query
        self._backoff = backoff or PollBackoff()
        self._unknown_polls = unknown_polls
        self._clock = clock
        self._open = list(dict.fromkeys(job_ids))
        self._unknown: dict[str, int] = {}
        self._interval_s = self._backoff.first_s
        self._next_at = clock()
        self.latest: dict[str, JobStatus] = {}
        self.polls = 0

    @property
    def done(self) -> bool:
        """Every job has ended (or stayed unknown for ``unknown_polls`` polls)."""
        return not self._open

    def seconds_until_due(self) -> float:
        return max(0.0, self._next_at - self._clock())

    def poll(self) -> dict[str, JobStatus]:
        """One query for the jobs still open; returns every status known so far."""
        if not self._open:
            return dict(self.latest)
        answer = self._query(self._open)
        self.polls += 1
        changed = False
        for key, status in answer.items():
            previous = self.latest.get(key)
            changed |= previous is None or previous.state is not status.state
            self.latest[key] = status
        still_open = []
        for job_id in self._open:
            state = self.latest[job_id].state if job_id in self.latest else JobState.UNKNOWN
            self._unknown[job_id] = self._unknown.get(job_id, 0) + 1 if state is JobState.UNKNOWN else 0
            if state.is_active or (state is JobState.UNKNOWN and self._unknown[job_id] < self._unknown_polls):
                still_open.append(job_id)
        self._open = still_open
        self._interval_s = self._backoff.next_s(self._interval_s, changed)
        self._next_at = self._clock() + self._interval_s
        return dict(self.latest)

    def wait(
        self,
        *,
        on_update: Callable[[Mapping[str, JobStatus]], None] | None = None,
        timeout_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict[str, JobStatus]:
        """Poll until every job has ended or ``timeout_s`` passed; returns the last statuses."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        while True:
            statuses = self.poll()
            if on_update is not None:
                on_update(statuses)
            if self.done or (deadline is not None and self._clock() >= deadline):
                return statuses
            pause = self.seconds_until_due()
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - self._clock()))
            sleep(pause)
