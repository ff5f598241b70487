"""Every Slurm job state, as one enum with the questions callers ask of it.

The names are the strings ``sacct``/``squeue``/``scontrol`` print (Slurm's ``job_state_string``
in ``src/common/slurm_protocol_defs.c``, and https://slurm.schedmd.com/job_state_codes.html for the
flags added after 22.05). A job has one base state (PENDING … OUT_OF_MEMORY); the tools print a
flag instead of the base state while one is set (COMPLETING, REQUEUED, STAGE_OUT …).

Anything else maps to UNKNOWN with a logged warning, never an exception: a newer Slurm, or a
site patch, must not crash ``hpc-tf status``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import Enum

log = logging.getLogger(__name__)


class JobState(str, Enum):
    # base states
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    # flags shown in place of the base state
    COMPLETING = "COMPLETING"
    CONFIGURING = "CONFIGURING"
    REQUEUED = "REQUEUED"
    REQUEUE_FED = "REQUEUE_FED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    RESIZING = "RESIZING"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    REVOKED = "REVOKED"
    SIGNALING = "SIGNALING"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    STAGE_OUT = "STAGE_OUT"
    STOPPED = "STOPPED"
    # flags of Slurm releases after 22.05
    EXPEDITING = "EXPEDITING"
    LAUNCH_FAILED = "LAUNCH_FAILED"
    POWER_UP_NODE = "POWER_UP_NODE"
    RECONFIG_FAIL = "RECONFIG_FAIL"
    UPDATE_DB = "UPDATE_DB"
    # not a Slurm state: the tools printed something else, or no tool knows the job
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str) -> JobState:
        """``RUNNING``, ``CANCELLED by 1000``, compact ``PD``/``CA`` → JobState; else UNKNOWN (warned)."""
        word = text.strip().split(" ", 1)[0].rstrip("+").upper()
        state = _BY_NAME.get(word) or _COMPACT.get(word)
        if state is None:
            log.warning("unknown Slurm job state %r; treating it as UNKNOWN", text)
            return cls.UNKNOWN
        return state

    @property
    def is_terminal(self) -> bool:
        """The job will not run again by itself (it may still be requeued by an admin)."""
        return self in _TERMINAL

    @property
    def is_success(self) -> bool:
        return self is JobState.COMPLETED

    @property
    def is_active(self) -> bool:
        """Still in the controller's hands: waiting, held, starting, running or finishing."""
        return not self.is_terminal and self is not JobState.UNKNOWN

    @property
    def is_waiting(self) -> bool:
        """Has no resources now (pending, held, requeued): squeue's reason says why."""
        return self in _WAITING

    @property
    def exit_is_its_own(self) -> bool:
        """The job's own exit decided this state (COMPLETED, FAILED): its exit code means something. Slurm's
        exit code of the other final states is not the job's: a cancelled or timed-out job reads ``0:15``
        (the TERM Slurm sent it), one cancelled while pending ``0:0``."""
        return self in (JobState.COMPLETED, JobState.FAILED)

    @property
    def ending(self) -> str:
        """How a job that ended in this state ended, in words ("" for COMPLETED and FAILED, whose exit code
        says it, and for states that are not final)."""
        return _ENDINGS.get(self, "")

    @property
    def compact(self) -> str:
        """squeue's two-letter code (``PD``, ``R`` …); ``?`` for UNKNOWN."""
        return _COMPACT_OF.get(self, "?")


# Finished for good. REVOKED: a federation sibling ran instead, so this copy never will.
_TERMINAL = frozenset(
    {
        JobState.COMPLETED,
        JobState.CANCELLED,
        JobState.FAILED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.PREEMPTED,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
        JobState.OUT_OF_MEMORY,
        JobState.REVOKED,
    }
)
# No resources held; these wait for the scheduler, a release, or a requeue to finish.
_WAITING = frozenset(
    {
        JobState.PENDING,
        JobState.REQUEUED,
        JobState.REQUEUE_FED,
        JobState.REQUEUE_HOLD,
        JobState.SPECIAL_EXIT,
        JobState.RESV_DEL_HOLD,
        JobState.EXPEDITING,
        JobState.LAUNCH_FAILED,
    }
)
_ENDINGS = {
    JobState.CANCELLED: "cancelled",
    JobState.TIMEOUT: "reached its time limit",
    JobState.NODE_FAIL: "a node it ran on failed",
    JobState.BOOT_FAIL: "its node failed to boot",
    JobState.PREEMPTED: "preempted by another job",
    JobState.DEADLINE: "not run by its deadline (--deadline)",
    JobState.OUT_OF_MEMORY: "out of memory: a task used more than the job's memory",
    JobState.REVOKED: "revoked: another cluster of the federation ran it",
}
# squeue's %t codes (squeue(1), "JOB STATE CODES").
_COMPACT_OF = {
    JobState.BOOT_FAIL: "BF",
    JobState.CANCELLED: "CA",
    JobState.COMPLETED: "CD",
    JobState.CONFIGURING: "CF",
    JobState.COMPLETING: "CG",
    JobState.DEADLINE: "DL",
    JobState.FAILED: "F",
    JobState.NODE_FAIL: "NF",
    JobState.OUT_OF_MEMORY: "OOM",
    JobState.PENDING: "PD",
    JobState.PREEMPTED: "PR",
    JobState.RUNNING: "R",
    JobState.RESV_DEL_HOLD: "RD",
    JobState.REQUEUE_FED: "RF",
    JobState.REQUEUE_HOLD: "RH",
    JobState.REQUEUED: "RQ",
    JobState.RESIZING: "RS",
    JobState.REVOKED: "RV",
    JobState.SIGNALING: "SI",
    JobState.SPECIAL_EXIT: "SE",
    JobState.STAGE_OUT: "SO",
    JobState.STOPPED: "ST",
    JobState.SUSPENDED: "S",
    JobState.TIMEOUT: "TO",
}
_BY_NAME = {state.value: state for state in JobState if state is not JobState.UNKNOWN}
_COMPACT = {code: state for state, code in _COMPACT_OF.items()}

# Which finished state describes a group (array tasks) best: the first one present wins.
_SEVERITY = (
    JobState.FAILED,
    JobState.OUT_OF_MEMORY,
    JobState.NODE_FAIL,
    JobState.BOOT_FAIL,
    JobState.TIMEOUT,
    JobState.DEADLINE,
    JobState.PREEMPTED,
    JobState.CANCELLED,
    JobState.REVOKED,
    JobState.COMPLETED,
)


def summarize(states: Iterable[JobState]) -> JobState:
    """One state for a group of jobs (the tasks of an array), as a user would put it.

    Some task running → RUNNING; else some task still waiting → PENDING; else every task
    finished: the most serious failure among them, or COMPLETED only if every task is known to
    have completed. An empty group is UNKNOWN.
    """
    present = set(states)
    if any(s.is_active and not s.is_waiting for s in present):
        return JobState.RUNNING
    if any(s.is_waiting for s in present):
        return JobState.PENDING
    worst = next((s for s in _SEVERITY if s in present), JobState.UNKNOWN)
    return JobState.UNKNOWN if worst is JobState.COMPLETED and JobState.UNKNOWN in present else worst
