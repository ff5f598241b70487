"""Campaigns on the real test cluster, through the ``hpc-tf campaign`` commands a researcher types.

Slurm's own accounting (sacct, as root) is the independent witness: how many tasks ran at once,
on which partitions and nodes, in which order, which array indices a resubmission holds.
Tasks are tiny Python scripts (seconds): other tests share the cluster's two cores and GPU quota.

With HPC_TF_RECORD_CAMPAIGN_FIXTURES=DIR the scheduler query of the blocked-pipeline scenario and
its manifest are written to DIR for the unit tests (tests/fixtures/campaign/slurm-22.05).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hpc.metrics import read_metrics
from hpc.scheduler import SlurmCli, SlurmScheduler, commands
from hpc.scheduler.replay import format_recording
from hpc.scheduler.run import CommandResult, subprocess_runner
from tests._readme import readme_argv
from tests._shims import CallLog
from tests._slurm_probes import diagnostics

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = pytest.mark.slurm

Run = Callable[..., subprocess.CompletedProcess[str]]
REPO = Path(__file__).resolve().parents[2]
RECORD_DIR = os.environ.get("HPC_TF_RECORD_CAMPAIGN_FIXTURES")

# A task: writes what it was given into its output dir, fails on request, sleeps a little.
TASK_PY = """\
import json, os, sys, time
out = os.environ["HPC_TF_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
rank = int(os.environ.get("SLURM_PROCID", "0"))
record = {"argv": sys.argv[1:], "task": os.environ.get("HPC_TF_TASK_ID"), "params": os.environ.get("HPC_TF_PARAMS"),
          "nodes": os.environ.get("SLURM_JOB_NUM_NODES"), "host": os.uname().nodename,
          "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}
stage = os.path.basename(out) if os.environ.get("HPC_TF_TASK_ID") else "evaluate"
task_dir = os.environ.get("HPC_TF_TASK_DIR")
if stage == "train":  # reads what its own preprocessing task wrote
    with open(os.path.join(task_dir, "preprocess", "out.json")) as fh:
        record["input"] = json.load(fh)["task"]
if stage == "evaluate":  # reads every training task's output
    campaign = os.environ["HPC_TF_CAMPAIGN_DIR"]
    tasks = sorted(os.listdir(os.path.join(campaign, "tasks")), key=int)
    record["inputs"] = [json.load(open(os.path.join(campaign, "tasks", t, "train", "out.json")))["task"]
                        for t in tasks]
if rank == 0:
    with open(os.path.join(out, "out.json"), "w") as fh:
        json.dump(record, fh)
marker = os.path.join(os.environ["PROJECT"], f"fail-{stage}-{os.environ.get('HPC_TF_TASK_ID')}")
if os.path.exists(marker):
    print("failing on purpose:", marker, file=sys.stderr)
    sys.exit(3)
time.sleep(float(os.environ.get("SLEEP", "1")))
"""


@pytest.fixture
def project(scratch_dir: Path, slurm_cluster: SlurmCluster) -> Path:
    (scratch_dir / "task.py").write_text(TASK_PY)
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    return scratch_dir


def write(project: Path, name: str, text: str, user: str) -> Path:
    path = project / name
    path.write_text(text)
    shutil.chown(path, user)
    return path


def hpc_tf(researcher_run: Run, project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return researcher_run(["hpc-tf", *args, "--site", "sandbox", "--set", f"runs_dir={project / 'runs'}"],
                          cwd=project, check=check, timeout=180)


def status(researcher_run: Run, project: Path, campaign: str) -> dict[str, Any]:
    result = hpc_tf(researcher_run, project, "campaign", "status", campaign, "--json", "--refresh")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def wait_status(
    researcher_run: Run, project: Path, campaign: str, until: Callable[[dict[str, Any]], bool], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = status(researcher_run, project, campaign)
        if until(view):
            return view
        if time.monotonic() > deadline:
            pytest.fail(f"campaign {campaign} not there after {timeout} s: {json.dumps(view, indent=1)}")
        time.sleep(2)


def manifest(campaign: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(campaign) / "manifest.json").read_text())
    return data


def sacct_rows(job_ids: Sequence[str]) -> list[dict[str, str]]:
    """Accounting records of every array task (as root: the witness, not the code under test)."""
    fields = ["JobID", "JobIDRaw", "State", "ExitCode", "Partition", "NNodes", "NodeList", "AllocTRES", "Start",
              "End"]
    out = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", f"--format={','.join(fields)}",
                          f"--jobs={','.join(job_ids)}"], capture_output=True, text=True, check=True, timeout=30)
    return [dict(zip(fields, line.split("|"), strict=True)) for line in out.stdout.splitlines() if line]


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def gpus(row: dict[str, str]) -> int:
    tres = dict(item.split("=", 1) for item in row["AllocTRES"].split(",") if "=" in item)
    return int(tres.get("gres/gpu", "0"))


def max_concurrent(rows: Sequence[dict[str, str]], weight: Callable[[dict[str, str]], int]) -> int:
    """The most held at once, from start/end times (intervals [start, end): one ending as another starts
    in the same second does not overlap it)."""
    events = sorted([(seconds(r["Start"]), 1, weight(r)) for r in rows] + [(seconds(r["End"]), 0, -weight(r))
                                                                         for r in rows])
    held = peak = 0
    for _, _, delta in events:
        held += delta
        peak = max(peak, held)
    return peak


def job_ids(campaign: str, stage: str) -> list[str]:
    return [s["job_id"] for s in manifest(campaign)["submissions"] if s["stage"] == stage]


# ------------------------------------------------------------------------------------------- tests


def test_grid_runs_as_one_throttled_array(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster
) -> None:
    """3 x 4 grid → one 12-task array; 2 GPUs per task under a 4-GPU quota → at most 2 tasks at once."""
    per_task = 2
    write(project, "grid.yaml", f"""
name: grid
job:
  command: [python3, task.py]
  env: {{PROJECT: "{project}", SLEEP: "2"}}
  resources: {{nodes: 1, gpus_per_node: {per_task}, partition: {slurm_cluster.gpu_partition}, time: "2:00"}}
parameters:
  grid: {{lr: [0.1, 0.01, 0.001], seed: [1, 2, 3, 4]}}
args: ["--lr={{lr}}", "--seed", "{{seed}}"]
""", slurm_cluster.user)
    # no --gpu-limit: the throttle comes from the account's GrpTRES, read by hpc.quota
    launched = hpc_tf(researcher_run, project, "campaign", "run", "grid.yaml")
    campaign = launched.stdout.strip()
    assert f"GPU quota {slurm_cluster.gpu_quota}" in " ".join(launched.stderr.split())
    data = manifest(campaign)
    assert len(data["submissions"]) == 1 and data["submissions"][0]["task_ids"] == list(range(12))
    throttle = slurm_cluster.gpu_quota // per_task
    assert data["stages"][0]["throttle"] == throttle
    view = wait_status(researcher_run, project, campaign, lambda v: v["finished"])
    assert view["counts"] == {"main": {"COMPLETED": 12}}

    rows = sacct_rows(job_ids(campaign, "main"))
    array = data["submissions"][0]["job_id"]
    assert sorted(r["JobID"] for r in rows) == sorted(f"{array}_{i}" for i in range(12))
    assert max_concurrent(rows, gpus) <= slurm_cluster.gpu_quota
    assert max_concurrent(rows, lambda r: 1) <= throttle
    assert all(gpus(r) == per_task for r in rows)
    # every task got its own parameters, as arguments and in the environment
    for task in data["tasks"]:
        out = json.loads((Path(task["stages"]["main"]["output_dir"]) / "out.json").read_text())
        params = task["params"]
        assert out["argv"] == [f"--lr={params['lr']}", "--seed", str(params["seed"])]
        assert json.loads(out["params"]) == params and out["task"] == str(task["id"])


def plan_of(stderr: str) -> str:
    """The plan ``campaign run`` prints, whitespace joined, up to the campaign directory (which differs)."""
    text = " ".join(stderr.split())
    start, end = text.find("campaign "), text.find("; directory ")
    assert 0 <= start < end, stderr
    return text[start:end]


@pytest.mark.tf
def test_the_readme_campaign_plans_what_it_submits_and_trains_every_grid_point(
    researcher_run: Run, scratch_dir: Path, slurm_cluster: SlurmCluster
) -> None:
    """README.md's Campaigns block on examples/quickstart/campaign.yaml as shipped (12 TensorFlow trainings of
    train.py, one array): the dry run plans exactly what the real run submits (Slurm's record of the array
    is the witness); status asks Slurm at most twice (sacct, squeue); once every task completed, resubmit
    --failed and cancel have nothing to do. Real failures resubmitted: test_resubmit_failed_reruns_exactly…"""
    shutil.copytree(REPO / "examples" / "quickstart", scratch_dir / "examples" / "quickstart")
    shims = CallLog.create(scratch_dir / "shims", ("sacct", "squeue", "scontrol", "sacctmgr", "sbatch", "scancel"))
    subprocess.run(["chown", "-R", slurm_cluster.user, str(scratch_dir)], check=True)
    site = ["--site", "sandbox", "--set", f"runs_dir={scratch_dir / 'runs'}"]
    env = {"PATH": f"{shims.bin}:{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin"}

    def readme(text: str, *more: str, **placeholders: str) -> subprocess.CompletedProcess[str]:
        return researcher_run([*readme_argv(text, **placeholders), *more, *site], cwd=scratch_dir, env=env,
                              timeout=180)

    run = "hpc-tf campaign run examples/quickstart/campaign.yaml"
    dry = readme(run, "--dry-run")
    assert not (scratch_dir / "runs").exists()
    launched = readme(run)
    campaign = launched.stdout.strip()
    assert plan_of(dry.stderr) == plan_of(launched.stderr)  # the same reads, the same arrays and throttles
    planned = re.search(r"main: array .*; (\d+) at once \(GPU quota (\d+),", plan_of(dry.stderr))
    assert planned and int(planned.group(2)) == slurm_cluster.gpu_quota, dry.stderr
    (array,) = job_ids(campaign, "main")
    shown = subprocess.run(["scontrol", "show", "job", array], capture_output=True, text=True, timeout=30).stdout
    assert f"ArrayTaskThrottle={planned.group(1)}" in shown, shown  # what Slurm was really given

    shims.reset()
    status = readme("hpc-tf campaign status DIR", DIR=campaign)
    assert f"({len(manifest(campaign)['tasks'])} task(s))" in status.stdout, status.stdout
    calls = shims.counts()
    assert set(calls) <= {"sacct", "squeue"} and all(n == 1 for n in calls.values()), calls

    view = wait_status(researcher_run, project=scratch_dir, campaign=campaign, until=lambda v: v["finished"],
                       timeout=600)
    assert view["counts"] == {"main": {"COMPLETED": 12}}
    rows = sacct_rows(job_ids(campaign, "main"))
    assert max_concurrent(rows, gpus) <= slurm_cluster.gpu_quota
    assert max_concurrent(rows, lambda r: 1) <= int(planned.group(1))
    for task in manifest(campaign)["tasks"]:
        out = Path(task["stages"]["main"]["output_dir"])
        history = json.loads((out / "history.json").read_text())
        assert len(history["loss"]) == task["params"]["epochs"]  # its own --epochs reached train.py
        assert (out / "export" / "saved_model.pb").is_file()
        # recorded with no code in train.py, into the task's own file: exactly what Keras' History holds
        recorded = read_metrics(out / "metrics.jsonl")
        assert [p.value for p in recorded.series("loss")] == history["loss"]
    results = readme("hpc-tf campaign results DIR", DIR=campaign)
    assert len(re.findall(r"COMPLETED", results.stdout)) == 12, results.stdout
    best = re.search(r"best: task (\d+) \(", results.stderr)
    assert best, results.stderr
    losses = {t["id"]: min(json.loads((Path(t["stages"]["main"]["output_dir"]) / "history.json").read_text())["loss"])
              for t in manifest(campaign)["tasks"]}
    assert losses[int(best.group(1))] == min(losses.values())  # the one with the lowest loss is named
    assert "nothing failed: nothing resubmitted" in readme("hpc-tf campaign resubmit DIR --failed",
                                                          DIR=campaign).stderr
    assert "nothing to cancel" in readme("hpc-tf campaign cancel DIR", DIR=campaign).stderr


def test_pipeline_runs_in_order_on_the_right_partitions(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster
) -> None:
    """CPU preprocess (array) → 2-node GPU training (aftercorr) → CPU evaluation (one job, afterok)."""
    write(project, "pipeline.yaml", pipeline_yaml(project, slurm_cluster, tasks=2), slurm_cluster.user)
    campaign = hpc_tf(researcher_run, project, "campaign", "run", "pipeline.yaml").stdout.strip()
    view = wait_status(researcher_run, project, campaign, lambda v: v["finished"])
    assert view["counts"] == {"preprocess": {"COMPLETED": 2}, "train": {"COMPLETED": 2},
                              "evaluate": {"COMPLETED": 1}}

    pre = {r["JobID"].split("_")[1]: r for r in sacct_rows(job_ids(campaign, "preprocess"))}
    train = {r["JobID"].split("_")[1]: r for r in sacct_rows(job_ids(campaign, "train"))}
    (evaluate,) = sacct_rows(job_ids(campaign, "evaluate"))
    for index in ("0", "1"):
        assert (pre[index]["Partition"], pre[index]["NodeList"]) == (slurm_cluster.cpu_partition, "cpu1")
        assert train[index]["Partition"] == slurm_cluster.gpu_partition and train[index]["NNodes"] == "2"
        assert seconds(train[index]["Start"]) >= seconds(pre[index]["End"])
    assert evaluate["Partition"] == slurm_cluster.cpu_partition
    assert seconds(evaluate["Start"]) >= max(seconds(r["End"]) for r in train.values())
    # data flowed along the pipeline: train read its own preprocess output, evaluate read every training output
    root = Path(campaign)
    assert json.loads((root / "tasks" / "1" / "train" / "out.json").read_text())["input"] == "1"
    evaluated = json.loads((root / "stages" / "evaluate" / "output" / "out.json").read_text())
    assert evaluated["inputs"] == ["0", "1"]


def pipeline_yaml(project: Path, cluster: SlurmCluster, tasks: int) -> str:
    return f"""
name: pipe
job:
  command: [python3, task.py]
  env: {{PROJECT: "{project}", SLEEP: "1"}}
  resources: {{nodes: 2, tasks_per_node: 1, gpus_per_node: 1, partition: {cluster.gpu_partition}, time: "2:00"}}
parameters:
  list: {json.dumps([{"x": i + 1} for i in range(tasks)])}
args: ["--x={{x}}"]
stages:
  - name: preprocess
    resources: {{nodes: 1, gpus_per_node: 0, partition: {cluster.cpu_partition}}}
  - name: train
    after: [preprocess]
  - name: evaluate
    per_task: false
    resources: {{nodes: 1, gpus_per_node: 0, partition: {cluster.cpu_partition}}}
    after: {{train: afterok}}
"""


def test_failed_preprocessing_blocks_its_training_task_until_resubmitted(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster
) -> None:
    write(project, "pipeline.yaml", pipeline_yaml(project, slurm_cluster, tasks=3), slurm_cluster.user)
    marker = write(project, "fail-preprocess-1", "", slurm_cluster.user)
    campaign = hpc_tf(researcher_run, project, "campaign", "run", "pipeline.yaml",
                      "--gpu-limit", str(slurm_cluster.gpu_quota)).stdout.strip()

    def settled(view: dict[str, Any]) -> bool:
        counts = view["counts"]
        return counts["train"].get("COMPLETED") == 2 and counts["train"].get("BLOCKED") == 1

    view = wait_status(researcher_run, project, campaign, settled)
    assert view["counts"]["preprocess"] == {"COMPLETED": 2, "FAILED": 1}
    assert view["counts"]["evaluate"] == {"BLOCKED": 1}
    assert [(f["stage"], f["task_id"], f["exit_code"]) for f in view["failures"]] == [("preprocess", 1, 3)]
    assert Path(view["failures"][0]["log"]).is_file()
    blocked = {(b["stage"], b["task_id"]): b for b in view["blocked"]}
    assert set(blocked) == {("train", 1), ("evaluate", None)}
    assert blocked[("train", 1)]["reason"] == "DependencyNeverSatisfied"
    assert f"hpc-tf campaign resubmit {campaign} --failed" in view["clear_blocked"]
    table = hpc_tf(researcher_run, project, "campaign", "status", campaign).stdout
    assert "BLOCKED" in table and "clear them with" in table

    if RECORD_DIR:
        record_blocked_scenario(Path(RECORD_DIR), campaign, slurm_cluster, project)

    marker.unlink()
    hpc_tf(researcher_run, project, "campaign", "resubmit", campaign, "--failed")
    reruns = [s for s in manifest(campaign)["submissions"] if s["purpose"] == "resubmit"]
    assert [(s["stage"], s["task_ids"]) for s in reruns] == [("preprocess", [1]), ("train", [1]), ("evaluate", [])]
    view = wait_status(researcher_run, project, campaign, lambda v: v["finished"])
    assert view["counts"] == {"preprocess": {"COMPLETED": 3}, "train": {"COMPLETED": 3}, "evaluate": {"COMPLETED": 1}}
    assert [r["JobID"] for r in sacct_rows([reruns[0]["job_id"]])] == [f"{reruns[0]['job_id']}_1"]
    evaluated = json.loads((Path(campaign) / "stages" / "evaluate" / "output" / "out.json").read_text())
    assert evaluated["inputs"] == ["0", "1", "2"]


def test_resubmit_failed_reruns_exactly_the_failed_ids(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster
) -> None:
    write(project, "six.yaml", f"""
name: six
job:
  command: [python3, task.py]
  env: {{PROJECT: "{project}", SLEEP: "0"}}
  resources: {{nodes: 1, partition: {slurm_cluster.cpu_partition}, time: "2:00"}}
parameters:
  grid: {{n: [0, 1, 2, 3, 4, 5]}}
""", slurm_cluster.user)
    markers = [write(project, f"fail-main-{i}", "", slurm_cluster.user) for i in (1, 4)]
    campaign = hpc_tf(researcher_run, project, "campaign", "run", "six.yaml").stdout.strip()
    view = wait_status(researcher_run, project, campaign, lambda v: v["finished"])
    assert view["counts"] == {"main": {"COMPLETED": 4, "FAILED": 2}}
    for marker in markers:
        marker.unlink()
    new_ids = hpc_tf(researcher_run, project, "campaign", "resubmit", campaign, "--failed").stdout.split()
    assert len(new_ids) == 1
    view = wait_status(researcher_run, project, campaign, lambda v: v["finished"])
    assert view["counts"] == {"main": {"COMPLETED": 6}}
    assert sorted(r["JobID"] for r in sacct_rows(new_ids)) == [f"{new_ids[0]}_1", f"{new_ids[0]}_4"]
    attempts = {t["id"]: [a["job_id"] for a in t["stages"]["main"]["attempts"]] for t in manifest(campaign)["tasks"]}
    assert [len(a) for a in attempts.values()] == [1, 2, 1, 1, 2, 1]
    assert attempts[4][-1] == f"{new_ids[0]}_4"
    # nothing failed any more: nothing to resubmit
    again = hpc_tf(researcher_run, project, "campaign", "resubmit", campaign, "--failed")
    assert again.stdout.strip() == "" and "nothing failed" in again.stderr


def test_a_campaign_larger_than_an_array_is_split_and_tracked_as_one(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster
) -> None:
    """MaxArraySize cannot be changed on the shared cluster: a chunk size of 3 stands in for it."""
    write(project, "seven.yaml", f"""
name: seven
job:
  command: [python3, task.py]
  env: {{PROJECT: "{project}", SLEEP: "0"}}
  resources: {{nodes: 1, partition: {slurm_cluster.cpu_partition}, time: "2:00"}}
parameters:
  zip: {{a: [10, 11, 12, 13, 14, 15, 16], b: [x, y, z, x, y, z, x]}}
""", slurm_cluster.user)
    campaign = hpc_tf(researcher_run, project, "campaign", "run", "seven.yaml", "--chunk-size", "3").stdout.strip()
    data = manifest(campaign)
    assert [(s["offset"], s["task_ids"]) for s in data["submissions"]] == [(0, [0, 1, 2]), (3, [3, 4, 5]), (6, [6])]
    view = wait_status(researcher_run, project, campaign, lambda v: v["finished"])
    assert view["counts"] == {"main": {"COMPLETED": 7}} and view["tasks"] == 7
    rows = sacct_rows(job_ids(campaign, "main"))
    assert sorted(r["JobID"].split("_")[1] for r in rows) == ["0", "0", "0", "1", "1", "2", "2"]
    for task in data["tasks"]:
        out = json.loads((Path(task["dir"]) / "main" / "out.json").read_text())
        assert out["task"] == str(task["id"])
        assert out["argv"] == ["--a", str(task["params"]["a"]), "--b", task["params"]["b"]]


def test_status_of_a_thousand_tasks_is_one_query_under_a_second(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster
) -> None:
    write(project, "thousand.yaml", f"""
name: thousand
job:
  command: [python3, task.py]
  env: {{PROJECT: "{project}", SLEEP: "0"}}
  resources: {{nodes: 1, partition: {slurm_cluster.cpu_partition}, time: "2:00"}}
parameters:
  grid: {{i: {list(range(1000))}}}
""", slurm_cluster.user)
    campaign = hpc_tf(researcher_run, project, "campaign", "run", "thousand.yaml", "--throttle", "2").stdout.strip()
    try:
        wait_status(researcher_run, project, campaign, lambda v: v["counts"]["main"].get("COMPLETED", 0) >= 4)
        scheduler = SlurmScheduler()
        measurements: list[tuple[float, dict[str, int]]] = []
        for _ in range(5):  # other tests use the controller too: keep the quietest of a few tries
            before = diagnostics(scheduler.cli).rpc_by_type
            started = time.monotonic()
            view = status(researcher_run, project, campaign)
            elapsed = time.monotonic() - started
            after = diagnostics(scheduler.cli).rpc_by_type
            delta = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
            measurements.append((elapsed, delta))
            if job_info_rpcs(delta) == 1 and elapsed < 1.0:
                break
        # squeue's one job-info RPC (REQUEST_JOB_INFO, or _SINGLE for one id); sacct asks slurmdbd, not
        # the controller. One per task would be a thousand.
        assert min(job_info_rpcs(d) for _, d in measurements) == 1, measurements
        assert min(e for e, _ in measurements) < 1.0, measurements
        assert view["tasks"] == 1000 and sum(view["counts"]["main"].values()) == 1000
    finally:
        hpc_tf(researcher_run, project, "campaign", "cancel", campaign)
    view = wait_status(researcher_run, project, campaign, lambda v: v["finished"], timeout=60)
    assert view["counts"]["main"].get("CANCELLED", 0) > 900


def job_info_rpcs(delta: dict[str, int]) -> int:
    return sum(n for name, n in delta.items() if name.startswith("REQUEST_JOB_INFO"))


# ---------------------------------------------------------------------------------------- fixtures


def record_blocked_scenario(out: Path, campaign: str, cluster: SlurmCluster, project: Path) -> None:
    """The manifest and one scheduler query (sacct + squeue, as the user) of the blocked pipeline."""
    out.mkdir(parents=True, exist_ok=True)
    data = manifest(campaign)
    ids = list(dict.fromkeys(s["job_id"] for s in data["submissions"]))
    home = pwd.getpwnam(cluster.user).pw_dir
    results: list[CommandResult] = []

    def runner(argv: Sequence[str], timeout: float) -> CommandResult:
        env = ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", f"USER={cluster.user}"]
        done = subprocess_runner(["runuser", "-u", cluster.user, "--", *env, *argv], timeout)
        result = CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)
        results.append(result)
        return result

    SlurmScheduler(SlurmCli(runner)).query(ids)
    note = "blocked pipeline of tests/integration/test_campaign_slurm.py (preprocess task 1 failed)"
    for result in results:
        (out / f"blocked-{result.argv[0]}.rec").write_text(format_recording(result, note))
    assert results[0].argv == tuple(commands.sacct(ids))
    text = (Path(campaign) / "manifest.json").read_text().replace(str(Path(campaign)), "@ROOT@")
    (out / "blocked-manifest.json").write_text(text.replace(str(project), "@PROJECT@"))
