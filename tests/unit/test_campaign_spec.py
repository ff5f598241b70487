"""campaign.yaml: validation with file and line, and each stage's job built from the base job + overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.campaign.load import load_campaign, load_campaign_text
from hpc.campaign.plan import plan_campaign
from hpc.errors import SpecError
from hpc.site.load import load_site

REPO = Path(__file__).resolve().parents[2]
ENV = {"HOME": "/home/alice", "USER": "alice"}
JOB = """\
name: base
command: python3 train.py --epochs 3
env: {A: "1"}
resources:
  nodes: 2
  gpus_per_node: 2
  time: "10:00"
tf:
  coordination_timeout: 120
"""


def campaign(tmp_path: Path, text: str, job: str = JOB) -> Path:
    (tmp_path / "job.yaml").write_text(job)
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, job: str = JOB) -> str:
    with pytest.raises(SpecError) as err:
        loaded = load_campaign(campaign(tmp_path, text, job))
        plan_campaign(loaded, load_site("sandbox", environ=ENV), "c-1", environ=ENV, gpu_limit=None,
                      max_array_size=None)
    return str(err.value)


def test_the_quickstart_campaign_builds_its_stage_from_the_quickstart_job() -> None:
    loaded = load_campaign(REPO / "examples" / "quickstart" / "campaign.yaml")
    (stage,) = loaded.spec.stage_list
    job = loaded.stages[stage.name].spec
    assert job.command == ("python3", "train.py")  # the stage's command replaces job.yaml's
    assert (job.resources.nodes, job.resources.gpus_per_node, job.resources.time) == (1, 1, "10:00")
    assert job.tf.coordination_timeout == 120  # the rest is job.yaml's
    assert loaded.stages[stage.name].base_dir == REPO / "examples" / "quickstart"


def test_stage_overrides_merge_into_the_base_job(tmp_path: Path) -> None:
    loaded = load_campaign(campaign(tmp_path, """\
name: pipe
job: job.yaml
stages:
  - name: pre
    resources: {partition: cpu, gpus_per_node: 0, nodes: 1}
    env: {B: "2"}
  - name: train
    after: [pre]
