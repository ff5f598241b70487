"""Containers and the memory fields on the real test cluster, as the non-root user.

The test cluster has no container runtime: a job with a ``docker://`` image must end in setup, FAILED,
with one line naming the runtime, the node and the image, before any task starts.
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

Run = Callable[..., subprocess.CompletedProcess[str]]
IMAGE = "docker://tensorflow/tensorflow:2.16.1"


@pytest.fixture
def project(scratch_dir: Path, slurm_cluster: SlurmCluster) -> Path:
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    return scratch_dir


def hpc_tf(researcher_run: Run, project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return researcher_run(["hpc-tf", *args, "--site", "sandbox", "--set", f"runs_dir={project / 'runs'}"],
                          cwd=project, check=check, timeout=180)


def write_spec(project: Path, spec: dict[str, object]) -> None:
    (project / "job.yaml").write_text(yaml.safe_dump(spec))


def test_a_docker_image_on_a_node_without_a_container_runtime_ends_the_job_in_setup(
    researcher_run: Run, slurm_cluster: SlurmCluster, project: Path, wait_for_job: Callable[..., JobStatus]
) -> None:
    assert shutil.which("apptainer") is None and shutil.which("singularity") is None, "the test needs no runtime"
    write_spec(project, {"name": "in-docker", "command": ["python3", "-c", "open('ran', 'w')"],
                         "resources": {"nodes": 1, "partition": "cpu", "time": "2:00"},
                         "environment": {"container": {"image": IMAGE}}})
    launched = hpc_tf(researcher_run, project, "launch", "job.yaml", "--wait", check=False)
    job_id = launched.stdout.strip()
    job = wait_for_job(job_id)
    assert (job.state, job.exit_code) == ("FAILED", "1:0")
    (run_dir,) = sorted((project / "runs").glob("*"))
    resolved = json.loads((run_dir / "resolved.json").read_text())
    assert resolved["container"]["image"] == IMAGE  # pulled as written, not a path under the project
    log = hpc_tf(researcher_run, project, "logs", str(run_dir)).stdout
    setup_lines = [line for line in log.splitlines() if line.startswith("hpc-tf: setup failed:")]
    assert setup_lines == [f"hpc-tf: setup failed: no apptainer on cpu1 to run the container image {IMAGE}: load it "
                           "with environment.modules in job.yaml (or modules in the site config), or set "
                           "environment.container.runtime to one the site has"]
    assert "job step finished" not in log and not (project / "ran").exists()


@pytest.mark.parametrize("memory", [{"mem_per_gpu": "500M"}, {"mem_per_cpu": "200M"}])
def test_sbatch_takes_memory_per_gpu_or_cpu_instead_of_mem(
    researcher_run: Run, project: Path, memory: dict[str, str]
) -> None:
    """Before, --mem-per-gpu could only be an sbatch_extra, rendered beside --mem: sbatch refuses both."""
    write_spec(project, {"name": "mem", "command": ["true"],
                         "resources": {"nodes": 1, "gpus_per_node": 2, "time": "2:00", **memory}})
    script = hpc_tf(researcher_run, project, "render", "job.yaml").stdout
    (project / "job.sbatch").write_text(script)
    result = researcher_run(["sbatch", "--test-only", "job.sbatch"], cwd=project, check=False)
    assert "to start at" in result.stderr, result.stderr


def test_the_site_constraint_reaches_sbatch(researcher_run: Run, project: Path) -> None:
    """The test nodes declare no features: sbatch refuses the site's constraint, which shows it got it."""
    write_spec(project, {"name": "c", "command": ["true"], "resources": {"nodes": 1, "time": "2:00"}})
    for site_constraint, expected in (("nosuchfeature", "Invalid feature specification"), (None, "to start at")):
        extra = ("--set", f"constraint={site_constraint}") if site_constraint else ()
        script = hpc_tf(researcher_run, project, "render", "job.yaml", *extra).stdout
        (project / "job.sbatch").write_text(script)
        result = researcher_run(["sbatch", "--test-only", "job.sbatch"], cwd=project, check=False)
        assert expected in result.stderr, result.stderr
