"""The launch path on the real test cluster, as the non-root user: launch, status, logs, cancel.

Everything goes through the ``hpc-tf`` command a researcher types; Slurm's own tools (through the
conftest helpers) are the independent witness of what happened.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:
    from tests.conftest import JobStatus, SlurmCluster

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def project(scratch_dir: Path, slurm_cluster: SlurmCluster) -> Path:
    """A copy of the quickstart plus a few small jobs, on the shared filesystem, owned by the user."""
    shutil.copytree(REPO / "examples" / "quickstart", scratch_dir / "quickstart")
    # training only: the hand-off needs a serving node, which test_handoff_slurm.py starts
    spec_path = scratch_dir / "quickstart" / "job.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    del spec["handoff"]
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    # no GPUs: the account's GPU quota (shared with other tests) must not be what makes it wait
    (scratch_dir / "sleep.yaml").write_text(
        "name: sleeper\ncommand: [sleep, '300']\nresources: {nodes: 1, time: '5:00'}\n"
    )
    (scratch_dir / "echo.yaml").write_text(
        "name: echo\ncommand: [/bin/echo, 'hello from a worker']\n"
        "resources: {nodes: 2, tasks_per_node: 1, partition: gpu, time: '2:00'}\n"
    )
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    return scratch_dir


def hpc_tf(researcher_run: Run, project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    runs = project / "runs"
    return researcher_run(["hpc-tf", *args, "--site", "sandbox", "--set", f"runs_dir={runs}"],
                          cwd=project, check=check, timeout=180)


def run_dirs(project: Path) -> list[Path]:
    return sorted((project / "runs").glob("*")) if (project / "runs").is_dir() else []


def test_quickstart_trains_on_two_nodes_and_is_reported_completed(
    researcher_run: Run, project: Path, wait_for_job: Callable[..., JobStatus]
) -> None:
    launched = hpc_tf(researcher_run, project / "quickstart", "launch", "job.yaml", "--wait")
    job_id = launched.stdout.strip()
    assert wait_for_job(job_id).state == "COMPLETED"

    status = json.loads(hpc_tf(researcher_run, project / "quickstart", "status", job_id, "--json").stdout)
    assert [(row["job_id"], row["state"], row["gpus"]) for row in status] == [(job_id, "COMPLETED", 4)]
    (run_dir,) = run_dirs(project / "quickstart")
    assert (run_dir / "output" / "export" / "saved_model.pb").is_file()
    assert "job step finished with exit code 0" in hpc_tf(researcher_run, project, "logs", str(run_dir)).stdout
    chief_log = hpc_tf(researcher_run, project, "logs", str(run_dir), "--task", "0").stdout
    assert "final loss" in chief_log


def test_logs_by_job_id_show_every_worker(
    researcher_run: Run, project: Path, wait_for_job: Callable[..., JobStatus]
) -> None:
    job_id = hpc_tf(researcher_run, project, "launch", "echo.yaml").stdout.strip()
    assert wait_for_job(job_id).state == "COMPLETED"
    for task in ("0", "1"):
        assert "hello from a worker" in hpc_tf(researcher_run, project, "logs", job_id, "--task", task).stdout


# a site's module system that knows no module: Lmod's answer to an unknown one, non-zero
NO_MODULES = 'module() { echo "Lmod has detected the following error: unknown module $2" >&2; return 1; }\n'


@pytest.mark.parametrize("broken", ["venv", "module"])
def test_a_job_whose_environment_cannot_be_set_up_ends_failed_naming_the_step(
    researcher_run: Run, project: Path, wait_for_job: Callable[..., JobStatus], broken: str
) -> None:
    venv = project / "venvs" / "not made"
    (project / "lmod.sh").write_text(NO_MODULES)
    environment, message = {
        "venv": ({"venv": str(venv)}, f"venv {venv} cannot be activated (no {venv}/bin/activate): "
                                      "check environment.venv in job.yaml"),
        "module": ({"modules": ["tf/9.9"]}, "module load tf/9.9 failed: check environment.modules in job.yaml"),
    }[broken]
    spec = {"name": f"no-{broken}", "command": ["python3", "-c", "open('ran', 'w')"],
            "resources": {"nodes": 1, "time": "2:00"}, "environment": environment,
            "preemption": {"enabled": True, "warning_seconds": 30, "max_restarts": 2}}
    (project / "job.yaml").write_text(yaml.safe_dump(spec))
    launched = hpc_tf(researcher_run, project, "launch", "job.yaml", "--wait",
                      "--set", f"module_init={project / 'lmod.sh'}", check=False)
    job_id = launched.stdout.strip()
    job = wait_for_job(job_id)
    assert (job.state, job.exit_code) == ("FAILED", "1:0")  # sacct: failed, and not requeued
    (row,) = json.loads(hpc_tf(researcher_run, project, "status", job_id, "--json").stdout)
    assert (row["state"], row["restarts"]) == ("FAILED", 0)
    (run_dir,) = run_dirs(project)
    log = hpc_tf(researcher_run, project, "logs", str(run_dir)).stdout
    assert f"hpc-tf: setup failed: {message}" in log
    assert "job step finished" not in log and not (project / "ran").exists()


def test_cancel_stops_a_running_job(
    researcher_run: Run, project: Path, wait_for_job: Callable[..., JobStatus]
) -> None:
    job_id = hpc_tf(researcher_run, project, "launch", "sleep.yaml").stdout.strip()
    wait_for_job(job_id, until=lambda s: s.state == "RUNNING")
    (run_dir,) = run_dirs(project)
    hpc_tf(researcher_run, project, "cancel", str(run_dir))
    assert wait_for_job(job_id).state == "CANCELLED"
    (row,) = json.loads(hpc_tf(researcher_run, project, "status", job_id, "--json").stdout)
    assert row["state"] == "CANCELLED"


def test_a_job_waiting_for_nodes_says_why_in_words(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, wait_for_job: Callable[..., JobStatus]
) -> None:
    # hold every CPU of the GPU nodes but no GPU, so the quota is not what blocks the next job
    # (--exclusive would not do: an exclusive job is charged all GPUs of its nodes)
    blocker = researcher_run(
        ["sbatch", "--parsable", "-p", slurm_cluster.gpu_partition, "-N", str(len(slurm_cluster.gpu_nodes)),
         "--ntasks-per-node=1", "--cpus-per-task=8", "-t", "5", "-o", "/dev/null", "--wrap", "sleep 300"],
        cwd=project,
    ).stdout.strip()
    try:
        wait_for_job(blocker, until=lambda s: s.state == "RUNNING")
        job_id = hpc_tf(researcher_run, project, "launch", "sleep.yaml").stdout.strip()
        wait_for_job(job_id, until=lambda s: s.state == "PENDING" and s.reason not in ("None", ""))
        (row,) = json.loads(hpc_tf(researcher_run, project, "status", job_id, "--json").stdout)
        assert row["state"] == "PENDING"
        assert row["reason"] in ("Resources", "Priority")
        assert row["info"].startswith(("waiting for free resources", "jobs with a higher priority"))
        table = hpc_tf(researcher_run, project, "status", job_id).stdout
        assert "PENDING" in table
    finally:
        researcher_run(["scancel", blocker], cwd=project, check=False)
        hpc_tf(researcher_run, project, "cancel", "--all", check=False)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("name: x\ncommand: c\nresources: {gpu_per_node: 2}\n", "job.yaml:3: resources.gpu_per_node: unknown key"),
        ("name: x\ncommand: c\nresources: {nodes: many}\n", "job.yaml:3: resources.nodes: Input should be a valid"),
        ("name: x\ncommand: c\nresources: {nodes: 1, gpus_per_node: 16}\n", "16 GPUs per node"),
        # an abbreviation is the option sbatch would read: refused before anything is submitted
        ("name: x\ncommand: c\nsbatch_extra: ['--gpus-per-nod=8']\n",
         "'--gpus-per-nod=8' is --gpus-per-node, which hpc-tf manages"),
        ("name: x\ncommand: c\nresources: {tasks_per_node: 1000000000}\n", "at most 1024"),
        ("name: x\ncommand: c\nresources: {time: '0'}\n", "'0' is no time limit to Slurm"),
        ("name: x\ncommand: c\nresources: {mem: '0'}\n", "write mem: all if that is meant"),
    ],
)
def test_broken_specs_are_refused_and_nothing_is_submitted(
    researcher_run: Run, project: Path, spec: str, message: str
) -> None:
    name = f"refused-{project.name}"[-60:].lstrip("-._")
    (project / "job.yaml").write_text(spec.replace("name: x", f"name: {name}"))
    result = hpc_tf(researcher_run, project, "launch", "job.yaml", check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert run_dirs(project) == []
    # no job of that (unique) name ever reached the controller
    submitted = subprocess.run(["sacct", "-n", "-X", "-a", "--name", name, "-o", "JobID"],
                               capture_output=True, text=True, check=True)
    assert submitted.stdout.strip() == ""


def sandbox_variant(spec: Path) -> str:
    """The example spec made to fit the test cluster (2 untyped-GPU nodes; no features defined)."""
    data = yaml.safe_load(spec.read_text())
    resources = data.setdefault("resources", {})
    for key in ("partition", "gpu_type", "constraint"):
        resources.pop(key, None)
    resources["nodes"] = min(resources.get("nodes", 1), 2)
    resources["time"] = "10:00"
    resources["tasks_per_node"] = min(resources.get("tasks_per_node", 1), 4)
    if "gpus_per_node" in resources:
        resources["gpus_per_node"] = resources["tasks_per_node"]
    return yaml.safe_dump(data)


@pytest.mark.parametrize("spec", sorted((REPO / "tests" / "fixtures" / "specs").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_script_is_accepted_by_sbatch(researcher_run: Run, project: Path, spec: Path) -> None:
    """sbatch --test-only parses our #SBATCH lines with its own parser: hostile values included."""
    (project / "job.yaml").write_text(sandbox_variant(spec))
    script = hpc_tf(researcher_run, project, "render", "job.yaml").stdout
    (project / "job.sbatch").write_text(script)
    result = researcher_run(["sbatch", "--test-only", "job.sbatch"], cwd=project, check=False)
    assert "to start at" in result.stderr, result.stderr

