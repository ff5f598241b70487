"""What :func:`~hpc.functions.submit_function` returns: hpc-tf's handle on one function job.

The handle asks the job's scheduler (Slurm's tools or the local launcher) about its state and
cancels it, as ``hpc-tf status`` and ``hpc-tf cancel`` do, and reads each task's return value from
the file submitit's task code writes when the function returns or raises
(``<run_dir>/submitit/<jobid>_<rank>_result.pkl``). A task that ends without one (killed, its
setup failed, the job was cancelled) is reported from the job's final state and its log.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Generic, TypeVar

from hpc.errors import TaskFailed
from hpc.paths import RunPaths
from hpc.runs import Run, with_run_account
from hpc.scheduler import JobState, JobStatus, PollBackoff, Scheduler

R = TypeVar("R")

RESULT_WAIT_S = 15.0  # after the job ended: a result file written on another node may show up late
CHECK_EVERY_S = 1.0  # result files are looked for this often; the scheduler is asked by its backoff


class FunctionJob(Generic[R]):
    """One submitted function job: ``result()`` is rank 0's (the chief's) return value, ``results()``
    every task's, in rank order.

    Both wait for the job. A task that raised, or ended without a return value, raises
    :class:`~hpc.errors.TaskFailed`, one line naming the task, its log and the cause; the first such
    task in rank order fails the whole job, so ``result()`` raises too when another task failed.
    Each task's stdout and stderr go to one log, ``log_path(rank)`` (what ``hpc-tf logs RUN_DIR
    --task RANK`` prints). A requeued job (preemption) is waited for until its last run ends.
    """

    def __init__(self, job_id: str, paths: RunPaths, num_tasks: int, scheduler: Scheduler,
                 backoff: PollBackoff | None = None) -> None:
        self.job_id = job_id
        self.paths = paths  # the run directory: hpc-tf status / logs / cancel take paths.root
        self.num_tasks = num_tasks
        self._scheduler = scheduler
        self._backoff = backoff or PollBackoff()
        self._final: JobStatus | None = None

    @property
    def run_dir(self) -> Path:
        return self.paths.root

    def status(self) -> JobStatus:
        """The scheduler's answer for this job, as ``hpc-tf status`` shows it (asked once it has ended)."""
        if self._final is not None:
            return self._final
        status = with_run_account(Run(self.job_id, self.paths), self._scheduler.query([self.job_id])[self.job_id])
        if status.state.is_terminal:
            self._final = status
        return status

    @property
    def state(self) -> str:
        """``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED``, ``CANCELLED``, ... (hpc-tf's states)."""
        return self.status().state.value

    def done(self) -> bool:
        """Every task returned (or raised), or the job ended."""
        return self._all_returned() or self.status().state.is_terminal

    def _all_returned(self) -> bool:
        return all(self.result_path(rank).exists() for rank in range(self.num_tasks))

    def wait(self, timeout_s: float | None = None) -> None:
        """Until :meth:`done`; TimeoutError after ``timeout_s``. The scheduler is asked with backoff."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        interval = self._backoff.first_s
        asked_at: float | None = None
        state: JobState | None = None
        while not self._all_returned():
            now = time.monotonic()
            if asked_at is None or now >= asked_at + interval:  # at once, then with backoff
                previous, state = state, self.status().state
                if state.is_terminal:
                    return
                interval, asked_at = self._backoff.next_s(interval, changed=state is not previous), now
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"job {self.job_id} has not ended after {timeout_s:g} s")
            time.sleep(CHECK_EVERY_S)

    def result(self) -> R:
        """Rank 0's return value (waits for the job; raises TaskFailed if any task failed)."""
        return self.results()[0]

    def results(self) -> list[R]:
        """Every task's return value, in rank order (waits; raises TaskFailed if any task failed)."""
        self.wait()
        failure = self.exception()
        if failure is not None:
            raise failure
        return [self._outcome(rank)[1] for rank in range(self.num_tasks)]

    def exception(self) -> TaskFailed | None:
        """The first failed task's error, or None when every task returned (waits for the job)."""
        self.wait()
        if not self._all_returned() and self.status().state is JobState.COMPLETED:
            self._wait_for_results()  # written on another node: the shared file system may lag
        outcomes = [self._outcome(rank) for rank in range(self.num_tasks)]
        # a task that raised is the cause; the others were stopped with it and left no result
        for wanted in ("error", "missing"):
            for rank, (kind, detail) in enumerate(outcomes):
                if kind == wanted:
                    cause = detail if kind == "error" else self._missing_cause(rank)
                    return TaskFailed(self.job_id, rank, str(self.log_path(rank)), cause)
        return None

    def _wait_for_results(self) -> None:
        deadline = time.monotonic() + RESULT_WAIT_S
        while not self._all_returned() and time.monotonic() < deadline:
            time.sleep(CHECK_EVERY_S)

    def cancel(self) -> None:
        """Cancel the job (one that already ended is fine), as ``hpc-tf cancel`` does."""
        self._scheduler.cancel([self.job_id])

    def log_path(self, rank: int = 0) -> Path:
        """Task ``rank``'s log (its stdout and stderr); it exists once the task started."""
        return self.paths.task_log(self.job_id, rank)

    def batch_log_path(self) -> Path:
        return self.paths.batch_log(self.job_id)

    def stdout(self, rank: int = 0) -> str | None:
        """Task ``rank``'s log so far (stdout and stderr together), or None before it started."""
        try:
            return self.log_path(rank).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None

    stderr = stdout  # one log per task: submitit's stderr_to_stdout, srun --output

    def result_path(self, rank: int) -> Path:
        return self.paths.submitit_dir / f"{self.job_id}_{rank}_result.pkl"

    def _outcome(self, rank: int) -> tuple[str, Any]:
        """("success", value), ("error", the exception's last line) or ("missing", None)."""
        path = self.result_path(rank)
        if not path.exists():
            return "missing", None
        from submitit.core.utils import pickle_load  # the format submitit's task code writes

        kind, value = pickle_load(path)
        if kind == "error":
            lines = [line for line in str(value).splitlines() if line.strip()]
            return "error", lines[-1].strip() if lines else "an exception"
        return "success", value

    def _missing_cause(self, rank: int) -> str:
        status = self.status()
        if status.state.is_terminal:
            said = f"the job ended: {status.ending}" if status.ending else f"the job ended {status.state.value}"
        else:
            said = f"the job is {status.state.value}"
        last = _last_line(self.log_path(rank))
        return f"no return value: {said}" + (f"; the log ends: {last}" if last else "")

    def __repr__(self) -> str:
        return f"FunctionJob(job_id={self.job_id!r}, run_dir={str(self.run_dir)!r}, tasks={self.num_tasks})"


def _last_line(path: Path, limit: int = 200) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""
