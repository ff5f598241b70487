"""The Slurm commands a job runs on its own node: requeue itself, ask for a quick restart, read its count.

The only place outside ``hpc/scheduler/`` (the submit side) that knows Slurm command syntax.
argv lists, a timeout on every call; standard library only.
"""

from __future__ import annotations

import os

from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

TIMEOUT_S = 60

# Slurm keeps a requeued job pending for its credential lifetime (~2 min). A small helper job lets it
# start again soon after it is pending, where Slurm allows users that; otherwise it just waits. Not at
# once: nodes refuse a launch credential from the same second as the revoked one, and fail the job.
RESTART_HELPER = (
    "for _ in $(seq 120); do "
    'case $(squeue --noheader --jobs="$HPC_TF_REQUEUED_JOB" --format=%T 2>/dev/null) in '
    'PENDING) sleep 10; exec scontrol update jobid="$HPC_TF_REQUEUED_JOB" starttime=now ;; '
    "RUNNING) exit 0 ;; esac; sleep 1; done"
)


class HelperJob(Record):
    """Where the restart helper runs: the job's own name, partition, account and QOS; its log pattern."""

    __slots__ = ("account", "log", "name", "partition", "qos")

    def __init__(self, name: str, log: str, partition: str | None, account: str | None, qos: str | None) -> None:
        self.name: Final = name
        self.log: Final = log
        self.partition: Final = partition
        self.account: Final = account
        self.qos: Final = qos


def requeue(job_id: str) -> bool:
    """``scontrol requeue``: Slurm ends this run (TERM, then KILL) and queues the job again."""
    return _run(["scontrol", "requeue", job_id]) == 0


def controller_restarts(job_id: str) -> int | None:
    """The controller's restart count of the job (``Restarts=`` of ``scontrol show job``); None if unknown."""
    import subprocess  # here, not at the top: the driver imports this module at every start

    try:
        shown = subprocess.run(["scontrol", "show", "job", job_id], stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for word in shown.stdout.split():
        key, _, value = word.partition("=")
        if key == "Restarts" and value.isdigit():
            return int(value)
    return None


def restart_helper_argv(helper: HelperJob) -> list[str]:
    argv = ["sbatch", "--parsable", f"--job-name={helper.name}-restart", f"--output={helper.log}", "--time=5",
            "--ntasks=1", "--no-requeue"]
    for option, value in (("partition", helper.partition), ("account", helper.account), ("qos", helper.qos)):
        if value:
            argv.append(f"--{option}={value}")
    return [*argv, f"--wrap={RESTART_HELPER}"]


def submit_restart_helper(helper: HelperJob, job_id: str) -> bool:
    """Submit the helper that starts the requeued job ``job_id`` once it is pending."""
    env = {**os.environ, "HPC_TF_REQUEUED_JOB": job_id}
    return _run(restart_helper_argv(helper), env=env, quiet=True) == 0  # quiet: the helper's job id


def _run(argv: list[str], env: dict[str, str] | None = None, quiet: bool = False) -> int:
    import subprocess

    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL if quiet else None,
                              env=env, timeout=TIMEOUT_S, check=False).returncode
    except (OSError, subprocess.TimeoutExpired):
        return -1
