"""README.md's "On your cluster" and "From Python" on the test cluster, as its user would follow them.

Step 1 installs a site config the way the README says (copy an example, edit it to describe this
cluster: the test cluster's own values, then ``hpc-tf site add … --default``) into a HOME of the test's
own, so nothing here touches the cluster user's real configuration. Then the README's commands run
as written, placeholders (``JOBID``) replaced by the values the previous step printed, and their
output is checked against what the README says they show. One job serves launch, status, logs -f
and cancel. Which test runs which README block: tests/unit/test_readme_coverage.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from tests._readme import README, block, readme_argv
from tests._shims import CallLog
from tests.conftest import as_user_argv

if TYPE_CHECKING:
    from tests.conftest import JobStatus, SlurmCluster

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
Run = Callable[..., subprocess.CompletedProcess[str]]

# the chief says where it is, every half second, until it is cancelled
CHIEF_PY = """\
import itertools, json, os, sys, time
task = json.loads(os.environ["TF_CONFIG"])["task"]
for step in itertools.count():
    print(f"worker {task['index']} step {step}", flush=True)
    time.sleep(0.5)
"""


@pytest.fixture
def user(scratch_dir: Path, slurm_cluster: SlurmCluster, researcher_run: Run) -> Callable[..., str]:
    """README step 1 done in a fresh HOME; ``user(*argv, ok=True)`` runs a command there as the cluster
    user (in ``scratch_dir/project``) and returns stdout + stderr."""
    home, project = scratch_dir / "home", scratch_dir / "project"
    home.mkdir()
    project.mkdir()
    shutil.copytree(REPO / "site_configs", project / "site_configs")
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    env = {"HOME": str(home)}

    def run(*argv: str, ok: bool = True, timeout: float = 120) -> str:
        result = researcher_run(list(argv), cwd=project, env=env, check=False, timeout=timeout)
        text = result.stdout + result.stderr
        assert (result.returncode == 0) == ok, f"{' '.join(argv)} exited {result.returncode}:\n{text}"
        return text

    # "copy one of site_configs/example-*.yaml … and edit it": the edit describes the test cluster
    run(*readme_argv("cp site_configs/example-plain.yaml mycluster.yaml"))
    edited = yaml.safe_load((REPO / "site_configs" / "sandbox.yaml").read_text())
    edited.update(python=sys.executable, runs_dir=str(project / "runs"))  # jobs run this venv's code
    (project / "mycluster.yaml").write_text(yaml.safe_dump(edited))
    out = run(*readme_argv("hpc-tf site add mycluster.yaml --default"))
    assert "site 'mycluster' installed" in out and (home / ".config" / "hpc-tf" / "sites" / "mycluster.yaml").is_file()
    return run


def _spec(**changes: object) -> str:
    spec = yaml.safe_load(block("name: resnet").text)
    spec.update(changes)
    return yaml.safe_dump(spec, sort_keys=False)


def test_on_your_cluster_launch_status_logs_cancel_config(
    user: Callable[..., str], scratch_dir: Path, slurm_cluster: SlurmCluster, wait_for_job: Callable[..., JobStatus],
) -> None:
    project = scratch_dir / "project"
    # the README's spec as written: the dry run shows its script and plan and writes nothing
    (project / "job.yaml").write_text(block("name: resnet").text)
    dry = user(*readme_argv("hpc-tf launch job.yaml --dry-run"))
    assert "#SBATCH --nodes=2" in dry and "#SBATCH --ntasks-per-node=2" in dry and "#SBATCH --gres=gpu:4" in dry
    assert "module load cuda/12.4" in dry and "python train.py --epochs 90" in dry
    assert "dry run: resnet: 2 node(s) x 2 worker(s), 8 GPU(s) (4/node)" in dry and "nothing submitted" in dry
    assert not (project / "runs").exists()

    # the same spec made to run here: half the GPUs (the account's quota is 4), no modules or venv on
    # this cluster, and a command that runs until cancelled
    (project / "chief.py").write_text(CHIEF_PY)
    resources = {**yaml.safe_load(block("name: resnet").text)["resources"], "gpus_per_node": 2}
    (project / "job.yaml").write_text(_spec(command="python3 chief.py", resources=resources, environment={}))
    shutil.chown(project / "job.yaml", slurm_cluster.user)
    shutil.chown(project / "chief.py", slurm_cluster.user)
    launched = user(*readme_argv("hpc-tf launch job.yaml"))
    job_id = launched.splitlines()[0].strip() if launched.splitlines()[0].strip().isdigit() else ""
    assert job_id, launched
    (run_dir,) = (project / "runs").iterdir()
    assert f"submitted job {job_id}: resnet" in launched and str(run_dir) in launched  # the id and the run dir
    wait_for_job(job_id, timeout=180, until=lambda s: s.state == "RUNNING" or s.finished)

    table = user(*readme_argv("hpc-tf status --all"))
    row = next((line.split() for line in table.splitlines() if line.split()[:1] == [job_id]), None)
    assert row and run_dir.name in row and "RUNNING" in row and "node[1-2]" in row and "4" in row, table

    logs = readme_argv("hpc-tf logs JOBID --task 0 -f", JOBID=job_id)
    follow = subprocess.Popen(as_user_argv(slurm_cluster.user, logs, {"HOME": str(scratch_dir / "home")}),
                              cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert follow.stdout is not None
        seen = [follow.stdout.readline() for _ in range(3)]
        assert any("worker 0 step" in line for line in seen), seen  # the chief's own lines, as they come
        assert not any("worker 1 " in line for line in seen), seen  # --task 0: only the chief
        user(*readme_argv("hpc-tf cancel JOBID", JOBID=job_id))
        rest, _ = follow.communicate(timeout=90)  # -f ends by itself once the job ended
        assert follow.returncode == 0, rest
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert wait_for_job(job_id).state == "CANCELLED"
    ended = user(*readme_argv("hpc-tf status --all"))
    row = next((line for line in ended.splitlines() if line.split()[:1] == [job_id]), "")
    assert "CANCELLED" in row and "exit code" not in row, ended

    shown = user(*readme_argv("hpc-tf config show"))
    site_file = str(scratch_dir / "home" / ".config" / "hpc-tf" / "sites" / "mycluster.yaml")
    for key, value in (("account", slurm_cluster.account), ("python", sys.executable)):
        line = next((line for line in shown.splitlines() if line.split()[:1] == [key]), "")
        assert value in line and site_file in line, shown  # the value and the file it came from, whole


def python_example() -> str:
    """The README's Python example with its elided body written out: the strategy's replica count over
    the epochs (2 workers, no real GPUs: 2 replicas) is the "final loss" each task returns."""
    source = block("from hpc import submit_function").text
    elided = "    ...\n    return final_loss\n"
    assert elided in source, source
    return source.replace(elided, "    return strategy.num_replicas_in_sync / epochs\n")


def test_the_python_example_trains_on_two_nodes_and_prints_rank_0s_result(
    user: Callable[..., str], scratch_dir: Path, slurm_cluster: SlurmCluster,
) -> None:
    project = scratch_dir / "project"
    resources = {"nodes": 2, "tasks_per_node": 1, "gpus_per_node": 1, "time": "10:00"}
    (project / "job.yaml").write_text(_spec(resources=resources, environment={}))
    (project / "example.py").write_text(python_example())
    subprocess.run(["chown", "-R", slurm_cluster.user, str(project)], check=True)
    out = user("python3", "example.py", timeout=300)
    assert out.strip().splitlines()[-1] == str(2 / 5), out  # rank 0's return value: both workers formed one cluster


SLEEPER = ("name: hold\ncommand: python3 -c 'import time; time.sleep(120)'\n"
           "resources: {{nodes: 1, gpus_per_node: {gpus}, time: '5:00'}}\n")


def gpus_free(cluster: SlurmCluster, timeout: float = 120) -> None:
    """Wait until no job is on the GPU partition (an earlier test's job may still be completing)."""
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h", "-p", cluster.gpu_partition, "-o", "%i"], capture_output=True, text=True,
                         timeout=30, check=True).stdout.strip():
        assert time.monotonic() < deadline, "the GPU partition never emptied"
        time.sleep(1)


