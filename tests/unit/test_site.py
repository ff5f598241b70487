"""Layered site configuration: later layers win, and every value says where it came from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpc.errors import ConfigError, SpecError
from hpc.site.load import builtin_sites, describe, env_site_key, load_site


@pytest.fixture()
def home(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "USER": "alice"}


def write_user_config(home: dict[str, str], text: str) -> Path:
    path = Path(home["HOME"]) / ".config" / "hpc-tf" / "config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_shipped_sites_all_load() -> None:
    assert {"sandbox", "local", "example-apptainer", "example-plain"} <= set(builtin_sites())
    for name in builtin_sites():
        assert load_site(name, environ={"HOME": "/h"}).config.name == name


def test_layers_in_order_with_provenance(home: dict[str, str]) -> None:
    user = write_user_config(home, "account: from-user\nqos: user-qos\ndefault_time: '2:00:00'\n")
    env = {**home, "HPC_TF_QOS": "env-qos", "HPC_TF_SERVING__FORMAT": "onnx", "HPC_TF_RUN_DIR": "ignored"}
    site = load_site("sandbox", ["default_time=45:00"], environ=env)
    cfg = site.config
    assert (cfg.account, cfg.qos, cfg.default_time, cfg.serving.format) == ("from-user", "env-qos", "45:00", "onnx")
    assert site.source_of("account") == f"user file {user}"
    assert site.source_of("qos") == "environment HPC_TF_QOS"
    assert site.source_of("serving.format") == "environment HPC_TF_SERVING__FORMAT"
    assert site.source_of("default_time") == "--set default_time"
    assert site.source_of("cpu_partition").startswith("site file ")
    assert site.source_of("gres_name") == "built-in default"
    rows = {key: (value, source) for key, value, source in describe(site)}
    assert rows["partitions.gpu.gpus_per_node"][0] == "4"


def test_user_file_picks_the_default_site(home: dict[str, str]) -> None:
    write_user_config(home, "site: example-plain\n")
    assert load_site(None, environ=home).config.name == "example-plain"
    assert load_site(None, environ={**home, "HPC_TF_SITE": "sandbox"}).config.name == "sandbox"


def test_set_values_are_typed(home: dict[str, str]) -> None:
    cfg = load_site("sandbox", ["partitions.gpu.gpus_per_node=8", "modules=[a, b]"], environ=home).config
    assert cfg.partitions["gpu"].gpus_per_node == 8
    assert cfg.modules == ["a", "b"]


def test_bad_override_names_its_source(home: dict[str, str]) -> None:
    with pytest.raises(SpecError) as info:
        load_site("sandbox", ["partitions.gpu.gpus_per_node=many"], environ=home)
    (problem,) = info.value.problems
    assert problem.source == "--set partitions.gpu.gpus_per_node"
    with pytest.raises(SpecError, match=r"unknown key \(did you mean 'account'\?\)"):
        load_site("sandbox", ["acount=lab"], environ=home)


def test_set_without_equals(home: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_site("sandbox", ["account"], environ=home)


def test_unknown_site_lists_builtin_ones(home: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_site("nowhere", environ=home)
    assert "sandbox" in str(info.value)


def test_site_file_errors_have_lines(tmp_path: Path, home: dict[str, str]) -> None:
    path = tmp_path / "mysite.yaml"
    path.write_text("partitions:\n  gpu:\n    gpus_per_nod: 4\ndefault_partition: gpu\n")
    with pytest.raises(SpecError) as info:
        load_site(str(path), environ=home)
    assert str(info.value).startswith(f"{path}:3: partitions.gpu.gpus_per_nod: unknown key")


def test_default_partition_must_exist(tmp_path: Path, home: dict[str, str]) -> None:
    path = tmp_path / "mysite.yaml"
    path.write_text("partitions: {gpu: {gpus_per_node: 4}}\ndefault_partition: gpus\n")
    with pytest.raises(SpecError, match="default_partition 'gpus' is not among partitions: gpu"):
        load_site(str(path), environ=home)


def test_a_misspelt_environment_variable_is_an_error_with_a_suggestion(home: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_site("sandbox", environ={**home, "HPC_TF_ACOUNT": "lab2"})
    assert "HPC_TF_ACOUNT" in info.value.message and "did you mean HPC_TF_ACCOUNT?" in info.value.message


def test_variables_hpc_tf_sets_for_jobs_are_not_site_keys_and_not_errors(home: dict[str, str]) -> None:
    # a command inside a job (the hand-off, a campaign task) inherits them and may run hpc-tf again
    env = {**home, "HPC_TF_RUN_DIR": "/r", "HPC_TF_TASK_ID": "3", "HPC_TF_PARAM_LR": "0.1", "HPC_TF_VENV": "/v"}
    assert load_site("sandbox", environ=env).config.account == "lab"


def test_every_hpc_tf_variable_in_the_code_is_a_site_key_or_known() -> None:
    repo = Path(__file__).resolve().parents[2]
    files = [*repo.glob("*.md")]
    for folder in ("hpc", "templates", "launchers", "tests", "examples", "bench", ".ci", "site_configs"):
        files += [p for p in (repo / folder).rglob("*") if p.is_file() and p.suffix != ".pyc"]
    names = {name for path in files for name in re.findall(r"\bHPC_TF_[A-Z0-9_]*[A-Z0-9]\b", path.read_text("latin-1"))}
    names -= {"HPC_TF_ACOUNT"}  # the misspelling tested above
    unknown = []
    for name in sorted(names):
        try:
            env_site_key(name)
        except ConfigError:
            unknown.append(name)
    assert unknown == [], f"add them to hpc.site.load.NOT_SITE_VARIABLES (or make them site keys): {unknown}"


# Site values reach every job's script (python, modules, module_init, runs_dir, binds) and its #SBATCH
# lines (partitions, account, qos, gres_name): the same whole-name and one-line checks as a job spec.
ONE_LINE = "the value must be one line of printable text; it contains "


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('python: "python3\\u2028echo owned"', f"python: {ONE_LINE}\\u2028"),
        ('module_init: "/etc/lmod\\x85"', f"module_init: {ONE_LINE}\\x85"),
        ('runs_dir: "/runs\\v"', f"runs_dir: {ONE_LINE}\\x0b"),
        ('modules: ["cuda\\n"]', "modules[0]: 'cuda\\n' is not valid: a module name"),
        ('account: "lab\\n"', "account: 'lab\\n' is not valid: a Slurm name"),
        ('gres_name: "gpu\\n"', "gres_name: 'gpu\\n' is not valid: a Slurm name"),
        ('container_binds: ["/a,/b"]', "container_binds[0]: bind '/a,/b' must not contain ','"),
        ('partitions: {"gpu\\n": {gpus_per_node: 1}}', "partitions: 'gpu\\n' is not valid: a Slurm name"),
        ('serving: {model_repository: "/m\\u2029"}',
         f"serving.model_repository: {ONE_LINE}\\u2029"),
    ],
)
def test_site_values_that_reach_a_script_are_checked_like_a_specs(
    tmp_path: Path, home: dict[str, str], line: str, expected: str
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(f"name: mine\nlauncher: slurm\n{line}\n")
    with pytest.raises(SpecError) as info:
        load_site(str(path), environ=home)
    (problem,) = info.value.problems
    assert str(problem).startswith(f"{path}:3: {expected}")
