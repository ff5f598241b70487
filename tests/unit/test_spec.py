"""Job spec validation: every bad input is refused with the field, the line and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc.errors import SpecError
from hpc.spec import load_spec, load_spec_text

BASE = Path("/home/alice/project")


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, "job.yaml", BASE)
    return [str(p) for p in info.value.problems]


def test_minimal_spec_gets_defaults() -> None:
    spec = load_spec_text("name: a\ncommand: python train.py --lr 0.1\n", "job.yaml", BASE).spec
    assert spec.command == ("python", "train.py", "--lr", "0.1")
    assert spec.resources.nodes == 1 and spec.resources.tasks_per_node == 1
    assert spec.strategy == "none"


def test_strategy_defaults_to_multi_worker_when_more_than_one_worker() -> None:
    spec = load_spec_text("name: a\ncommand: [x]\nresources: {nodes: 2}\n", "job.yaml", BASE).spec
    assert spec.strategy == "multi_worker_mirrored"


def test_unknown_key_names_line_and_allowed_keys() -> None:
    text = "name: a\ncommand: x\nresources:\n  nodes: 2\n  gpu_per_node: 4\n"
    (message,) = problems(text)
    assert message.startswith("job.yaml:5: resources.gpu_per_node: unknown key (did you mean 'gpus_per_node'?)")
    assert "tasks_per_node" in message


def test_all_problems_reported_at_once_with_lines() -> None:
    text = "name: 'bad name'\ncommand: x\nresources:\n  nodes: two\n  time: soon\n"
    found = problems(text)
    assert any(p.startswith("job.yaml:1: name:") for p in found)
    assert any(p.startswith("job.yaml:4: resources.nodes:") and "integer" in p for p in found)
    assert any(p.startswith("job.yaml:5: resources.time:") and "D-HH:MM:SS" in p for p in found)


def test_missing_command() -> None:
    (message,) = problems("name: a\n")
    assert "command: required key is missing" in message


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--gres=gpu:8", "set resources.gpus_per_node"),
        ("--job-name=x", "set 'name'"),
        ("--output=/tmp/x", "run directory"),
        ("--signal=USR1@60", "preemption.warning_seconds"),
        ("-N 4", "--nodes"),
        ("-p debug", "resources.partition"),
        ("mail-type=END", "is not an sbatch option (options start with - or --)"),
    ],
)
def test_managed_sbatch_flags_refused_with_the_field_to_use(flag: str, expected: str) -> None:
    (message,) = problems(f"name: a\ncommand: x\nsbatch_extra: ['{flag}']\n")
    assert message.startswith("job.yaml:3: sbatch_extra[0]:")
    assert expected in message


def test_allowed_sbatch_extra_passes() -> None:
    spec = load_spec_text("name: a\ncommand: x\nsbatch_extra: ['--mail-type=END', '--hold']\n", "j", BASE).spec
    assert spec.sbatch_extra == ["--mail-type=END", "--hold"]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ("{gpus_per_node: 2, gpus_per_task: 1}", "not both"),
        ("{tasks_per_node: 2, gpus_per_node: 3}", "multiple of tasks_per_node"),
        ("{gpu_type: a100}", "gpu_type needs"),
        ("{nodes: 0}", "greater than or equal to 1"),
        ("{mem: lots}", "not a memory size"),
    ],
)
def test_cross_field_rules(resources: str, expected: str) -> None:
    (message,) = problems(f"name: a\ncommand: x\nresources: {resources}\n")
    assert expected in message


def test_managed_environment_variables_refused() -> None:
    (message,) = problems("name: a\ncommand: x\nenv: {CUDA_VISIBLE_DEVICES: '0'}\n")
    assert "set by hpc-tf/Slurm" in message


# Finding 3 of issue 15: names matched as whole strings, every line break refused, each error one line
# with the file, line and field path. (YAML double quotes carry the escapes: "\\u2028" is U+2028.)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name: a\ncommand: x\nenv: {"FOO\\n": v}\n',
         "job.yaml:3: env: 'FOO\\n' is not valid: an environment variable name"),
        ('name: "a\\n"\ncommand: x\n', "job.yaml:1: name: 'a\\n' is not valid: a name has"),
        ('name: a\ncommand: x\nresources: {partition: "gpu\\n"}\n',
         "job.yaml:3: resources.partition: 'gpu\\n' is not valid: a Slurm name"),
        ('name: a\ncommand: x\nresources: {gpus_per_node: 1, gpu_type: "a100\\n"}\n',
         "job.yaml:3: resources.gpu_type: 'a100\\n' is not valid: a Slurm name"),
        ('name: a\ncommand: x\nresources: {account: "lab\\n", qos: "q\\n"}\n',
         "job.yaml:3: resources.account: 'lab\\n' is not valid: a Slurm name"),
        ('name: a\ncommand: x\nenvironment: {modules: ["cuda\\n"]}\n',
         "job.yaml:3: environment.modules[0]: 'cuda\\n' is not valid: a module name"),
        ('name: a\ncommand: x\nhandoff: {model: "mlp\\n"}\n',
         "job.yaml:3: handoff.model: 'mlp\\n' is not valid: a model name"),
    ],
)
def test_a_trailing_newline_does_not_pass_a_name_check(text: str, expected: str) -> None:
    (message, *_) = problems(text)
    assert message.startswith(expected)
    assert "\n" not in message


# (as written in YAML, as the message shows it)
LINE_BREAKS = [("\\n", "\\n"), ("\\r", "\\r"), ("\\u2028", "\\u2028"), ("\\u2029", "\\u2029"),
               ("\\x85", "\\x85"), ("\\v", "\\x0b"), ("\\f", "\\x0c"), ("\\x1c", "\\x1c"),
               ("\\x1e", "\\x1e"), ("\\0", "\\x00"), ("\\e", "\\x1b")]


@pytest.mark.parametrize(("escape", "shown"), LINE_BREAKS)
@pytest.mark.parametrize(
    ("field", "path"),
    [
        ('resources: {constraint: "a%s#SBATCH --output=/tmp/x"}', "resources.constraint"),
        ('env: {A: "x%secho owned"}', "env.A"),
        ('command: [python, "train.py%secho owned"]', "command[1]"),
        ('command: "python \'train.py%secho owned\'"', "command[1]"),
        ('workdir: "/w%sx"', "workdir"),
        ('environment: {venv: "/v%sx"}', "environment.venv"),
        ('environment: {container: {image: "i.sif", binds: ["/a%s"]}}', "environment.container.binds[0]"),
        ('checkpoint: {dir: "/c%s"}', "checkpoint.dir"),
    ],
)
def test_every_line_break_and_control_character_is_refused(field: str, path: str, escape: str, shown: str) -> None:
    spec = "name: a\n" + ("" if field.startswith("command") else "command: x\n") + (field % escape) + "\n"
    (message,) = problems(spec)
    line = spec.count("\n")
    assert message == (f"job.yaml:{line}: {path}: the value must be one line of printable text; "
                       f"it contains {shown}")


@pytest.mark.parametrize("key", ["UID", "EUID", "PPID", "SHELLOPTS", "BASHOPTS", "BASH_VERSINFO"])
def test_env_keys_bash_will_not_export_are_refused(key: str) -> None:
    (message,) = problems(f"name: a\ncommand: x\nenv: {{{key}: '1'}}\n")
    assert message == f"job.yaml:3: env: {key} is read-only in bash, which runs the batch script; choose another name"


def test_mirrored_with_several_workers_refused() -> None:
    (message,) = problems("name: a\ncommand: x\nresources: {nodes: 2}\ntf: {strategy: mirrored}\n")
    assert "multi_worker_mirrored" in message


def test_yaml_syntax_error_has_line() -> None:
    (message,) = problems("name: a\ncommand: [x\nresources: {}\n")
    assert message.startswith("job.yaml:") and "not valid YAML" in message


def test_not_a_mapping() -> None:
    (message,) = problems("- a\n- b\n")
    assert "must be a mapping" in message


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "nope.yaml")


def test_example_specs_load() -> None:
    for path in sorted((Path(__file__).parents[1] / "fixtures" / "specs").glob("*.yaml")):
        assert load_spec(path).spec.name


def test_clock_times_are_not_yaml_base60_numbers() -> None:
    spec = load_spec_text("name: a\ncommand: x\nresources: {time: 1:30:00}\n", "job.yaml", BASE).spec
    assert spec.resources.time == "1:30:00" and spec.resources.time_seconds == 5400


@pytest.mark.parametrize("value", ["true", "2.0", '"2"'])
def test_a_count_is_a_whole_number_as_written(value: str) -> None:
    # pydantic alone reads `true` as 1 and 2.0 as 2: a typo would silently become a request
    (message,) = problems(f"name: a\ncommand: x\nresources: {{nodes: {value}}}\n")
    assert message.startswith("job.yaml:3: resources.nodes: Input should be a valid integer")