def test_what_the_quota_check_costs_a_launch(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster, wait_for_job: Callable[..., JobStatus],
) -> None:
    """The README's "GPU quota" paragraph, counted: one controller query for a launch that fits; slurmdbd
    (sacctmgr) only when its remembered answers are older than 5 minutes; a launch that must wait asks
    the controller and slurmdbd again, fresh, and squeue for the jobs that hold the GPUs."""
    shims = CallLog.create(scratch_dir / "shims")
    home = scratch_dir / "home"
    home.mkdir()
    for gpus in (slurm_cluster.gpu_quota, 1):
        (scratch_dir / f"hold-{gpus}.yaml").write_text(SLEEPER.format(gpus=gpus))
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    env = {"HOME": str(home), "PATH": f"{shims.bin}:{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin",
           "HPC_TF_SITE": "sandbox", "HPC_TF_RUNS_DIR": str(scratch_dir / "runs"), "HPC_TF_PYTHON": sys.executable}

    def launch(spec: str) -> tuple[str, Counter[str]]:
        shims.reset()
        job = researcher_run(["hpc-tf", "launch", spec], cwd=scratch_dir, env=env).stdout.strip()
        return job, shims.counts()

    said = " ".join(README.read_text(encoding="utf-8").split())  # what the README says these counts are
    assert ("costs a launch that fits one controller query (`scontrol show assoc_mgr`)" in said
            and "asked with two `sacctmgr` calls at most every 5 minutes" in said
            and "checked again with fresh answers (the controller and slurmdbd once more) and asks `squeue`" in said)
    gpus_free(slurm_cluster)
    jobs = []
    try:
        first, calls = launch(f"hold-{slurm_cluster.gpu_quota}.yaml")  # nothing remembered yet
        jobs.append(first)
        assert calls == {"scontrol": 1, "sacctmgr": 2, "sbatch": 1}, calls
        wait_for_job(first, timeout=120, until=lambda s: s.state == "RUNNING" or s.finished)
        waits, calls = launch(f"hold-{slurm_cluster.gpu_quota}.yaml")  # the first holds the whole quota
        jobs.append(waits)
        assert calls == {"scontrol": 2, "sacctmgr": 2, "squeue": 1, "sbatch": 1}, calls
        researcher_run(["scancel", *jobs], cwd=scratch_dir)
        wait_for_job(first)
        fits, calls = launch("hold-1.yaml")  # within 5 minutes: slurmdbd's answers are reused
        jobs.append(fits)
        assert calls == {"scontrol": 1, "sbatch": 1}, calls
    finally:
        subprocess.run(["scancel", *jobs], check=False, timeout=30)
