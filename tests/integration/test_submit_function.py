"""hpc-tf's submitit API end to end: a MultiWorkerMirroredStrategy *function* (Keras 3 ``model.fit``)
submitted with ``hpc.functions.submit_function``, on the test cluster (submitit's SlurmExecutor, as the
researcher, from the shared scratch directory) and on this machine (``executor="local"``: hpc-tf's local
launcher). Then what a user does with the returned job: ``job.result()`` (rank 0's value, as the README
prints it), a failed task's error, cancel, and ``hpc-tf status`` / ``logs`` on the run directory.

The function returns each worker's view (rank, TF_CONFIG, GPUs) and a digest of its final weights;
Slurm's accounting, ``hpc-tf status`` and the task logs (the runtime's record line) are the independent
witnesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.conftest import JobStatus, SlurmCluster

Run = Callable[..., subprocess.CompletedProcess[str]]

FUNCTIONS = Path(__file__).resolve().parent.parent / "fixtures" / "functions"
RECORD_PREFIX = "hpc-tf bootstrap: {"


def records(run_dir: Path, job_id: str, ranks: range) -> list[dict[str, Any]]:
    """The runtime's record line of each task, read through the run directory's log links."""
    found = []
    for rank in ranks:
        text = (run_dir / "logs" / f"task-{job_id}-{rank}.out").read_text(encoding="utf-8", errors="replace")
        (line,) = [ln for ln in text.splitlines() if ln.startswith(RECORD_PREFIX)]
        found.append(json.loads(line.partition(": ")[2]))
    return found


def logs(run_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                     for p in sorted((run_dir / "submitit").glob("*.out")))


def submit(run: Run, cwd: Path, spec: dict[str, Any], site: str, *options: str, timeout: float,
           script: tuple[str, ...] = ("submit_function.py",)) -> dict[str, Any]:
    """Run a submitting script (its name and arguments before the spec: ``script``); its JSON report."""
    argv = [sys.executable, str(cwd / script[0]), *script[1:], json.dumps(spec), site, *options]
    result = run(argv, cwd=cwd, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def hpc_tf(*args: str, site: str, runs: Path) -> subprocess.CompletedProcess[str]:
    """The CLI on a function's run directory, as a user runs it after ``submit_function``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_"))}
    return subprocess.run([sys.executable, "-m", "hpc.cli", *args, "--site", site, "--set", f"runs_dir={runs}"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def status_of(run_dir: Path, site: str) -> dict[str, Any]:
    result = hpc_tf("status", str(run_dir), "--json", site=site, runs=run_dir.parent)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    return dict(row)


def assert_one_cluster(results: list[dict[str, Any]]) -> list[str]:
    """Every worker trained in the same cluster, in rank order, to bitwise-identical weights."""
    assert [r["rank"] for r in results] == list(range(len(results)))
    workers = json.loads(results[0]["tf_config"])["cluster"]["worker"]
    for rank, result in enumerate(results):
        tf_config = json.loads(result["tf_config"])
        assert tf_config == {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}
        assert result["task_id"] == rank
        assert result["replicas"] == len(results)
        assert result["cuda_device_order"] == "PCI_BUS_ID"
    assert len(set(workers)) == len(results)
    assert len({r["weights_sha256"] for r in results}) == 1
    assert len(results[0]["loss"]) == 2
    workers_hosts: list[str] = [w.rpartition(":")[0] for w in workers]
    return workers_hosts


@pytest.mark.slurm
@pytest.mark.tf
def test_mwms_function_trains_on_two_nodes_through_the_slurm_executor(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster,
    wait_for_job: Callable[..., JobStatus],
) -> None:
    for name in ("mwms_function.py", "submit_function.py"):
        shutil.copy(FUNCTIONS / name, scratch_dir / name)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True, timeout=30)
    spec = {"name": "fn2x1", "resources": {"nodes": 2, "tasks_per_node": 1, "gpus_per_node": 2, "time": "10:00"},
            "env": {"TF_CPP_MIN_LOG_LEVEL": "1"}, "tf": {"coordination_timeout": 120}}

    # the function's module is importable in the tasks because sbatch passes PYTHONPATH on
    report = submit(lambda argv, **kw: researcher_run(argv, env={"PYTHONPATH": str(scratch_dir)}, **kw),
                    scratch_dir, spec, "sandbox", "--set", f"runs_dir={scratch_dir / 'runs'}", timeout=600)
    run_dir = Path(report["run_dir"])
    job_id = report["job_id"]
    assert "error" not in report, report["error"] + logs(run_dir)
    assert report["state"] == "COMPLETED"
    status = wait_for_job(job_id, timeout=60)  # Slurm's own word
    assert (status.state, status.exit_code) == ("COMPLETED", "0:0")
    assert json.loads((run_dir / "submission.json").read_text())["job_id"] == job_id
    resolved = json.loads((run_dir / "resolved.json").read_text())
    assert resolved["command"] == ["python-function:mwms_function.train"]

    results = report["results"]
    assert report["result"] == results[0]  # job.result(): rank 0's (the chief's) return value
    hosts = assert_one_cluster(results)
    assert sorted(r["node"] for r in results) == sorted(slurm_cluster.gpu_nodes)
    assert all(r["hostname"] == r["node"] for r in results)
    assert hosts == [r["node"] for r in results]  # worker r's address is rank r's node
    tasks = records(run_dir, job_id, range(2))
    for result, task in zip(results, tasks, strict=True):
        assert task["env"]["TF_CONFIG"] == result["tf_config"]  # what the runtime set is what fn saw
        # one task per node: it keeps exactly the two GPUs Slurm handed that node's step
        assert result["cuda_visible_devices"] == task["env"]["CUDA_VISIBLE_DEVICES"]
        assert result["cuda_visible_devices"] == task["inherited_cuda_visible_devices"]
        assert len(result["cuda_visible_devices"].split(",")) == 2
        assert result["output_dir"] == str(run_dir / "output")
        assert result["cwd"] == str(scratch_dir)
    row = status_of(run_dir, "sandbox")  # the run directory works with hpc-tf status and logs
    assert (row["job_id"], row["state"], row["exit_code"]) == (job_id, "COMPLETED", 0)
    shown = hpc_tf("logs", str(run_dir), "--task", "1", site="sandbox", runs=run_dir.parent)
    assert shown.returncode == 0 and json.dumps(results[1]["tf_config"]) in shown.stdout, shown.stderr


@pytest.mark.tf
def test_mwms_function_trains_as_two_local_tasks_through_the_local_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cluster: the local launcher starts both workers here; each gets its own GPU id, and the run
    directory is a run like any other: submission record, logs, hpc-tf status and logs."""
    for name in ("mwms_function.py", "submit_function.py"):
        shutil.copy(FUNCTIONS / name, tmp_path / name)
    monkeypatch.delenv("HPC_TF_SITE", raising=False)
    spec = {"name": "fnlocal", "resources": {"tasks_per_node": 2, "gpus_per_node": 2, "time": "5:00"},
            "env": {"TF_CPP_MIN_LOG_LEVEL": "1"}, "tf": {"coordination_timeout": 60}}

    # a fake GPU count for the local partition: the GPU ids are the launcher's, sliced per task by hpc-tf
    report = submit(local_run(tmp_path), tmp_path, spec, "local", "--set", f"runs_dir={tmp_path / 'runs'}",
                    "--set", "partitions.local.gpus_per_node=2", timeout=240)
    run_dir = Path(report["run_dir"])
    assert "error" not in report, report["error"] + logs(run_dir)
    assert report["state"] == "COMPLETED"

    results = report["results"]
    assert report["result"] == results[0]  # job.result(): rank 0's return value
    assert assert_one_cluster(results) == ["127.0.0.1", "127.0.0.1"]
    assert [r["cuda_visible_devices"] for r in results] == ["0", "1"]  # the node's "0,1", one per task
    assert [r["node"] for r in results] == ["local1", "local1"]
    tasks = records(run_dir, report["job_id"], range(2))
    assert [t["inherited_cuda_visible_devices"] for t in tasks] == ["0,1", "0,1"]
    submission = json.loads((run_dir / "submission.json").read_text())
    assert (submission["job_id"], submission["launcher"]) == (report["job_id"], "local")
    row = status_of(run_dir, "local")
    assert (row["state"], row["exit_code"], row["nodes"], row["gpus"]) == ("COMPLETED", 0, "local1", 2)
    shown = hpc_tf("logs", str(run_dir), "--task", "1", site="local", runs=run_dir.parent)
    assert shown.returncode == 0 and '"rank": 1, "local_rank": 1, "node": "local1"' in shown.stdout, shown.stderr


def local_run(home: Path) -> Run:
    def run(argv: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(home), "LANG": "C.UTF-8"}
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return run


SMALL = ("small_functions.py",)


def test_a_failed_task_raises_one_line_naming_the_task_its_log_and_the_cause_local(tmp_path: Path) -> None:
    shutil.copy(FUNCTIONS / SMALL[0], tmp_path / SMALL[0])
    spec = {"name": "fnfail", "resources": {"nodes": 2, "tasks_per_node": 1, "gpus_per_node": 0, "time": "5:00"}}
    report = submit(local_run(tmp_path), tmp_path, spec, "local", "--set", f"runs_dir={tmp_path / 'runs'}",
                    timeout=120, script=(*SMALL, "fails_on_rank_1"))
    run_dir, job_id = Path(report["run_dir"]), report["job_id"]
    log = run_dir / "logs" / f"task-{job_id}-1.out"
    message = f"task 1 of job {job_id} failed: ValueError: no data for shard 3 (log: {log})"
    assert report["result"] == {"error": "TaskFailed", "message": message}  # result() too: the job failed
    assert report["results"] == {"error": "TaskFailed", "message": message}
    assert "ValueError: no data for shard 3" in log.read_text()  # the traceback is in the log it names


def test_a_cancelled_function_job_says_so_and_status_agrees(tmp_path: Path) -> None:
    shutil.copy(FUNCTIONS / SMALL[0], tmp_path / SMALL[0])
    spec = {"name": "fncancel", "resources": {"tasks_per_node": 1, "gpus_per_node": 0, "time": "5:00"}}
    report = submit(local_run(tmp_path), tmp_path, spec, "local", "--set", f"runs_dir={tmp_path / 'runs'}",
                    "--cancel", timeout=120, script=(*SMALL, "sleeps"))
    run_dir, job_id = Path(report["run_dir"]), report["job_id"]
    assert report["state"] == "CANCELLED"
    assert report["result"]["error"] == "TaskFailed"
    assert report["result"]["message"].startswith(f"task 0 of job {job_id} failed: no return value: the job "
                                                  "ended: cancelled")
    assert status_of(run_dir, "local")["state"] == "CANCELLED"


@pytest.mark.slurm
def test_result_is_rank_0s_and_a_failed_task_raises_naming_it_on_the_cluster(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster,
) -> None:
    """The README's ``print(job.result())`` for a multi-worker spec, through submitit's SlurmExecutor."""
    shutil.copy(FUNCTIONS / SMALL[0], scratch_dir / SMALL[0])
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True, timeout=30)
    spec = {"name": "fnsmall", "resources": {"nodes": 2, "tasks_per_node": 1, "gpus_per_node": 0, "time": "5:00"}}
    sets = ("--set", f"runs_dir={scratch_dir / 'runs'}", "--set", f"python={sys.executable}")

    def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return researcher_run(argv, env={"PYTHONPATH": str(scratch_dir)}, **kw)

    ok = submit(run, scratch_dir, spec, "sandbox", *sets, timeout=300, script=(*SMALL, "rank_and_node"))
    assert ok["result"] == {"value": {"rank": 0, "node": ok["results"]["value"][0]["node"], "x": 3}}
    assert [r["rank"] for r in ok["results"]["value"]] == [0, 1]
    assert ok["state"] == "COMPLETED"

    failed = submit(run, scratch_dir, spec, "sandbox", *sets, timeout=300, script=(*SMALL, "fails_on_rank_1"))
    run_dir, job_id = Path(failed["run_dir"]), failed["job_id"]
    log = run_dir / "logs" / f"task-{job_id}-1.out"
    message = f"task 1 of job {job_id} failed: ValueError: no data for shard 3 (log: {log})"
    assert failed["result"] == {"error": "TaskFailed", "message": message}
    assert "ValueError: no data for shard 3" in log.read_text()
    assert status_of(run_dir, "sandbox")["state"] == failed["state"] == "FAILED"
