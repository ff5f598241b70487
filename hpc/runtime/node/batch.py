"""The batch script's driver: start the job step, pass the warning on, requeue by the one policy.

The batch script sets up the environment, then execs this (same pid: Slurm's ``--signal=B:USR1``
and TERM reach it)::

    exec python3 -S <run_dir>/runtime/batch.py --resolved <run_dir>/resolved.json \\
        --restart-log <run_dir>/logs/restart-%j.out -- STEP ARGS...

STEP is ``srun … bootstrap.py …`` (or the local launcher's ``local_step.py``). With preemption on,
the driver refuses a run beyond ``preemption.max_restarts``, forwards USR1 to the step, and when
the step has ended asks :func:`requeue.decide` whether to requeue: under Slurm it runs
``scontrol requeue`` and submits the restart helper (``slurm_node.py``), under the local launcher it
leaves the requeue file its supervisor looks for. A job that Slurm ends with TERM (cancelled, or
requeued by Slurm itself) exits 143, after submitting the helper if the controller counted a restart.

``--step-status N`` instead of ``-- STEP``: the step has run already (submitit's teardown, right
after its srun line); only decide and requeue. Standard library only.
"""

from __future__ import annotations

import os
import signal
import sys

from . import slurm_node
from ._errors import HpcTfError
from .record import Record
from .requeue import decide, may_start, restart_count, slurm_requeued
from .settings import checkpoint_dir, read_resolved, settings_from_mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType
    from typing import Final

LOG_PREFIX = "hpc-tf: "
TERM_EXIT = 128 + signal.SIGTERM
USAGE = ("usage: batch.py --resolved FILE --restart-log PATTERN (-- STEP [ARGS...] | --step-status N)")


class BatchJob(Record):
    """What the driver needs of the resolved job."""

    __slots__ = ("checkpoint_dir", "helper", "local", "max_restarts", "preemption")

    def __init__(self, local: bool, preemption: bool, max_restarts: int, checkpoint_dir: str,
                 helper: slurm_node.HelperJob) -> None:
        self.local: Final = local
        self.preemption: Final = preemption
        self.max_restarts: Final = max_restarts
        self.checkpoint_dir: Final = checkpoint_dir
        self.helper: Final = helper


def load_batch_job(resolved: str, restart_log: str) -> BatchJob:
    document, runtime = read_resolved(resolved)
    settings = settings_from_mapping(runtime, source=resolved)

    def text(key: str) -> str | None:
        value = document.get(key)
        return value if isinstance(value, str) and value else None

    helper = slurm_node.HelperJob(name=text("name") or "hpc-tf", log=restart_log, partition=text("partition"),
                                  account=text("account"), qos=text("qos"))
    return BatchJob(local=document.get("launcher") == "local", preemption=settings.preemption,
                    max_restarts=settings.max_restarts,
                    checkpoint_dir=checkpoint_dir(settings, os.environ) or "the run directory",
                    helper=helper)


def say(message: str, *, error: bool = False) -> None:
    print(LOG_PREFIX + message, file=sys.stderr if error else sys.stdout, flush=True)


