"""The handle ``submit_function`` returns: results read from the files submitit's task code writes, the
job's state from the local launcher's records (the real LocalScheduler on records as its supervisor
leaves them), and a failed task reported in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from submitit.core.utils import cloudpickle_dump

from hpc.errors import TaskFailed
from hpc.functions import FunctionJob
from hpc.local.jobs import LocalJob, LocalJobStore
from hpc.local.scheduler import LocalScheduler
from hpc.paths import RunPaths

TRACEBACK = ('Traceback (most recent call last):\n  File "train.py", line 3, in train\n'
             "    raise ValueError('no data')\nValueError: no data\n")


def job_in(tmp_path: Path, state: str, exit_status: int = 0, exit_signal: int = 0) -> FunctionJob[object]:
    store = LocalJobStore(tmp_path / ".local-jobs")
    store.write(LocalJob(job_id="7", name="fn", script="job.sbatch", output="batch-%j.out", submit_dir=str(tmp_path),
                         nodes=2, tasks_per_node=1, gpus_per_node=0, gpu_ids=[], time_limit_s=60, warning_s=None,
                         state=state, started_at=1.0, ended_at=2.0, exit_status=exit_status, exit_signal=exit_signal))
    paths = RunPaths.at(tmp_path / "run")
    paths.submitit_dir.mkdir(parents=True)
    paths.logs_dir.mkdir()
    return FunctionJob("7", paths, 2, LocalScheduler(store.directory))


def returned(job: FunctionJob[object], rank: int, outcome: tuple[str, object]) -> None:
    cloudpickle_dump(outcome, job.result_path(rank))


def test_result_is_rank_0s_value_and_results_every_tasks(tmp_path: Path) -> None:
    job = job_in(tmp_path, "COMPLETED")
    returned(job, 0, ("success", {"rank": 0}))
    returned(job, 1, ("success", {"rank": 1}))
    assert job.result() == {"rank": 0}
    assert job.results() == [{"rank": 0}, {"rank": 1}]
    assert (job.state, job.done(), job.exception()) == ("COMPLETED", True, None)


def test_a_task_that_raised_is_named_with_its_log_and_the_exception(tmp_path: Path) -> None:
    job = job_in(tmp_path, "FAILED", exit_status=1)
    returned(job, 1, ("error", TRACEBACK))  # rank 0 was stopped with it and left nothing
    log = tmp_path / "run" / "logs" / "task-7-1.out"
    with pytest.raises(TaskFailed) as caught:
        job.result()
    assert str(caught.value) == f"task 1 of job 7 failed: ValueError: no data (log: {log})"
    assert (caught.value.rank, caught.value.log, caught.value.cause) == (1, str(log), "ValueError: no data")


def test_a_task_that_left_no_result_is_explained_by_the_jobs_end_and_its_log(tmp_path: Path) -> None:
    job = job_in(tmp_path, "FAILED", exit_signal=9)
    job.log_path(0).write_text("hpc-tf bootstrap: {...}\nloading data\n\n")
    # the job's end in the words hpc-tf status uses (a task killed by signal 9 is the shell's 137)
    with pytest.raises(TaskFailed, match=r"^task 0 of job 7 failed: no return value: the job ended: exit code "
                                          r"137; the log ends: loading data \(log: .*/logs/task-7-0.out\)$"):
        job.results()
    cancelled = job_in(tmp_path / "c", "CANCELLED")
    message = str(cancelled.exception())
    assert message.startswith("task 0 of job 7 failed: no return value: the job ended: cancelled at ")
    assert "\n" not in message
