"""Job arrays and dependencies on the local launcher, as sbatch gives them: what campaigns need with no Slurm.

Each test submits small bash batch scripts to a real :class:`LocalScheduler` (its supervisors are real
processes) and reads back what the tasks saw (their ``SLURM_ARRAY_*`` variables and GPU ids, their log
names), when they ran (the throttle, this machine's GPUs), and what query and cancel say of ``12`` and
``12_3``. No TensorFlow, a few seconds each.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import pytest

from hpc.local.scheduler import LocalScheduler
from hpc.scheduler import ArrayRequest, JobState, SubmitOptions
from tests.integration._waiting import wait_until

TASK = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --output={logs}/{name}-%A_%a-%j.out
{gres}
start=$(date +%s.%N)
sleep {sleep}
echo "$SLURM_ARRAY_JOB_ID $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT $SLURM_ARRAY_TASK_MIN $SLURM_ARRAY_TASK_MAX \
$SLURM_JOB_ID ${{CUDA_VISIBLE_DEVICES:--}} $start $(date +%s.%N)"
exit {exit}
"""


def script(tmp_path: Path, name: str, *, gpus: int = 0, sleep: float = 0.0, exit_status: str = "0") -> Path:
    path = tmp_path / f"{name}.sbatch"
    path.write_text(TASK.format(name=name, logs=tmp_path / "logs", sleep=sleep, exit=exit_status,
                                gres=f"#SBATCH --gres=gpu:{gpus}" if gpus else ""))
    return path


def scheduler(tmp_path: Path, **environ: str) -> LocalScheduler:
    return LocalScheduler(tmp_path / "runs" / ".local-jobs", environ={"PATH": "/usr/bin:/bin", **environ})


def ended(local: LocalScheduler, job_id: str, timeout: float = 60) -> Mapping[str, JobState]:
    def states() -> dict[str, JobState]:
        return {key: status.state for key, status in local.query([job_id]).items()}
    wait_until(lambda: all(s.is_terminal for s in states().values()), f"job {job_id} to end", timeout=timeout)
    return states()


def reason(local: LocalScheduler, job_id: str) -> str | None:
    found = local.query([job_id])[job_id].reason
    return None if found is None else found.code


def runs(tmp_path: Path, name: str) -> dict[str, list[str]]:
    """Each task's log, by its name's ``%A_%a-%j``: the words the task printed."""
    return {p.name.removeprefix(f"{name}-").removesuffix(".out"): p.read_text().split()
            for p in (tmp_path / "logs").glob(f"{name}-*.out")}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_an_array_gives_each_task_slurms_variables_its_log_name_and_its_own_gpus_throttled(tmp_path: Path) -> None:
    local = scheduler(tmp_path, CUDA_VISIBLE_DEVICES="4,5,6")
    array = local.submit(script(tmp_path, "grid", gpus=1, sleep=1.5),
                         SubmitOptions(array=ArrayRequest((2, 3, 5, 7), throttle=2)))
    assert ended(local, array) == {f"{array}_{i}": JobState.COMPLETED for i in (2, 3, 5, 7)}
    seen = runs(tmp_path, "grid")
    job_ids = {words[1]: words[5] for words in seen.values()}
    assert sorted(seen) == sorted(f"{array}_{i}-{job_ids[str(i)]}" for i in (2, 3, 5, 7))
    assert job_ids["2"] == array and len(set(job_ids.values())) == 4  # a job id per task; the first is the array's
    assert {tuple(w[0:1] + w[2:5]) for w in seen.values()} == {(array, "4", "2", "7")}
    spans = [(float(w[7]), float(w[8])) for w in seen.values()]
    assert most_at_once(spans) == 2  # %2, though three GPUs were free
    for words in seen.values():  # tasks running together never share a GPU
        together = [w for w in seen.values() if w is not words and float(w[7]) < float(words[8])
                    and float(words[7]) < float(w[8])]
        assert words[6] in {"4", "5", "6"} and all(w[6] != words[6] for w in together)
    raw = local.query([f"{array}_5"])[f"{array}_5"]
    assert (raw.raw_id, raw.state) == (job_ids["5"], JobState.COMPLETED)


