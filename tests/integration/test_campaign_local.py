"""Campaigns on the embedded default, the local launcher, through the ``hpc-tf campaign`` commands: the
same arrays, dependencies, blocked tasks, resubmission and cancel as on Slurm, with no Slurm.

Tasks are tiny Python scripts (a second each); the quickstart's TensorFlow grid, as the README runs it:
tests/integration/test_readme_local.py. The witnesses are the tasks' own outputs, their process ids and the
launcher's job records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration._waiting import wait_until

# writes what it was given and its pid, fails on request, sleeps
TASK_PY = """\
import json, os, sys, time
out = os.environ["HPC_TF_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
stage = os.path.basename(out) if os.environ.get("HPC_TF_TASK_ID") else "evaluate"
record = {"task": os.environ.get("HPC_TF_TASK_ID"), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
          "array": [os.environ.get(k) for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID")]}
if stage == "train":  # reads what its own preprocessing task wrote
    with open(os.path.join(os.environ["HPC_TF_TASK_DIR"], "preprocess", "out.json")) as fh:
        record["input"] = json.load(fh)["task"]
if stage == "evaluate":  # reads every training task's output
    tasks = os.path.join(os.environ["HPC_TF_CAMPAIGN_DIR"], "tasks")
    record["inputs"] = [json.load(open(os.path.join(tasks, t, "train", "out.json")))["task"]
                        for t in sorted(os.listdir(tasks), key=int)]
with open(os.path.join(out, "out.json"), "w") as fh:
    json.dump(record, fh)
if os.path.exists(os.path.join(os.environ["PROJECT"], f"fail-{stage}-{os.environ.get('HPC_TF_TASK_ID')}")):
    sys.exit(3)
time.sleep(float(os.environ.get("SLEEP", "0.5")))
"""


def hpc_tf(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPC_TF_", "SLURM_", "CUDA_"))}
    result = subprocess.run([sys.executable, "-m", "hpc.cli", *args, "--site", "local",
                             "--set", f"runs_dir={project / 'runs'}"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"hpc-tf {' '.join(args)} exited {result.returncode}\n{result.stderr}")
    return result


def status(project: Path, campaign: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(hpc_tf(project, "campaign", "status", campaign, "--json", "--refresh").stdout)
    return data


def wait_status(project: Path, campaign: str, until: Callable[[dict[str, Any]], bool],
                timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not until(view := status(project, campaign)):
        if time.monotonic() > deadline:
            pytest.fail(f"campaign not there after {timeout} s: {json.dumps(view, indent=1)}")
        time.sleep(1)
    return view


def output(campaign: str, task: int | None, stage: str) -> dict[str, Any]:
    where = Path(campaign) / ("tasks" if task is not None else "stages")
    path = where / str(task) / stage / "out.json" if task is not None else where / stage / "output" / "out.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def pipeline(project: Path, tasks: int) -> Path:
    (project / "task.py").write_text(TASK_PY)
    path = project / "pipeline.yaml"
    path.write_text(f"""
name: pipe
job:
  command: [python3, task.py]
  env: {{PROJECT: "{project}"}}
  resources: {{nodes: 1, gpus_per_node: 1, time: "2:00"}}
parameters:
  list: {json.dumps([{"x": i + 1} for i in range(tasks)])}
stages:
  - name: preprocess
    resources: {{gpus_per_node: 0}}
  - name: train
    after: [preprocess]
  - name: evaluate
    per_task: false
    resources: {{gpus_per_node: 0}}
    after: {{train: afterok}}
""")
    return path


def test_a_failed_stage_blocks_its_dependents_until_resubmitted_as_on_slurm(tmp_path: Path) -> None:
    """CPU preprocess (array) → GPU train (aftercorr) → evaluate (one job, afterok); preprocess task 1 fails:
    train 1 and evaluate are blocked (pending for good, as Slurm leaves them), the rest runs; resubmit
    --failed reruns exactly that task and what waited for it, and the pipeline ends complete."""
    marker = tmp_path / "fail-preprocess-1"
    marker.touch()
    campaign = hpc_tf(tmp_path, "campaign", "run", str(pipeline(tmp_path, 3))).stdout.strip()

    def settled(view: dict[str, Any]) -> bool:
        return bool(view["counts"]["train"].get("COMPLETED") == 2 and view["counts"]["train"].get("BLOCKED") == 1)

    view = wait_status(tmp_path, campaign, settled)
    assert view["counts"]["preprocess"] == {"COMPLETED": 2, "FAILED": 1}
    assert view["counts"]["evaluate"] == {"BLOCKED": 1}
    assert [(f["stage"], f["task_id"], f["exit_code"]) for f in view["failures"]] == [("preprocess", 1, 3)]
    assert Path(view["failures"][0]["log"]).is_file()
    blocked = {(b["stage"], b["task_id"]): b for b in view["blocked"]}
    assert set(blocked) == {("train", 1), ("evaluate", None)}
    assert blocked[("train", 1)]["reason"] == "DependencyNeverSatisfied"
    assert not (Path(campaign) / "tasks" / "1" / "train" / "out.json").exists()  # it never ran
    assert output(campaign, 2, "train")["input"] == "2"  # its own preprocessing task's output

    marker.unlink()
    hpc_tf(tmp_path, "campaign", "resubmit", campaign, "--failed")
    reruns = [s for s in json.loads((Path(campaign) / "manifest.json").read_text())["submissions"]
              if s["purpose"] == "resubmit"]
    assert [(s["stage"], s["task_ids"]) for s in reruns] == [("preprocess", [1]), ("train", [1]), ("evaluate", [])]
    view = wait_status(tmp_path, campaign, lambda v: v["finished"])
    assert view["counts"] == {"preprocess": {"COMPLETED": 3}, "train": {"COMPLETED": 3}, "evaluate": {"COMPLETED": 1}}
    assert output(campaign, None, "evaluate")["inputs"] == ["0", "1", "2"]
    rerun = output(campaign, 1, "preprocess")["array"]
    assert rerun[:2] == [reruns[0]["job_id"], "1"]  # the rerun array holds exactly task 1, at its own index


def test_cancelling_a_running_campaign_ends_its_running_and_pending_tasks(tmp_path: Path) -> None:
    (tmp_path / "task.py").write_text(TASK_PY)
    (tmp_path / "grid.yaml").write_text(f"""
name: long
job:
  command: [python3, task.py]
  env: {{PROJECT: "{tmp_path}", SLEEP: "300"}}
  resources: {{nodes: 1, gpus_per_node: 0, time: "10:00"}}
parameters:
  grid: {{lr: [1, 2, 3]}}
""")
    campaign = hpc_tf(tmp_path, "campaign", "run", "grid.yaml", "--throttle", "2").stdout.strip()
    view = wait_status(tmp_path, campaign, lambda v: v["counts"]["main"] == {"RUNNING": 2, "PENDING": 1})
    running = [output(campaign, t, "main") for t in range(3) if (Path(campaign) / f"tasks/{t}/main/out.json").exists()]
    assert len(running) == 2 and {r["array"][0] for r in running} == {view["stages"][0]["jobs"][0]}
    cancelled = hpc_tf(tmp_path, "campaign", "cancel", campaign)
    assert f"cancelled {view['stages'][0]['jobs'][0]}" in cancelled.stderr
    view = wait_status(tmp_path, campaign, lambda v: v["finished"], timeout=60)
    assert view["counts"] == {"main": {"CANCELLED": 3}}
    for task in running:  # the training processes themselves are gone, not only their records
        wait_until(partial(lambda pid: not Path(f"/proc/{pid}").exists(), task["pid"]), f"process {task['pid']} to end")
    assert not (Path(campaign) / "tasks" / "2" / "main" / "out.json").exists()  # the pending one never started
