"""Submitting, watching, resubmitting and cancelling campaigns against recorded Slurm answers.

The scheduler is the real SlurmScheduler over a ReplayRunner: every sbatch/sacct/squeue/scancel
argv must be exactly the one recorded here, so these tests pin the Slurm calls a campaign makes.
The blocked-pipeline answers were recorded on the test cluster (tests/fixtures/campaign/slurm-22.05).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hpc.backends import Backend
from hpc.campaign import api
from hpc.campaign.load import load_campaign_text
from hpc.campaign.manifest import Manifest, read_manifest, write_manifest
from hpc.campaign.paths import CampaignPaths
from hpc.campaign.plan import CampaignPlan, plan_campaign
from hpc.campaign.status import BLOCKED
from hpc.campaign.submit import cancel_campaign, resubmit_failed, submit_campaign, write_campaign_dir
from hpc.errors import SchedulerCommandFailed
from hpc.scheduler import SlurmCli, SlurmScheduler, commands
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import RetryPolicy
from hpc.site.load import load_site

RECORDED = Path(__file__).parents[1] / "fixtures" / "campaign" / "slurm-22.05"
BLOCKED_SACCT = load_recording(RECORDED / "blocked-sacct.rec").result
BLOCKED_SQUEUE = load_recording(RECORDED / "blocked-squeue.rec").result
PIPELINE = """\
name: pipe
job:
  command: [python3, task.py]
  resources: {nodes: 2, tasks_per_node: 1, gpus_per_node: 1, partition: gpu, time: "2:00"}
parameters:
  list: [{x: 1}, {x: 2}, {x: 3}]
args: ["--x={x}"]
stages:
  - name: preprocess
    resources: {nodes: 1, gpus_per_node: 0, partition: cpu}
  - name: train
    after: [preprocess]
  - name: evaluate
    per_task: false
    resources: {nodes: 1, gpus_per_node: 0, partition: cpu}
    after: {train: afterok}
