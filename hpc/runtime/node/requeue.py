"""The requeue policy, once: which ends of a job step ask for another run, and how many runs a job gets.

Every way a job ends on the node goes through :func:`decide`: the batch driver of a launched job
(``batch.py``, for Slurm and for the local launcher's emulation alike) and the teardown of a
``submit_function`` job. The policy:

* requeue when the workers checkpointed and asked for it (:data:`REQUEUE_EXIT_CODE`), or when a
  task was killed by a signal (a lost worker or node: srun reports 128 + the signal);
* never for success, for errors, nor for out of memory (srun's 253);
* at most ``preemption.max_restarts`` times; Slurm counts the earlier runs (SLURM_RESTART_COUNT).

Pure: the caller prints the message and runs the commands (``slurm_node.py``).
"""

from __future__ import annotations

from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Final

# EX_TEMPFAIL (sysexits.h): "temporary failure, the user is invited to retry". Apart from signals
# (128 + N) and srun's out-of-memory code (253).
REQUEUE_EXIT_CODE = 75
_SIGNALLED = range(128 + 1, 128 + 64 + 1)  # 128 + a signal number, as srun and bash report a killed task


class Decision(Record):
    """What to do when the step ended: requeue or not, and the line that says why (None: nothing to say)."""

    __slots__ = ("message", "requeue")

    def __init__(self, requeue: bool, message: str | None) -> None:
        self.requeue: Final = requeue
        self.message: Final = message


def requeue_reason(status: int) -> str | None:
    """Why a step that ended with ``status`` asks for another run; None when it does not."""
    if status == REQUEUE_EXIT_CODE:
        return "the workers saved a checkpoint and asked to be requeued"
    if status in _SIGNALLED:
        return f"a task was killed by signal {status - 128} (a lost worker or node)"
    return None


def decide(status: int, restarts: int, max_restarts: int, checkpoint_dir: str) -> Decision:
    """Requeue or not after a step ended with ``status`` in run ``restarts`` (0: the first run)."""
    why = requeue_reason(status)
    if why is None:
        return Decision(False, None)
    if restarts >= max_restarts:
        return Decision(False, (
            f"{why}, but the job has been restarted {restarts} time(s), the most preemption.max_restarts "
            f"({max_restarts}) allows: not requeueing; the newest checkpoint is in {checkpoint_dir}"))
    return Decision(True, f"{why}: requeueing the job (restart {restarts + 1} of at most {max_restarts})")


def gave_up(status: int, restarts: int, max_restarts: int) -> str | None:
    """For ``hpc-tf status``: why a job that ended with ``status`` in run ``restarts`` was not requeued although
    it asked to be (``gave up after 3 restart(s) …``), as :func:`decide` and :func:`may_start` decided it; None
    when this end was not one of those."""
    if restarts > max_restarts:  # may_start refused the run: Slurm requeued the job once more by itself
        return (f"gave up after {max_restarts} restart(s) (preemption.max_restarts): run {restarts + 1} was "
                "refused before training")
    why = requeue_reason(status)
    if why is None or restarts < max_restarts:
        return None
    return f"gave up after {restarts} restart(s) (preemption.max_restarts): {why}"


def may_start(restarts: int, max_restarts: int, checkpoint_dir: str) -> tuple[bool, str | None]:
    """Before training: whether run ``restarts`` may train, and the line that says so. A run beyond the
    cap (Slurm requeued the job itself, e.g. after a node failure) does not start."""
    if restarts > max_restarts:
        return False, (f"this is restart {restarts} of the job, more than preemption.max_restarts ({max_restarts}) "
                       f"allows: not training again; the newest checkpoint is in {checkpoint_dir}")
    if restarts > 0:
        return True, (f"restart {restarts} of at most {max_restarts}: training resumes from the newest checkpoint "
                      f"in {checkpoint_dir}")
    return True, None


def restart_count(environ: Mapping[str, str]) -> int:
    """This run's restart count, from SLURM_RESTART_COUNT (unset: the first run)."""
    text = environ.get("SLURM_RESTART_COUNT", "")
    return int(text) if text.isdigit() else 0


def slurm_requeued(controller_restarts: int | None, restarts: int) -> bool:
    """On TERM: Slurm is requeueing the job (``scontrol requeue``, preemption) when the controller's
    restart count is ahead of this run's; a cancel leaves it as it is."""
    return controller_restarts is not None and controller_restarts > restarts
