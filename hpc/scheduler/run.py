"""Running Slurm's tools: argv lists, a timeout on every call, failures sorted into what a user can act on.

A failed call becomes :class:`SchedulerUnavailable` when a daemon did not answer (controller or
accounting: the messages below are the ones Slurm 22.05 prints, recorded in
``tests/fixtures/scheduler/slurm-22.05/errors/``), else :class:`SchedulerCommandFailed`. A daemon that is
slow or busy is asked again a bounded number of times with backoff, within an optional deadline; one
that refused the connection is not (the tool itself already kept trying for about MessageTimeout). A
call that may already have taken effect (``sbatch`` whose request reached the controller before the
reply was lost) is never repeated.

The process runner is injectable (:class:`Runner`), so everything above this module can be tested
with recorded outputs (:mod:`hpc.scheduler.replay`) instead of a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hpc.errors import SchedulerCommandFailed, SchedulerUnavailable

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int | None  # None: killed when the timeout expired
    stdout: str = ""
    stderr: str = ""


class Runner(Protocol):
    """Runs one command. Must not raise for a non-zero exit: that is the caller's to judge."""

    def __call__(self, argv: Sequence[str], timeout: float) -> CommandResult: ...


def subprocess_runner(argv: Sequence[str], timeout: float) -> CommandResult:
    """The real runner: no shell, stdin closed, output decoded leniently.

    The command gets its own process group, killed as a whole at the timeout (or when we are
    interrupted), so nothing it started can keep its pipes open and hang us.
    """
    args = tuple(argv)
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError:
        return CommandResult(args, 127, "", f"{args[0]}: command not found")
    with proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = proc.communicate()
            return CommandResult(args, None, stdout, stderr)
        except BaseException:
            _kill_group(proc)
            raise
    return CommandResult(args, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Failure:
    """What a failed call means. ``transient``: it may work later; ``retry_now``: asking again at
    once can help; ``request_sent``: the daemon may have acted on it."""

    unavailable: bool
    transient: bool
    request_sent: bool
    summary: str
    retry_now: bool = True


# Texts Slurm 22.05's tools print, by what they mean. The first group that matches decides.
# A daemon is down: the connection was refused, after the tool itself kept trying for about
# MessageTimeout (squeue ~18 s, scancel ~9 s). The request never left this machine.
_DOWN = {
    "Unable to contact slurm controller": "the Slurm controller (slurmctld) is not answering",
    # sacct and sacctmgr open a persistent connection to slurmdbd before anything else
    "failed to open persistent connection": "Slurm's accounting daemon (slurmdbd) is not answering",
    "Sending PersistInit msg": "Slurm's accounting daemon (slurmdbd) is not answering",
    "Problem talking to the database": "Slurm's accounting daemon (slurmdbd) cannot reach its database",
}
# Unreachable for a moment: the request never left this machine, and asking again soon can work.
_SWITCHING = {
    "backup controller in standby mode": "the Slurm controller is switching over to its backup",
}
# The request was sent and the answer lost or late: the daemon may have acted on it.
_NO_ANSWER = {
    "Socket timed out on send/recv operation": "the Slurm controller did not answer in time (overloaded?)",
    "Zero Bytes were transmitted or received": "the connection to the Slurm controller broke",
    "Communication connection failure": "the connection to the Slurm controller broke",
}
# The controller answered "not now".
_BUSY = {
    "Resource temporarily unavailable": "the Slurm controller is busy",
    "temporarily unable to accept job": "the Slurm controller is busy and not accepting jobs right now",
}
# Authentication (munge) is broken on this machine: retrying does not help.
_AUTH = {
    "Munge encode failed": "Slurm could not authenticate this request: is munged running on this machine?",
    "Protocol authentication error": "Slurm could not authenticate this request (munge)",
}
# (texts, unavailable, transient, request_sent, retry_now)
_GROUPS = (
    (_DOWN, True, True, False, False),
    (_SWITCHING, True, True, False, True),
    (_NO_ANSWER, True, True, True, True),
    (_BUSY, False, True, False, True),
    (_AUTH, False, False, False, False),
)


def classify(result: CommandResult, timeout: float | None = None) -> Failure | None:
    """None for success; otherwise what kind of failure the recorded output shows."""
    if result.returncode == 0:
        return None
    tool = result.argv[0] if result.argv else "?"
    if result.returncode is None:
        limit = f" within {timeout:.3g} s" if timeout is not None else ""
        return Failure(True, True, True, f"{tool} did not answer{limit}")
    text = f"{result.stderr}\n{result.stdout}"
    for texts, unavailable, transient, request_sent, retry_now in _GROUPS:
        for needle, summary in texts.items():
            if needle in text:
                return Failure(unavailable, transient, request_sent, summary, retry_now)
    if result.returncode == 127:
        return Failure(False, False, False, f"{tool} was not found: is Slurm installed and on PATH?", False)
    return Failure(False, False, True, f"{tool} failed: {last_error_line(result)}", False)


def last_error_line(result: CommandResult) -> str:
    """The tool's last complaint without its prefixes: ``sbatch: error: Batch job submission failed:
    Invalid partition name specified`` → ``Invalid partition name specified``."""
    lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    if not lines:
        return f"exit code {result.returncode}, no output"
    line = lines[-1]
    for prefix in (f"{result.argv[0]}: error:", "error:", f"{result.argv[0]}:"):
        if line.startswith(prefix):
            line = line[len(prefix) :].strip()
            break
    return line.removeprefix("Batch job submission failed:").strip()


def failure_error(result: CommandResult, failure: Failure) -> SchedulerCommandFailed:
    kind = SchedulerUnavailable if failure.unavailable else SchedulerCommandFailed
    return kind(
        argv=result.argv,
        returncode=result.returncode,
        stdout=result.stdout,
        stderr=result.stderr,
        transient=failure.transient,
        summary=failure.summary,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for transient failures: ``attempts`` calls in all, delays growing by ``factor``,
    and no new attempt once ``give_up_after_s`` have passed (with the controller down, one squeue
    already spends ~18 s in Slurm's own retries before it gives up)."""

    attempts: int = 3
    first_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 10.0
    give_up_after_s: float = 45.0

    def delay_s(self, retry: int) -> float:
        return min(self.first_delay_s * self.factor**retry, self.max_delay_s)


class SlurmCli:
    """Runs Slurm commands with one timeout and retry policy; raises the project's errors."""

    def __init__(
        self,
        runner: Runner = subprocess_runner,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.clock = clock

    def run(
        self,
        argv: Sequence[str],
        *,
        repeatable: bool = True,
        tolerate: Sequence[str] = (),
        deadline: float | None = None,
    ) -> CommandResult:
        """Run ``argv``; return its result or raise SchedulerCommandFailed / SchedulerUnavailable.

        ``repeatable=False`` (sbatch) retries only failures where the request never reached the
        controller. ``tolerate``: output texts that make a non-zero exit an answer, not an error
        (``squeue`` says ``Invalid job id specified`` when none of the ids is still known).
        ``deadline`` (on ``clock``): every attempt, retries included, ends by then; the call is
        killed at it and counts as not answered.
        """
        started = self.clock()
        for attempt in range(self.retry.attempts):
            timeout = self.timeout_s if deadline is None else max(0.1, min(self.timeout_s, deadline - self.clock()))
            result = self.runner(argv, timeout)
            if result.returncode is not None and any(t in result.stderr + result.stdout for t in tolerate):
                return result
            failure = classify(result, timeout)
            if failure is None:
                return result
            delay = self.retry.delay_s(attempt)
            retry_helps = failure.retry_now and (repeatable or not failure.request_sent)
            out_of_time = self.clock() - started + delay > self.retry.give_up_after_s or (
                deadline is not None and self.clock() + delay >= deadline
            )
            if not retry_helps or out_of_time or attempt + 1 == self.retry.attempts:
                raise failure_error(result, failure)
            log.warning("%s: %s; retrying in %.1f s", argv[0], failure.summary, delay)
            self.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