"""


def make_plan(tmp_path: Path, text: str = PIPELINE, **kwargs: object) -> CampaignPlan:
    env = {"HOME": str(tmp_path), "USER": "alice"}
    loaded = load_campaign_text(text, tmp_path / "campaign.yaml")
    (tmp_path / "campaign.yaml").write_text(text)
    site = load_site("sandbox", [f"runs_dir={tmp_path / 'runs'}"], environ=env)
    options: dict[str, object] = {"gpu_limit": 4, "max_array_size": 1001, **kwargs}
    return plan_campaign(loaded, site, "pipe-1", environ=env, **options)  # type: ignore[arg-type]


def scheduler(runner: ReplayRunner) -> SlurmScheduler:
    return SlurmScheduler(SlurmCli(runner, retry=RetryPolicy(attempts=1), sleep=lambda _: None))


def expect_sbatch(runner: ReplayRunner, script: Path, extra: list[str], job_id: str) -> None:
    runner.answer(commands.sbatch(script, extra), stdout=f"{job_id}\n")


def test_a_grid_is_one_throttled_array(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "name: g\njob: {command: [t], resources: {gpus_per_node: 2}}\n"
                               "parameters: {grid: {a: [1, 2, 3], b: [1, 2, 3, 4]}}\n")
    runner = ReplayRunner()
    expect_sbatch(runner, plan.paths.submission_script("main", 1), ["--array=0-11%2"], "300")
    submitted = submit_campaign(plan, Backend(scheduler(runner)))
    assert submitted.job_ids == ("300",)
    manifest = read_manifest(plan.paths)
    assert [t.stages["main"].attempts[0].job_id for t in manifest.tasks] == [f"300_{i}" for i in range(12)]
    assert manifest.submissions[0].throttle == 2 and manifest.stages[0].throttle == 2
    assert json.loads(plan.paths.task_file(11).read_text())["params"] == {"a": 3, "b": 4}


def test_a_pipeline_is_submitted_in_order_with_its_dependencies(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    runner = ReplayRunner()
    stage = plan.paths.submission_script
    expect_sbatch(runner, stage("preprocess", 1), ["--array=0-2"], "100")
    expect_sbatch(runner, stage("train", 1), ["--array=0-2%2", "--dependency=aftercorr:100"], "101")
    expect_sbatch(runner, stage("evaluate", 1), ["--dependency=afterok:101"], "102")
    submit_campaign(plan, Backend(scheduler(runner)))
    assert runner.count("sbatch") == 3
    manifest = read_manifest(plan.paths)
    assert [(s.stage, s.job_id, s.after) for s in manifest.submissions] == [
        ("preprocess", "100", []), ("train", "101", [("aftercorr", ["100"])]),
        ("evaluate", "102", [("afterok", ["101"])])]
    assert manifest.stage("evaluate").job is not None and manifest.stage("evaluate").job.attempts[0].job_id == "102"
    for name in ("preprocess", "train", "evaluate"):
        assert plan.paths.stage(name).resolved.is_file() and plan.paths.stage(name).bootstrap.is_file()


def test_a_failed_submission_cancels_what_was_submitted(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    runner = ReplayRunner()
    stage = plan.paths.submission_script
    expect_sbatch(runner, stage("preprocess", 1), ["--array=0-2"], "100")
    runner.answer(commands.sbatch(stage("train", 1), ["--array=0-2%2", "--dependency=aftercorr:100"]), returncode=1,
                  stderr="sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    runner.answer(["scancel", "100"])
    with pytest.raises(SchedulerCommandFailed, match="Invalid partition name"):
        submit_campaign(plan, Backend(scheduler(runner)))
    manifest = read_manifest(plan.paths)
    assert manifest.error is not None and "cancelled the 1 job(s) already submitted" in manifest.error
    assert [s.job_id for s in manifest.submissions] == ["100"]


def test_a_first_submission_that_fails_leaves_no_campaign(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    runner = ReplayRunner()
    runner.answer(commands.sbatch(plan.paths.submission_script("preprocess", 1), ["--array=0-2"]), returncode=1,
                  stderr="sbatch: error: Batch job submission failed: Invalid account or account/partition\n")
    with pytest.raises(SchedulerCommandFailed):
        submit_campaign(plan, Backend(scheduler(runner)))
    assert not plan.paths.root.exists() and list((tmp_path / "runs").iterdir()) == []


def recorded_campaign(tmp_path: Path) -> CampaignPaths:
    """The pipeline of the recording, submitted as jobs 468 (preprocess), 469 (train), 470 (evaluate),
    every attempt as it was right after sbatch (pending, nothing known yet)."""
    plan = make_plan(tmp_path)
    paths = write_campaign_dir(plan)
    text = (RECORDED / "blocked-manifest.json").read_text().replace("@ROOT@", str(paths.root))
    manifest = Manifest.model_validate_json(text)
    for ref in manifest.all_units():
        for attempt in ref.unit.attempts:
            attempt.state, attempt.reason, attempt.exit_code, attempt.raw_id = "PENDING", None, None, None
    manifest.poll.last_at = None
    write_manifest(paths, manifest)
    return paths


def test_status_shows_the_failure_and_what_it_blocks_from_one_query(tmp_path: Path) -> None:
    paths = recorded_campaign(tmp_path)
    runner = ReplayRunner([BLOCKED_SACCT, BLOCKED_SQUEUE])
    view = api.status(paths, scheduler(runner))
    assert [argv[0] for argv in runner.calls] == ["sacct", "squeue"]
    assert view.counts == {"preprocess": {"COMPLETED": 2, "FAILED": 1}, "train": {"COMPLETED": 2, BLOCKED: 1},
                           "evaluate": {BLOCKED: 1}}
    (failure,) = view.failures
    assert (failure.stage, failure.task_id, failure.exit_code, failure.job_id) == ("preprocess", 1, 3, "468_1")
    assert failure.log == str(paths.stage("preprocess").batch_log("474")) and failure.params == {"x": 2}
    train, evaluate = view.blocked
    assert (train.stage, train.task_id, train.reason) == ("train", 1, "DependencyNeverSatisfied")
    assert "never start" in train.explanation
    assert (evaluate.stage, evaluate.task_id, evaluate.reason) == ("evaluate", None, "Dependency")
    assert view.clear_blocked == [f"hpc-tf campaign resubmit {paths.root} --failed",
                                  f"hpc-tf campaign cancel {paths.root} --blocked"]
    assert not view.finished and view.queried
    saved = read_manifest(paths)  # the states are kept: finished units are never asked about again
    assert saved.tasks[1].stages["preprocess"].attempts[0].state == "FAILED"


def test_resubmit_failed_reruns_the_failed_task_and_replaces_the_blocked_ones(tmp_path: Path) -> None:
    paths = recorded_campaign(tmp_path)
    runner = ReplayRunner([BLOCKED_SACCT, BLOCKED_SQUEUE])
    runner.answer(["scancel", "469_1", "470"])
    script = CampaignPaths.submission_script
    expect_sbatch(runner, script(paths, "preprocess", 2), ["--array=1"], "500")
    expect_sbatch(runner, script(paths, "train", 2), ["--array=1%2", "--dependency=aftercorr:500"], "501")
    expect_sbatch(runner, script(paths, "evaluate", 2), ["--dependency=afterok:501"], "502")
    result = resubmit_failed(paths, Backend(scheduler(runner)))
    assert [argv[0] for argv in runner.calls] == ["sacct", "squeue", "scancel", "sbatch", "sbatch", "sbatch"]
    assert result.rerun == {"preprocess": (1,), "train": (1,), "evaluate": (None,)}
    assert result.cancelled == ("469_1", "470") and result.job_ids == ("500", "501", "502")
    manifest = read_manifest(paths)
    assert [a.job_id for a in manifest.tasks[1].stages["train"].attempts] == ["469_1", "501_1"]
    assert manifest.tasks[1].stages["train"].attempts[0].state == "CANCELLED"
    assert [a.job_id for a in manifest.tasks[0].stages["train"].attempts] == ["469_0"]  # not touched
    assert "export HPC_TF_TASK_OFFSET=0" in script(paths, "train", 2).read_text()


def test_resubmit_with_nothing_failed_submits_nothing(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "name: g\njob: {command: [t]}\nparameters: {grid: {a: [1, 2]}}\n")
    runner = ReplayRunner()
    expect_sbatch(runner, plan.paths.submission_script("main", 1), ["--array=0-1"], "300")
    submit_campaign(plan, Backend(scheduler(runner)))
    runner.answer(commands.sacct(["300"]), stdout=(
        "300_0|301|COMPLETED|0:0|0:0|00:00:01|00:02:00|1|node1|billing=1|billing=1|None|gpu|lab|x|x|x\n"
        "300_1|300|COMPLETED|0:0|0:0|00:00:01|00:02:00|1|node1|billing=1|billing=1|None|gpu|lab|x|x|x\n"))
    result = resubmit_failed(plan.paths, Backend(scheduler(runner)))
    assert result.rerun == {} and runner.count("sbatch") == 1 and runner.count("squeue") == 0


def test_status_backs_off_and_never_asks_about_finished_tasks(tmp_path: Path) -> None:
    paths = recorded_campaign(tmp_path)
    runner = ReplayRunner([BLOCKED_SACCT, BLOCKED_SQUEUE])
    # once preprocessing has finished, only the arrays with unfinished tasks are asked about
    live = "".join(line + "\n" for line in BLOCKED_SACCT.stdout.splitlines() if not line.startswith("468"))
    runner.answer(commands.sacct(["469", "470"]), stdout=live)
    now = [1000.0]
    sched = scheduler(runner)

    def status() -> bool:
        return api.status(paths, sched, clock=lambda: now[0]).queried

    assert status() and len(runner.calls) == 2
    now[0] += 1.0
    assert not status() and len(runner.calls) == 2  # within 2 s: the manifest answers
    intervals = []
    for _ in range(4):  # nothing changes: the interval grows
        now[0] += 100.0
        assert status()
        intervals.append(read_manifest(paths).poll.interval_s)
    assert intervals == sorted(intervals) and intervals[0] < intervals[-1]
    sacct_calls = [argv[-1] for argv in runner.calls if argv[0] == "sacct"]
    assert sacct_calls == ["--jobs=468,469,470"] + ["--jobs=469,470"] * 4


def test_cancel_cancels_every_unfinished_job_in_one_call(tmp_path: Path) -> None:
    paths = recorded_campaign(tmp_path)
    runner = ReplayRunner([BLOCKED_SACCT, BLOCKED_SQUEUE])
    runner.answer(["scancel", "468", "469", "470"])
    assert cancel_campaign(paths, Backend(scheduler(runner))) == ["468", "469", "470"]
    assert runner.calls == [("scancel", "468", "469", "470")]
    runner2 = ReplayRunner([BLOCKED_SACCT, BLOCKED_SQUEUE])
    runner2.answer(["scancel", "469_1", "470"])
    assert cancel_campaign(paths, Backend(scheduler(runner2)), blocked_only=True) == ["469_1", "470"]


def test_status_of_a_thousand_tasks_is_one_query(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "name: k\njob: {command: [t], resources: {partition: cpu}}\n"
                               f"parameters: {{grid: {{i: {list(range(1000))}}}}}\n", throttle=2)
    runner = ReplayRunner()
    expect_sbatch(runner, plan.paths.submission_script("main", 1), ["--array=0-999%2"], "900")
    submit_campaign(plan, Backend(scheduler(runner)))
    tres = "billing=1,cpu=1,mem=1000M,node=1"
    done = f"|0:0|00:00:01|00:02:00|1|cpu1|{tres}|{tres}|None|cpu|lab|"
    rows = [f"900_{i}|{1000 + i}|COMPLETED|0:0{done}2026-11-24T22:09:19|2026-11-24T22:09:19|2026-11-24T22:09:21"
            for i in range(10) if i != 7]
    rows.append(f"900_7|1007|FAILED|3:0{done}2026-11-24T22:09:19|2026-11-24T22:09:19|2026-11-24T22:09:21")
    rows.append("900_[10-999%2]|900|PENDING|0:0|0:0|00:00:00|00:02:00|1|None assigned||billing=1,cpu=1,mem=1000M,"
                "node=1|JobArrayTaskLimit|cpu|lab|2026-11-24T22:09:19|Unknown|Unknown")
    runner.answer(commands.sacct(["900"]), stdout="\n".join(rows) + "\n")
    runner.answer(commands.squeue(["900"]), stdout=(
        "900_10|1010|RUNNING|cpu=1,mem=1000M,node=1,billing=1|0|1|cpu1|0:01|2:00|cpu|lab|None\n"
        "900_11|1011|RUNNING|cpu=1,mem=1000M,node=1,billing=1|0|1|cpu1|0:01|2:00|cpu|lab|None\n"
        "900_[12-999%2]|900|PENDING|cpu=1,mem=1000M,node=1,billing=1|0|1||0:00|2:00|cpu|lab|JobArrayTaskLimit\n"))
    started = time.monotonic()
    view = api.status(plan.paths, scheduler(runner))
    elapsed = time.monotonic() - started
    assert [argv[0] for argv in runner.calls] == ["sbatch", "sacct", "squeue"]
    assert view.counts == {"main": {"COMPLETED": 9, "FAILED": 1, "RUNNING": 2, "PENDING": 988}}
    assert [f.task_id for f in view.failures] == [7]
    assert elapsed < 1.0


def test_failed_tasks_in_several_chunks_rerun_at_their_own_array_indices(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "name: c\njob: {command: [t], resources: {partition: cpu}}\n"
                               "parameters: {grid: {i: [0, 1, 2, 3, 4]}}\n", chunk_size=2)
    runner = ReplayRunner()
    script = plan.paths.submission_script
    for number, (array, job_id) in enumerate((("0-1", "10"), ("0-1", "11"), ("0", "12")), start=1):
        expect_sbatch(runner, script("main", number), [f"--array={array}"], job_id)
    submit_campaign(plan, Backend(scheduler(runner)))
    rest = "00:00:01|00:02:00|1|cpu1|billing=1|billing=1|None|cpu|lab|x|x|x"
    states = {"10_0": ("COMPLETED", "0:0"), "10_1": ("FAILED", "1:0"), "11_0": ("COMPLETED", "0:0"),
              "11_1": ("COMPLETED", "0:0"), "12_0": ("FAILED", "2:0")}
    runner.answer(commands.sacct(["10", "11", "12"]), stdout="".join(
        f"{job}|{100 + n}|{state}|{code}|{code}|{rest}\n" for n, (job, (state, code)) in enumerate(states.items())))
    expect_sbatch(runner, script("main", 4), ["--array=1"], "20")
    expect_sbatch(runner, script("main", 5), ["--array=0"], "21")  # task 4 is index 0 of the chunk at 4
    result = resubmit_failed(plan.paths, Backend(scheduler(runner)))
    assert result.rerun == {"main": (1, 4)} and result.job_ids == ("20", "21")
    assert "export HPC_TF_TASK_OFFSET=4" in script("main", 5).read_text()
    manifest = read_manifest(plan.paths)
    assert manifest.tasks[4].stages["main"].attempts[-1].job_id == "21_0"
    assert [(s.offset, s.task_ids, s.purpose) for s in manifest.submissions[3:]] == [
        (0, [1], "resubmit"), (4, [4], "resubmit")]
