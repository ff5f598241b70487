"""The local launcher's parts that need no process: the emulated step's task environments (which the
bootstrap must accept as a real Slurm step), the allocation read from a rendered script, job ids."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hpc.errors import HpcTfError, SpecError
from hpc.local.jobs import LocalJobStore
from hpc.local.scheduler import LocalScheduler, _job_from_script
from hpc.render.directives import read_directives
from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.runtime.node.local_step import expand_filename_pattern, log_path, task_environments
from hpc.runtime.node.settings import RuntimeSettings
from hpc.runtime.node.task_env import plan_task
from hpc.scheduler import ArrayRequest, JobState, SubmitOptions
from hpc.site.load import load_site
from hpc.spec import load_spec_text

ALLOCATION = {
    "SLURM_JOB_ID": "7",
    "SLURM_JOB_NODELIST": "local1,local2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_GPUS_PER_NODE": "2",
    "CUDA_VISIBLE_DEVICES": "0,1,2,3",
    "HPC_TF_NODE_ADDRESS_MAP": "local1=127.0.0.1,local2=127.0.0.1",
}


def test_every_task_gets_a_step_the_bootstrap_accepts_with_its_own_gpu_and_port() -> None:
    envs = task_environments(ALLOCATION)
    assert [(e["SLURM_PROCID"], e["SLURM_NODEID"], e["SLURM_LOCALID"], e["SLURMD_NODENAME"]) for e in envs] == [
        ("0", "0", "0", "local1"), ("1", "0", "1", "local1"), ("2", "1", "0", "local2"), ("3", "1", "1", "local2")]
    # the bootstrap's own reading of each environment, as on a cluster: per-node GPU blocks sliced per task
    plans = [plan_task(env, RuntimeSettings(), site_dir="/x") for env in envs]
    assert [p.gpus.inherited for p in plans] == [("0", "1"), ("0", "1"), ("2", "3"), ("2", "3")]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "1", "2", "3"]
    (workers,) = {p.workers for p in plans}
    assert len(set(workers)) == 4 and all(w.startswith("127.0.0.1:") for w in workers)
    assert [json.loads(p.env["TF_CONFIG"])["task"]["index"] for p in plans] == [0, 1, 2, 3]


def test_a_job_without_gpus_hides_them_from_every_task() -> None:
    envs = task_environments({**ALLOCATION, "SLURM_GPUS_PER_NODE": "0", "CUDA_VISIBLE_DEVICES": ""})
    assert {e["CUDA_VISIBLE_DEVICES"] for e in envs} == {""}
    assert all("SLURM_GPUS_ON_NODE" not in e for e in envs)


@pytest.mark.parametrize(("missing", "says"), [("SLURM_JOB_NODELIST", "SLURM_JOB_NODELIST is not set"),
                                               ("CUDA_VISIBLE_DEVICES", "has 0 GPU ids")])
def test_outside_a_local_job_the_step_says_what_is_missing(missing: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        task_environments({k: v for k, v in ALLOCATION.items() if k != missing})


def test_log_names_follow_slurms_filename_patterns() -> None:
    env = task_environments(ALLOCATION)[3]
    assert log_path("/runs/100%%/logs/task-%j-%t.out", "7", env) == "/runs/100%/logs/task-7-3.out"
    assert expand_filename_pattern("%N-%n-%x", {"N": "local2", "n": "1"}) == "local2-1-%x"
    array_task = task_environments({**ALLOCATION, "SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "2"})[1]
    assert log_path("/logs/task-%A_%a-%j-%t.out", "7", array_task) == "/logs/task-5_2-7-1.out"


def test_the_allocation_is_read_from_the_scripts_sbatch_lines(tmp_path: Path) -> None:
    text = ("name: alloc\ncommand: python3 train.py\nresources: {nodes: 2, tasks_per_node: 2, gpus_per_task: 1, "
            "time: '1:30:00'}\npreemption: {enabled: true, warning_seconds: 90}\n")
    loaded = load_spec_text(text, "job.yaml", tmp_path)
    environ = {"HOME": str(tmp_path), "USER": "alice"}
    job = resolve(loaded, load_site("local", (f"runs_dir={tmp_path}",), environ=environ), "alloc-run", environ)
    script = tmp_path / "job.sbatch"
    script.write_text(render_script(job))
    found = _job_from_script(script, {})
    assert (found.nodes, found.tasks_per_node, found.gpus_per_node) == (2, 2, 2)
    assert (found.time_limit_s, found.warning_s, found.name) == (5400, 90, "alloc")
    assert found.gpu_ids == ["0", "1", "2", "3"]
    assert found.output == f"{tmp_path}/alloc-run/logs/batch-%j.out"
    # GPUs the caller's CUDA_VISIBLE_DEVICES lends are used, and too few is refused with the fix
    assert _job_from_script(script, {"CUDA_VISIBLE_DEVICES": "3,2,1,0,5"}).gpu_ids == ["3", "2", "1", "0"]
    with pytest.raises(HpcTfError, match="lends this machine's launcher only 2"):
        _job_from_script(script, {"CUDA_VISIBLE_DEVICES": "0,1"})


def test_job_ids_are_unique_under_concurrent_launches(tmp_path: Path) -> None:
    store = LocalJobStore(tmp_path / ".local-jobs")
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: store.new_id(), range(64)))
    assert sorted(map(int, ids)) == list(range(1, 65))


def test_unknown_ids_are_unknown_and_a_hold_is_refused(tmp_path: Path) -> None:
    scheduler = LocalScheduler(tmp_path)
    assert scheduler.query(["12", "12_3"])["12"].state is JobState.UNKNOWN
    assert scheduler.query(["12_3", "x"])["12_3"].state is JobState.UNKNOWN
    with pytest.raises(HpcTfError, match="takes no held jobs"):
        scheduler.submit(tmp_path / "job.sbatch", SubmitOptions(array=ArrayRequest((0, 1)), hold=True))
    with pytest.raises(HpcTfError, match="no such job"):
        scheduler.submit(tmp_path / "job.sbatch", SubmitOptions.after_success(["99"]))


def test_a_line_break_bash_does_not_see_cannot_move_the_log(tmp_path: Path) -> None:
    # Finding 3 of issue 15: a constraint carrying U+2028 and a second #SBATCH line moved a local job's
    # log out of its run directory. The spec refuses the value, and the launcher reads lines as bash
    # and sbatch do (split on \n only), so a script carrying one anyway keeps its own --output.
    attack = 'name: a\ncommand: x\nresources: {constraint: "fast\\u2028#SBATCH --output=/tmp/elsewhere"}\n'
    with pytest.raises(SpecError, match=r"job.yaml:3: resources.constraint: .*it contains \\u2028"):
        load_spec_text(attack, "job.yaml", tmp_path)
    script = tmp_path / "job.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --job-name=a\n#SBATCH --output=/runs/a/logs/batch-%j.out\n"
                      '#SBATCH --constraint="fast\u2028#SBATCH --output=/tmp/elsewhere"\nexit 0\n')
    assert _job_from_script(script, {}).output == "/runs/a/logs/batch-%j.out"
    assert read_directives(script.read_text())["constraint"] == "fast\u2028#SBATCH --output=/tmp/elsewhere"