def test_without_gpus_a_gpu_array_runs_one_task_at_a_time_and_pending_tasks_say_why(tmp_path: Path) -> None:
    local = scheduler(tmp_path)  # no CUDA_VISIBLE_DEVICES, and this machine's driver lists no GPU
    array = local.submit(script(tmp_path, "nogpu", gpus=1, sleep=1.0), SubmitOptions(array=ArrayRequest((0, 1, 2))))
    wait_until(lambda: any(s.state is JobState.RUNNING for s in local.query([array]).values()), "a task to start")
    def pending_reasons() -> set[str | None]:
        return {s.reason and s.reason.code for s in local.query([array]).values() if s.state is JobState.PENDING}
    wait_until(lambda: pending_reasons() == {"Resources"}, "the waiting tasks to say Resources")
    assert set(ended(local, array).values()) == {JobState.COMPLETED}
    seen = runs(tmp_path, "nogpu")
    assert most_at_once([(float(w[7]), float(w[8])) for w in seen.values()]) == 1
    assert {w[6] for w in seen.values()} == {"0"}


def test_cancelling_one_task_or_the_whole_array_ends_what_it_names(tmp_path: Path) -> None:
    local = scheduler(tmp_path)
    array = local.submit(script(tmp_path, "long", sleep=60), SubmitOptions(array=ArrayRequest((0, 1, 2), throttle=2)))
    wait_until(lambda: sum(s.state is JobState.RUNNING for s in local.query([array]).values()) == 2, "two tasks")
    # its supervisor sets the reason on its next look, as Slurm's does on its next scheduling pass
    wait_until(lambda: reason(local, f"{array}_2") == "JobArrayTaskLimit", "task 2 held by the %2 throttle")
    local.cancel([f"{array}_1"])
    wait_until(lambda: local.query([f"{array}_1"])[f"{array}_1"].state is JobState.CANCELLED, "task 1 cancelled")
    wait_until(lambda: local.query([f"{array}_2"])[f"{array}_2"].state is JobState.RUNNING, "task 2 to take its place")
    assert local.query([f"{array}_0"])[f"{array}_0"].state is JobState.RUNNING
    local.cancel([array])
    assert ended(local, array, timeout=30) == {f"{array}_{i}": JobState.CANCELLED for i in (0, 1, 2)}


def test_a_failed_stage_blocks_its_dependents_as_slurm_does_and_the_other_kinds_run(tmp_path: Path) -> None:
    local = scheduler(tmp_path)
    # task 0 fails, task 1 succeeds
    up = local.submit(script(tmp_path, "up", exit_status='$((1 - SLURM_ARRAY_TASK_ID))'),
                      SubmitOptions(array=ArrayRequest((0, 1))))
    after = {"afterok": local.submit(script(tmp_path, "afterok"), SubmitOptions(after=(("afterok", (up,)),))),
             "afterany": local.submit(script(tmp_path, "afterany"), SubmitOptions(after=(("afterany", (up,)),))),
             "afternotok": local.submit(script(tmp_path, "afternotok"),
                                        SubmitOptions(after=(("afternotok", (f"{up}_0",)),)))}
    corr = local.submit(script(tmp_path, "corr"), SubmitOptions(array=ArrayRequest((0, 1)),
                                                                 after=(("aftercorr", (up,)),)))
    on_task = local.submit(script(tmp_path, "ontask"), SubmitOptions(after=(("afterok", (f"{up}_1",)),)))
    killed = local.submit(script(tmp_path, "killed"), SubmitOptions.after_success([up]))
    assert ended(local, up) == {f"{up}_0": JobState.FAILED, f"{up}_1": JobState.COMPLETED}
    for job in (after["afterany"], after["afternotok"], on_task, f"{corr}_1"):
        assert ended(local, job) == {job: JobState.COMPLETED}
    assert ended(local, killed) == {killed: JobState.CANCELLED}  # --kill-on-invalid-dep: cancelled at once
    # the others wait forever, as Slurm leaves them: pending, DependencyNeverSatisfied, until cancelled
    for job in (after["afterok"], f"{corr}_0"):
        wait_until(partial(lambda job: reason(local, job) == "DependencyNeverSatisfied", job), f"{job} blocked")
        assert local.query([job])[job].state is JobState.PENDING
    local.cancel([after["afterok"], corr])
    assert ended(local, after["afterok"]) == {after["afterok"]: JobState.CANCELLED}
    assert ended(local, corr) == {f"{corr}_0": JobState.CANCELLED, f"{corr}_1": JobState.COMPLETED}


def test_waiting_for_an_unknown_job_or_holding_is_refused_in_one_line(tmp_path: Path) -> None:
    from hpc.errors import HpcTfError

    local = scheduler(tmp_path)
    with pytest.raises(HpcTfError, match="cannot wait for local job '99_1': there is no such job"):
        local.submit(script(tmp_path, "x"), SubmitOptions(after=(("aftercorr", ("99_1",)),)))
    with pytest.raises(HpcTfError, match="takes no held jobs"):
        local.submit(script(tmp_path, "x"), SubmitOptions(hold=True))