def run(job: BatchJob, command: Sequence[str], environ: Mapping[str, str]) -> int:
    """Start the step, wait for it, then :func:`finish` with its exit status."""
    restarts = restart_count(environ)
    job_id = environ.get("SLURM_JOB_ID", "")
    step: list[int] = []  # the step's pid, once started
    warned: list[bool] = []

    def forward_warning(_signum: int, _frame: FrameType | None) -> None:
        warned.append(True)
        if step:  # else forwarded right after the step starts
            say("preemption warning, forwarding USR1 to the tasks")
            os.kill(step[0], signal.SIGUSR1)  # not yet reaped, so the pid is still the step's

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        # Slurm ends this run: cancelled, or requeued (then the controller's count is already one up).
        # The tasks get TERM too and checkpoint.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not job.local:
            count = slurm_node.controller_restarts(job_id)
            if slurm_requeued(count, restarts):
                say(f"Slurm is requeueing the job (restart {count} of at most {job.max_restarts})")
                _restart_helper(job, job_id)
        sys.stdout.flush()
        os._exit(TERM_EXIT)

    if job.preemption:
        allowed, note = may_start(restarts, job.max_restarts, job.checkpoint_dir)
        if note:
            say(note, error=not allowed)
        if not allowed:
            return 1
        signal.signal(signal.SIGUSR1, forward_warning)
        signal.signal(signal.SIGTERM, on_term)
    try:
        # posix_spawn, not subprocess: its imports would double the driver's start-up. Python ignores
        # SIGPIPE for itself; the step gets the default back, as from a shell.
        step.append(os.posix_spawnp(command[0], list(command), dict(environ),
                                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ)))
    except OSError as err:
        say(f"cannot start the job step {command[0]!r}: {err.strerror}", error=True)
        return 127
    if warned:
        forward_warning(signal.SIGUSR1, None)
    _, wait_status = os.waitpid(step[0], 0)  # a handled signal does not end the wait (PEP 475)
    returned = os.waitstatus_to_exitcode(wait_status)
    status = returned if returned >= 0 else 128 - returned
    say(f"job step finished with exit code {status}")
    return finish(job, status, restarts, job_id, environ) if job.preemption else status


def finish(job: BatchJob, status: int, restarts: int, job_id: str, environ: Mapping[str, str]) -> int:
    """The step ended with ``status``: requeue the job if the policy says so; the batch script's exit status."""
    decision = decide(status, restarts, job.max_restarts, job.checkpoint_dir)
    if not decision.requeue:
        if decision.message:
            say(decision.message, error=True)
        return status
    say(decision.message or "requeueing the job")
    if job.local:
        flag = environ.get("HPC_TF_LOCAL_REQUEUE_FILE")
        if not flag:
            say("HPC_TF_LOCAL_REQUEUE_FILE is not set: run by hpc-tf's local launcher; not requeueing", error=True)
            return status
        with open(flag, "w", encoding="utf-8"):  # asks the local supervisor to run the batch script again
            pass
        return 0
    # the requeue makes Slurm end this run (TERM, then KILL): finish the requeue and the helper first
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if not slurm_node.requeue(job_id):
        say(f"scontrol requeue {job_id} failed; the job ends here", error=True)
        return status
    _restart_helper(job, job_id)
    return 0


def _restart_helper(job: BatchJob, job_id: str) -> None:
    if not slurm_node.submit_restart_helper(job.helper, job_id):
        say("could not submit the restart helper; the requeued job starts when Slurm lets it", error=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        options, command = _parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        print(f"batch.py: error: {err}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        job = load_batch_job(options["--resolved"], options["--restart-log"])
    except HpcTfError as err:
        say(f"error: {err}", error=True)
        return err.exit_code
    status = options.get("--step-status")
    if status is not None:  # submitit's teardown: its srun step has ended with this status
        environ = os.environ
        return finish(job, int(status), restart_count(environ), environ.get("SLURM_JOB_ID", ""), environ)
    return run(job, command, os.environ)


def _parse_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``--NAME VALUE`` pairs, then ``-- STEP...`` (argparse would cost ~4 ms of imports)."""
    options: dict[str, str] = {}
    words = list(argv)
    while words and words[0] != "--":
        name = words.pop(0)
        if name not in ("--resolved", "--restart-log", "--step-status") or not words:
            raise ValueError(f"unexpected argument {name!r}")
        options[name] = words.pop(0)
    command = words[1:]
    missing = [name for name in ("--resolved", "--restart-log") if name not in options]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    step_status = options.get("--step-status")
    if step_status is not None and not step_status.isdigit():
        raise ValueError(f"--step-status must be an exit status, not {step_status!r}")
    if (step_status is None) == (not command):
        raise ValueError("give either -- STEP [ARGS...] or --step-status N")
    return options, command