"""))
    pre, train = loaded.stages["pre"].spec, loaded.stages["train"].spec
    assert (pre.name, pre.resources.partition, pre.resources.gpus_per_node, pre.resources.time) == (
        "pipe-pre", "cpu", 0, "10:00")
    assert pre.env == {"A": "1"} and train.env == {"A": "1"}  # a stage's env is per task: see the plan tests
    assert train.resources.gpus_per_node == 2
    assert loaded.spec.dependencies(loaded.spec.stage_list[1]) == [("pre", "aftercorr")]


def test_an_inline_job_needs_no_name_and_reports_its_own_lines(tmp_path: Path) -> None:
    loaded = load_campaign_text("name: inl\njob:\n  command: [echo, hi]\n", tmp_path / "c.yaml")
    assert loaded.stages["main"].spec.command == ("echo", "hi") and loaded.stages["main"].spec.name == "inl"
    with pytest.raises(SpecError) as err:
        load_campaign_text("name: inl\njob:\n  command: [echo]\n  resources: {nodes: many}\n", tmp_path / "c.yaml")
    assert str(err.value).startswith(f"{tmp_path / 'c.yaml'}:4: job.resources.nodes: Input should be a valid integer")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: c\njob: job.yaml\nparameters:\n  grdi: {a: [1]}\n",
         "campaign.yaml:4: parameters.grdi: unknown key (did you mean 'grid'?); allowed here: grid, list, random, zip"),
        ("name: c\njob: job.yaml\nparameters:\n  zip: {a: [1, 2], b: [1]}\n",
         "campaign.yaml:4: parameters.zip: zip lists must have the same length"),
        ("name: c\njob: job.yaml\nparameters:\n  grid: {a: [1]}\n  zip: {a: [2]}\n",
         "parameter 'a' is in both zip and grid"),
        ("name: c\njob: job.yaml\nparameters:\n  grid: {task_id: [1]}\n", "'task_id' is reserved"),
        ("name: c\njob: job.yaml\nparameters:\n  grid: {lr: []}\n", "parameter 'lr' needs at least one value"),
        ("name: c\njob: job.yaml\nparameters:\n  grid: {lr: [1]}\nargs: ['--lr={rl}']\n",
         "args: '{rl}' is not a parameter; placeholders: campaign_dir, lr, output_dir, task_dir, task_id"),
        ("name: c\njob: job.yaml\nargs: ['--x={a.b}']\n", "use plain {name} placeholders"),
        ("name: c\njob: job.yaml\nargs: ['--x={']\n", "write literal braces as {{ and }}"),
        ("name: c\njob: job.yaml\nstages:\n  - {name: a, after: [b]}\n  - {name: b}\n",
         "stage 'a' waits for 'b', which comes later"),
        ("name: c\njob: job.yaml\nstages:\n  - {name: a, per_task: false}\n  - {name: b, after: {a: aftercorr}}\n",
         "both 'b' and 'a' must be per_task"),
        ("name: c\njob: job.yaml\nstages:\n  - {name: a, after: {x: afterok}}\n", "'x', which is not a stage"),
        ("name: c\njob: job.yaml\nstages:\n  - {name: a}\n  - {name: a}\n", "two stages are named 'a'"),
        ("name: c\nstages:\n  - {name: a}\n", "set 'job' (the base job), or a 'job' in every stage"),
        ("name: c\njob: job.yaml\nenv: {SLURM_X: '1'}\n", "campaign.yaml:3: env: SLURM_X is set by hpc-tf/Slurm"),
        ("name: c\njob: job.yaml\nthrottle: 0\n", "campaign.yaml:3: throttle: Input should be greater than or equal"),
        ("name: c\njob: job.yaml\nparameters:\n  grid: {a: [\"x\\ny\"]}\n",
         "campaign.yaml:4: parameters.grid.a[0]: the value must be one line of printable text; it contains \\n"),
        ("name: c\njob: job.yaml\nstages:\n  - {name: e, per_task: false, args: [x]}\n", "it has no task arguments"),
        ("name: c\njob: job.yaml\nparameters: {grid: {a: [1]}}\n"
         "stages:\n  - {name: e, per_task: false, env: {X: '{a}'}}\n",
         "stage 'e' runs one job: its env may use {campaign_dir}, {output_dir}, not '{a}'"),
        ("name: c\njob: job.yaml\nparameters:\n  random: {samples: 2, space: {lr: {uniform: [1, 0]}}}\n",
         "uniform: [low, high] needs low <= high"),
    ],
)
def test_broken_campaigns_name_the_field_and_line(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in problems(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name: c\njob: job.yaml\nparameters:\n  grid: {"lr\\n": [1]}\n',
         "campaign.yaml:4: parameters.grid: 'lr\\n' is not valid: a parameter name"),
        ('name: c\njob: job.yaml\nparameters:\n  random: {samples: 1, space: {"lr\\n": {uniform: [0, 1]}}}\n',
         "campaign.yaml:4: parameters.random.space: 'lr\\n' is not valid: a parameter name"),
        ('name: c\njob: job.yaml\nparameters:\n  list: [{"lr\\n": 1}]\n',
         "campaign.yaml:4: parameters.list: 'lr\\n' is not valid: a parameter name"),
        ('name: c\njob: job.yaml\nparameters:\n  grid: {lr: ["0.1\\u2028echo x"]}\n',
         "campaign.yaml:4: parameters.grid.lr[0]: the value must be one line of printable text; it contains \\u2028"),
        ('name: c\njob: job.yaml\nargs: ["--x\\vy"]\n',
         "campaign.yaml:3: args[0]: the value must be one line of printable text; it contains \\x0b"),
        ('name: c\njob: job.yaml\nenv: {"FOO\\n": v}\n',
         "campaign.yaml:3: env: 'FOO\\n' is not valid: an environment variable name"),
        ('name: c\njob: job.yaml\nenv: {FOO: "v\\u2029"}\n',
         "campaign.yaml:3: env.FOO: the value must be one line of printable text; it contains \\u2029"),
        ('name: "c\\n"\njob: job.yaml\n', "campaign.yaml:1: name: 'c\\n' is not valid: a campaign name"),
        ('name: c\njob: "job.yaml\\x85"\n',
         "campaign.yaml:2: job: the value must be one line of printable text; it contains \\x85"),
        ('name: c\njob: job.yaml\nstages:\n  - {name: "a\\n"}\n',
         "campaign.yaml:4: stages[0].name: 'a\\n' is not valid: a stage name"),
    ],
)
def test_campaign_names_are_matched_whole_and_values_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert found.startswith(f"{tmp_path}/{expected}")
    assert "\n" not in found


def test_a_stage_override_that_does_not_fit_points_into_the_campaign_file(tmp_path: Path) -> None:
    text = "name: c\njob: job.yaml\nstages:\n  - name: pre\n    resources:\n      partition: cpu\n"
    # partition cpu has no GPUs, but the base job asks for 2 per node: both places are named
    found = problems(tmp_path, text)
    assert "job.yaml:6: resources.gpus_per_node: partition 'cpu' has no GPUs" in found


def test_an_unknown_partition_in_a_stage_is_reported_at_the_stage(tmp_path: Path) -> None:
    text = "name: c\njob: job.yaml\nstages:\n  - name: pre\n    resources:\n      partition: cpux\n"
    assert "campaign.yaml:6: stages[0].resources.partition: site 'sandbox' has no partition 'cpux'" in problems(
        tmp_path, text)


def test_an_error_in_a_stage_job_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "pre.yaml").write_text("name: p\ncommand: x\nresources: {nodes: many}\n")
    text = "name: c\njob: job.yaml\nstages:\n  - {name: pre, job: pre.yaml}\n"
    assert "pre.yaml:3: resources.nodes: Input should be a valid integer" in problems(tmp_path, text)


def test_cross_field_errors_of_the_composed_job_point_at_the_override(tmp_path: Path) -> None:
    text = "name: c\njob: job.yaml\nstages:\n  - name: pre\n    resources: {tasks_per_node: 3}\n"
    assert "campaign.yaml:5: stages[0].resources: gpus_per_node (2) must be a multiple of tasks_per_node (3)" in (
        problems(tmp_path, text))
