"""Planning a campaign: array chunks from MaxArraySize, throttles from the GPU quota, dependencies,
and task parameters that reach the command exactly (JSON → execve, no shell quoting on the way)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpc.campaign.api import max_array_size, plan_from_file
from hpc.campaign.load import load_campaign_text
from hpc.campaign.plan import (
    CampaignPlan,
    StageRef,
    chunk_size_for,
    chunks,
    plan_campaign,
)
from hpc.campaign.throttle import GPU_LIMITS, StageDemand, compute_throttles
from hpc.errors import HpcTfError, QuotaRefused, SchedulerUnavailable
from hpc.local.scheduler import LocalScheduler
from hpc.resolve import ResolvedJob
from hpc.scheduler import SlurmCli, SlurmScheduler
from hpc.scheduler.commands import array_option, dependency_option
from hpc.scheduler.replay import ReplayRunner, load_recording
from hpc.scheduler.run import RetryPolicy
from hpc.site.load import load_site

FIXTURES = Path(__file__).parents[1] / "fixtures"
CONFIG = FIXTURES / "scheduler" / "slurm-22.05" / "scenario" / "scontrol-show-config.rec"
HOSTILE = ["a b", "'; echo x", "$(touch /tmp/pwned)", 'say "hi"', "back\\slash", "%j %t", "--flag=1", "#not", "é"]
PIPELINE = """\
name: pipe
job:
  command: [python3, train.py, --fixed, "two words"]
  resources: {nodes: 2, gpus_per_node: 2, time: "5:00"}
parameters:
  zip: {lr: [0.1, 0.01, 0.001], tag: TAGS}
args: ["--lr={lr}", "--tag", "{tag}", "--out={output_dir}"]
env: {RUN_TAG: "t-{tag}-{task_id}"}
stages:
  - name: preprocess
    resources: {partition: cpu, gpus_per_node: 0, nodes: 1}
    args: ["--seed={task_id}"]
  - name: train
    after: [preprocess]
  - name: evaluate
    per_task: false
    resources: {partition: cpu, gpus_per_node: 0, nodes: 1}
    after: {train: afterany}
    env: {RESULTS: "{campaign_dir}/tasks", REPORT: "{output_dir}/report.txt"}
