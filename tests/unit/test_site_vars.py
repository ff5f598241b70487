"""``$`` in the site config's and campaign's fields: one rule per field, never a silent literal ``$``.

Paths hpc-tf creates or reads itself (runs_dir, serving.model_repository, a campaign's job path) are
submit-time text: ``~``, ``$VAR``, ``${VAR}`` expand where hpc-tf runs, an unset one is a one-line error
naming the field and the variable. Values that reach the batch script (site python, module_init,
container_binds) are run-time text like the job's paths: ``${NAME}`` expands on the node, a bare ``$`` is
refused. Values passed on as written (#SBATCH lines: sbatch_defaults, constraint; srun_extra) refuse ``$``.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from hpc.campaign.load import load_campaign_text
from hpc.errors import ConfigError, SpecError
from hpc.paths import runs_root
from hpc.render.cpu_jobs import render_handoff_script
from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.serving.service import serving_target
from hpc.serving.slurm_node import plan_slurm_node
from hpc.site.load import load_site
from hpc.spec import load_spec_text
from hpc.text import expand_submit_time

ALICE = {"HOME": "/home/alice", "USER": "alice", "SCRATCH": "/scratch/alice"}
JOB = "name: j\ncommand: [python, t.py]\n"
CONTAINER_JOB = JOB + "environment: {container: {image: i.sif}}\n"
HANDOFF_JOB = JOB + "handoff: {model: m}\n"


def site_problem(*overrides: str) -> str:
    with pytest.raises(SpecError) as info:
        load_site("sandbox", overrides, environ=ALICE)
    assert len(info.value.problems) == 1
    return str(info.value.problems[0])


def rendered(job: str, *overrides: str) -> str:
    loaded = load_spec_text(job, "job.yaml", Path("/home/alice/project"))
    return render_script(resolve(loaded, load_site("sandbox", overrides, environ=ALICE), "j-1", environ=ALICE))


# --- submit-time text: runs_dir, serving.model_repository, a campaign's job path -------------------------

@pytest.mark.parametrize(("written", "path"), [
    ("~/runs", "/home/alice/runs"), ("$SCRATCH/runs", "/scratch/alice/runs"),
    ("${SCRATCH}/$USER-runs", "/scratch/alice/alice-runs"), ("/data/$$x", "/data/$x"),
])
def test_runs_dir_expands_where_hpc_tf_runs(written: str, path: str) -> None:
    site = load_site("sandbox", [f"runs_dir={written}"], environ=ALICE)
    assert runs_root(site.config.runs_dir, ALICE) == Path(path)


def test_user_missing_from_the_environment_is_the_account_running_hpc_tf() -> None:
    # as under cron or in a container; a login shell sets it (never a directory named $USER or "user")
    account = pwd.getpwuid(os.getuid()).pw_name
    assert runs_root("/scratch/$USER/runs", {"HOME": "/h"}) == Path(f"/scratch/{account}/runs")


@pytest.mark.parametrize("key", ["runs_dir", "serving.model_repository"])
def test_an_unset_variable_in_a_submit_time_path_is_one_line_naming_field_and_variable(key: str) -> None:
    site = load_site("sandbox", [f"{key}=$PROJECT/x"], environ=ALICE)
    with pytest.raises(ConfigError) as info:
        if key == "runs_dir":
            runs_root(site.config.runs_dir, ALICE)
        else:
            resolve(load_spec_text(HANDOFF_JOB, "job.yaml", Path("/p")), site, "j-1", environ=ALICE)
    assert info.value.message == f"{key} '$PROJECT/x': ${{PROJECT}} is not set here"
    assert info.value.hint is not None and "set the variable before running hpc-tf" in info.value.hint


def test_the_serving_commands_expand_model_repository_as_launch_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROJECT", "/projects/lab")
    monkeypatch.delenv("HPC_TF_SITE", raising=False)
    assert serving_target("sandbox", ["serving.model_repository=$PROJECT/models"]).repository.root == Path(
        "/projects/lab/models")
    monkeypatch.delenv("PROJECT")
    with pytest.raises(ConfigError, match=r"^serving.model_repository '\$PROJECT/models': \$\{PROJECT\} is not set"):
        serving_target("sandbox", ["serving.model_repository=$PROJECT/models"])


@pytest.mark.parametrize("key", ["runs_dir", "serving.model_repository"])
@pytest.mark.parametrize(("value", "shown"), [("$(id)/x", "$("), ("${X:-/tmp}", "${"), ("/runs$", "$")])
def test_a_dollar_that_is_no_variable_is_refused_when_the_site_loads(key: str, value: str, shown: str) -> None:
    assert site_problem(f"{key}={value}") == (
        f"--set {key}: {key}: '{value}' holds '{shown}', which hpc-tf does not expand: write $NAME or ${{NAME}} "
        "for a variable of the environment hpc-tf runs in, or $$ for a literal $")


def test_a_campaign_job_path_expands_and_an_unset_variable_names_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "job.yaml").write_text(JOB)
    monkeypatch.setenv("JOBS", str(tmp_path))
    campaign = tmp_path / "campaign.yaml"
    loaded = load_campaign_text("name: c\njob: $JOBS/job.yaml\n", campaign)
    assert loaded.stages["main"].spec.command == ("python", "t.py")
    monkeypatch.delenv("JOBS")
    with pytest.raises(SpecError) as info:
        load_campaign_text("name: c\njob: ${JOBS}/job.yaml\n", campaign)
    assert str(info.value).splitlines()[0] == f"{campaign}:2: job: job '${{JOBS}}/job.yaml': ${{JOBS}} is not set here"
    with pytest.raises(SpecError, match=r"job: '\$\(pwd\)/job.yaml' holds '\$\(', which hpc-tf does not expand"):
        load_campaign_text("name: c\njob: $(pwd)/job.yaml\n", campaign)


def test_submit_time_text_expands_no_value_twice() -> None:
    assert expand_submit_time("$A/$B", {"A": "$B", "B": "b"}) == "$B/b"


# --- run-time text: site python, module_init, container_binds ---------------------------------------------

@pytest.mark.parametrize(("key", "job", "line"), [
    ("python", JOB, 'command -v -- "${VENV}"/bin/python >/dev/null'),
    ("module_init", JOB + "environment: {modules: [gcc]}\n", 'source "${MODULESHOME}"/init/bash'),
    ("container_binds", CONTAINER_JOB, '--bind "${SCRATCH}",'),
])
def test_site_values_that_reach_the_batch_script_expand_on_the_node(key: str, job: str, line: str) -> None:
    value = {"python": "${VENV}/bin/python", "module_init": "${MODULESHOME}/init/bash",
             "container_binds": '["${SCRATCH}"]'}[key]
    assert line in rendered(job, f"{key}={value}")


@pytest.mark.parametrize(("key", "value", "where"), [
    ("python", "$VENV/bin/python", "python"),
    ("module_init", "$MODULESHOME/init/bash", "module_init"),
    ("container_binds", '["$SCRATCH"]', "container_binds.0"),
])
def test_a_bare_dollar_in_a_run_time_site_value_is_refused(key: str, value: str, where: str) -> None:
    written = value.strip('[]"')
    name = written.split("/")[0]
    assert site_problem(f"{key}={value}").endswith(
        f"{where}: '{written}' holds '{name}', which hpc-tf does not expand: write "
        f"${{{name[1:]}}} to expand it on the node, or $$ for a literal $")


def test_the_site_python_expands_in_the_hand_off_and_serving_node_scripts(tmp_path: Path) -> None:
    site = ["python=${VENV}/bin/python", f"serving.model_repository={tmp_path}"]
    loaded = load_spec_text(HANDOFF_JOB, "job.yaml", tmp_path)
    job = resolve(loaded, load_site("sandbox", site, environ=ALICE), "j-1", environ=ALICE)
    assert 'exec "${VENV}"/bin/python -m hpc.cli handoff' in render_handoff_script(job)
    assert 'exec "${VENV}"/bin/python -m hpc.cli serve node' in plan_slurm_node("sandbox", site).script


def test_site_literal_dollars_stay_literal() -> None:
    assert "command -v -- '/opt/$x/python' >/dev/null" in rendered(JOB, "python=/opt/$$x/python")


# --- passed on as written: sbatch_defaults, constraint (#SBATCH lines), the job's srun_extra ---------------

@pytest.mark.parametrize(("override", "where", "value"), [
    ("sbatch_defaults=[--comment=$USER]", "sbatch_defaults.0", "--comment=$USER"),
    ("constraint=$FEATURE", "constraint", "$FEATURE"),
])
def test_a_dollar_in_an_sbatch_line_of_the_site_is_refused(override: str, where: str, value: str) -> None:
    assert site_problem(override).endswith(
        f"{where}: '{value}' holds a $: sbatch reads #SBATCH lines without a shell, so no variable "
        "there is expanded; write the value itself")


@pytest.mark.parametrize(("field", "message"), [
    ("sbatch_extra: ['--mail-user=$USER@lab.org']", "sbatch reads #SBATCH lines without a shell"),
    ("resources: {constraint: '$FEATURE'}", "sbatch reads #SBATCH lines without a shell"),
    ("srun_extra: ['--cpu-bind=map_cpu:$CPUS']", "hpc-tf passes srun options as written"),
])
def test_a_dollar_in_a_job_option_passed_as_written_is_refused(field: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text(f"{JOB}{field}\n", "job.yaml", Path("/p"))
    assert f"holds a $: {message}, so no variable there is expanded; write the value itself" in str(info.value)

