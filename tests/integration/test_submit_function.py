"""hpc-tf's submitit API end to end: a MultiWorkerMirroredStrategy *function* (Keras 3 ``model.fit``)
submitted with ``hpc.functions.submit_function``, on the test cluster (submitit's SlurmExecutor, as the
researcher, from the shared scratch directory) and on this machine (submitit's LocalExecutor).

The function returns each worker's view (rank, TF_CONFIG, GPUs) and a digest of its final weights;
Slurm's accounting and the task logs (the runtime's record line) are the independent witnesses.
"""

from __future__ import annotations

import json
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


def submit(run: Callable[..., subprocess.CompletedProcess[str]], cwd: Path, spec: dict[str, Any],
           site: str, *options: str, timeout: float) -> dict[str, Any]:
    argv = [sys.executable, str(cwd / "submit_function.py"), json.dumps(spec), site, *options]
    result = run(argv, cwd=cwd, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(lines[-1])
    return report


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


@pytest.mark.tf
def test_mwms_function_trains_as_two_local_tasks_through_the_local_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No cluster: submitit's LocalExecutor starts both workers here; each gets its own GPU id."""
    for name in ("mwms_function.py", "submit_function.py"):
        shutil.copy(FUNCTIONS / name, tmp_path / name)
    monkeypatch.delenv("HPC_TF_SITE", raising=False)
    spec = {"name": "fnlocal", "resources": {"tasks_per_node": 2, "gpus_per_node": 2, "time": "5:00"},
            "env": {"TF_CPP_MIN_LOG_LEVEL": "1"}, "tf": {"coordination_timeout": 60}}

    def run(argv: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(tmp_path), "LANG": "C.UTF-8"}
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)

    # a fake GPU count for the local partition: the GPU ids are submitit's, sliced per task by hpc-tf
    report = submit(run, tmp_path, spec, "local", "--set", f"runs_dir={tmp_path / 'runs'}",
                    "--set", "partitions.local.gpus_per_node=2", timeout=240)
    run_dir = Path(report["run_dir"])
    assert "error" not in report, report["error"] + logs(run_dir)
    assert report["state"] == "FINISHED"  # submitit's word for a local job that ended

    results = report["results"]
    assert assert_one_cluster(results) == ["127.0.0.1", "127.0.0.1"]
    assert [r["cuda_visible_devices"] for r in results] == ["0", "1"]  # submitit's "0,1", one per task
    assert [r["node"] for r in results] == ["localhost", "localhost"]
    tasks = records(run_dir, report["job_id"], range(2))
    assert [t["inherited_cuda_visible_devices"] for t in tasks] == ["0,1", "0,1"]
    assert not (run_dir / "submission.json").exists()  # not a Slurm job: nothing for hpc-tf status