""".replace("TAGS", json.dumps(HOSTILE[:3]))


def plan_of(tmp_path: Path, text: str = PIPELINE, **kwargs: object) -> CampaignPlan:
    env = {"HOME": str(tmp_path), "USER": "alice"}
    loaded = load_campaign_text(text, tmp_path / "campaign.yaml")
    site = load_site("sandbox", [f"runs_dir={tmp_path / 'runs'}"], environ=env)
    options: dict[str, object] = {"gpu_limit": 4, "max_array_size": 1001, **kwargs}
    return plan_campaign(loaded, site, "pipe-1", environ=env, **options)  # type: ignore[arg-type]


def test_max_array_size_is_read_from_scontrol_show_config() -> None:
    runner = ReplayRunner([load_recording(CONFIG).result])
    scheduler = SlurmScheduler(SlurmCli(runner, retry=RetryPolicy(attempts=1)))
    assert max_array_size(scheduler) == 1001
    assert runner.calls == [("scontrol", "show", "config")]
    assert chunk_size_for(1001, None) == 1001  # indices 0..1000
    assert chunk_size_for(1001, 3) == 3
    with pytest.raises(HpcTfError, match="between 1 and the cluster's MaxArraySize"):
        chunk_size_for(1001, 1002)
    with pytest.raises(HpcTfError, match="does not allow job arrays"):
        chunk_size_for(0, None)
    assert chunk_size_for(None, None) == 1001  # Slurm's default when the cluster was not asked


def test_chunks_keep_each_task_at_the_same_array_index_everywhere() -> None:
    groups = chunks(range(2500), 1001)
    assert [(offset, ids[0], ids[-1]) for offset, ids in groups] == [(0, 0, 1000), (1001, 1001, 2001),
                                                                    (2002, 2002, 2499)]
    assert all(0 <= i - offset < 1001 for offset, ids in groups for i in ids)
    # a resubmission of tasks 5 and 1500 uses the same offsets, so aftercorr still pairs them
    assert chunks([1500, 5], 1001) == [(0, (5,)), (1001, (1500,))]


def test_throttle_comes_from_the_gpu_quota() -> None:
    demands = [StageDemand("pre", True, 0), StageDemand("train", True, 2), StageDemand("eval", False, 0)]
    throttles = compute_throttles(demands, gpu_limit=4)
    assert {n: t.limit for n, t in throttles.items()} == {"pre": None, "train": 2, "eval": None}
    assert "GPU quota 4" in throttles["train"].why
    # two GPU stages share the quota; an explicit throttle wins; unknown quota: no throttle
    two = compute_throttles([StageDemand("a", True, 1), StageDemand("b", True, 1, explicit=7)], gpu_limit=4)
    assert (two["a"].limit, two["b"].limit) == (2, 7)
    assert compute_throttles([StageDemand("a", True, 3)], gpu_limit=None)["a"].limit is None
    assert compute_throttles([StageDemand("a", True, 3)], gpu_limit=4)["a"].limit == 1
    with pytest.raises(QuotaRefused, match="needs 8 GPUs, but the account may hold at most 4"):
        compute_throttles([StageDemand("big", True, 8)], gpu_limit=4)


def test_a_pipeline_plans_arrays_with_dependencies(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    assert [(s.name, s.per_task, s.job.partition, s.job.total_gpus, s.throttle.limit) for s in plan.stages] == [
        ("preprocess", True, "cpu", 0, None), ("train", True, "gpu", 4, 1), ("evaluate", False, "cpu", 0, None)]
    assert [(s.stage, s.offset, s.task_ids, s.throttle, s.after) for s in plan.submissions] == [
        ("preprocess", 0, (0, 1, 2), None, ()),
        ("train", 0, (0, 1, 2), 1, (StageRef("aftercorr", "preprocess", 0),)),
        ("evaluate", 0, (), None, (StageRef("afterany", "train", None),)),
    ]


def test_chunks_of_a_throttled_stage_run_one_after_another(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, chunk_size=2)
    train = [s for s in plan.submissions if s.stage == "train"]
    assert [(s.offset, s.task_ids, s.after) for s in train] == [
        (0, (0, 1), (StageRef("aftercorr", "preprocess", 0),)),
        (2, (2,), (StageRef("aftercorr", "preprocess", 2), StageRef("afterany", "train", 0))),
    ]
    pre = [s for s in plan.submissions if s.stage == "preprocess"]
    assert [s.after for s in pre] == [(), ()]  # not throttled: chunks run side by side


def test_task_parameters_reach_the_command_exactly(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    root = plan.paths.root
    assert root == tmp_path / "runs" / "pipe-1"
    for task, tag in zip(plan.tasks, HOSTILE[:3], strict=True):
        out = str(root / "tasks" / str(task.id) / "train")
        assert plan.task_command("train", task) == [
            "python3", "train.py", "--fixed", "two words", f"--lr={task.params['lr']}", "--tag", tag, f"--out={out}"]
        assert plan.task_command("preprocess", task) == [
            "python3", "train.py", "--fixed", "two words", f"--seed={task.id}"]
        env = plan.task_document(task)["stages"]["train"]["env"]  # type: ignore[index]
        assert env["RUN_TAG"] == f"t-{tag}-{task.id}" and env["HPC_TF_PARAM_TAG"] == tag
        assert env["HPC_TF_OUTPUT_DIR"] == out and env["HPC_TF_TASK_DIR"] == str(root / "tasks" / str(task.id))
        assert json.loads(env["HPC_TF_PARAMS"]) == dict(task.params)
        assert env["HPC_TF_METRICS_FILE"] == f"{out}/metrics.jsonl"  # not the run dir all tasks share
        assert env["HPC_TF_CHECKPOINT_DIR"] == f"{out}/checkpoints"  # nor the checkpoints


def run_shim(plan: CampaignPlan, stage: str, index: str, offset: str) -> tuple[list[str], dict[str, str]]:
    """Run hpc/campaign/node_task.py as a task would, with a command that prints what it got."""
    for task in plan.tasks:
        path = plan.paths.task_file(task.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(plan.task_document(task)))
    probe = "import json, os, sys; print(json.dumps([sys.argv[1:], dict(os.environ)]))"
    node_task = Path(__file__).parents[2] / "hpc" / "campaign" / "node_task.py"
    result = subprocess.run(
        [sys.executable, str(node_task), "--tasks", str(plan.paths.tasks_dir), "--stage", stage, "--",
         sys.executable, "-c", probe, "fixed arg"],
        env={"PATH": "/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": index, "HPC_TF_TASK_OFFSET": offset},
        capture_output=True, text=True, check=True, timeout=30)
    argv, env = json.loads(result.stdout)
    return argv, env


def test_the_task_wrapper_execs_the_command_with_the_tasks_arguments(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, text=PIPELINE.replace(json.dumps(HOSTILE[:3]), json.dumps(HOSTILE[6:9])))
    argv, env = run_shim(plan, "train", index="1", offset="1")  # array index 1 of a chunk starting at task 1
    task = plan.tasks[2]
    assert argv == ["fixed arg", *plan.task_command("train", task)[4:]]
    assert argv[3] == HOSTILE[8]
    assert env["HPC_TF_TASK_ID"] == "2" and env["HPC_TF_PARAM_TAG"] == HOSTILE[8]
    assert Path(env["HPC_TF_OUTPUT_DIR"]).is_dir()  # created for the task


def test_the_task_wrapper_refuses_to_run_outside_an_array(tmp_path: Path) -> None:
    node_task = Path(__file__).parents[2] / "hpc" / "campaign" / "node_task.py"
    result = subprocess.run([sys.executable, str(node_task), "--tasks", str(tmp_path), "--stage", "x", "--", "true"],
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 4 and "SLURM_ARRAY_TASK_ID is not set" in result.stderr


def test_each_stage_script_is_the_job_template_with_the_wrapper(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, text=PIPELINE.replace(json.dumps(HOSTILE[:3]), json.dumps(HOSTILE[3:6])))
    script = plan.script("train", 1001)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert "export HPC_TF_TASK_OFFSET=1001\n" in script
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --gres=gpu:2" in script
    assert "--array" not in script and "--dependency" not in script  # sbatch arguments, not directives
    wrapper = f"{plan.paths.task_shim('train')} --tasks {plan.paths.tasks_dir} --stage train -- python3 train.py"
    assert wrapper in script
    for hostile in HOSTILE[3:6]:
        assert hostile not in script  # parameters live in task.json, never in the script
    evaluate = plan.script("evaluate", 0)
    assert "HPC_TF_TASK_OFFSET" not in evaluate and "campaign_task.py" not in evaluate
    assert f"export HPC_TF_OUTPUT_DIR={plan.paths.stage('evaluate').root}/output" in evaluate
    assert f"export RESULTS={plan.paths.root}/tasks\n" in evaluate
    assert f"export REPORT={plan.paths.stage('evaluate').root}/output/report.txt\n" in evaluate


def test_a_local_campaign_is_throttled_to_this_machines_gpus_and_records_its_launcher(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("name: c\njob: {command: [x], resources: {gpus_per_node: 1}}\n"
                    "parameters: {grid: {lr: [1, 2, 3, 4, 5]}}\n")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    plan = plan_from_file(path, "local", [f"runs_dir={tmp_path}"], gpu_limit=GPU_LIMITS["local"])
    (stage,) = plan.stages
    assert stage.throttle.limit == 3 and plan.initial_manifest().launcher == "local"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPUs: no throttle; the launcher makes GPU tasks take turns
    assert plan_from_file(path, "local", [f"runs_dir={tmp_path}"], gpu_limit=GPU_LIMITS["local"]).stages[0].throttle \
        .limit is None
    # the local launcher says how large its arrays may be, as Slurm's scontrol does (no "not read" in the plan)
    local = LocalScheduler(tmp_path / "state")
    assert plan_from_file(path, "local", [f"runs_dir={tmp_path}"], scheduler=local).max_array_size == 1001


def test_a_task_that_can_never_fit_the_quota_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QuotaRefused, match="stage 'train' needs 4 GPUs"):
        plan_of(tmp_path, gpu_limit=2)


def test_the_gpu_limit_is_read_for_the_gpu_stages_and_a_failure_only_drops_the_throttle(tmp_path: Path) -> None:
    path = tmp_path / "campaign.yaml"
    path.write_text(PIPELINE)
    asked: list[tuple[str | None, str | None]] = []

    def quota(job: ResolvedJob) -> int | None:
        asked.append((job.partition, job.account))
        return 4

    env = {"HOME": str(tmp_path), "USER": "alice"}
    plan = plan_from_file(path, "sandbox", [f"runs_dir={tmp_path}"], env, gpu_limit=quota)
    assert asked == [("gpu", "lab")]  # only the GPU stage's association matters
    assert plan.stage("train").throttle.limit == 1

    def down(job: ResolvedJob) -> int | None:
        raise SchedulerUnavailable(argv=["sacctmgr"], returncode=1, summary="slurmdbd is not answering")

    plan = plan_from_file(path, "sandbox", [f"runs_dir={tmp_path}"], env, gpu_limit=down)
    assert plan.stage("train").throttle.limit is None
    assert plan.stage("train").throttle.why == "GPU quota not read: slurmdbd is not answering"


def test_array_and_dependency_options_are_spelled_by_the_scheduler_module() -> None:
    assert array_option([0, 1, 2, 3, 5, 7, 8], throttle=2) == "--array=0-3,5,7-8%2"
    assert array_option([4]) == "--array=4"
    assert dependency_option([("aftercorr", ["12"]), ("afterok", ["13_1", "14"]), ("afterany", [])]) == (
        "--dependency=aftercorr:12,afterok:13_1:14")
    assert dependency_option([]) is None
    with pytest.raises(HpcTfError, match="is not a Slurm job id"):
        dependency_option([("afterok", ["12;rm -rf ~"])])
    with pytest.raises(HpcTfError):
        array_option([], throttle=1)


def test_a_checkpoint_directory_the_spec_names_is_kept_for_every_task(tmp_path: Path) -> None:
    text = PIPELINE.replace('  resources: {nodes: 2,', '  checkpoint: {dir: /scratch/ckpt}\n  resources: {nodes: 2,')
    plan = plan_of(tmp_path, text)
    env = plan.task_document(plan.tasks[0])["stages"]["train"]["env"]  # type: ignore[index]
    assert "HPC_TF_CHECKPOINT_DIR" not in env
    assert plan.stage("train").job.runtime.checkpoint_dir == "/scratch/ckpt"
