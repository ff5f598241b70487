"""Fail closed: a job whose software environment cannot be set up stops there, naming the step.

Each rendered script runs in bash, with a stand-in python that records whether the job's command
started; no Slurm is needed (the training job is rendered for the local launcher, whose supervisor
turns a non-zero exit of the script into FAILED).
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from hpc.functions.plan import setup_lines
from hpc.render.cpu_jobs import ServeJob, render_handoff_script, render_serve_script
from hpc.render.script import render_script
from hpc.resolve import ResolvedJob, resolve
from hpc.site.load import load_site
from hpc.spec import load_spec_text

ALICE = {"HOME": "/home/alice", "USER": "alice"}
# stands in for the job's python: records that the command started, instead of starting it
PYTHON = """#!/bin/bash
printf '%s\\n' "${VIRTUAL_ENV:-no venv}" > "$SHIM_OUT/python-ran"
"""
# a module system that knows one module, as Lmod answers for an unknown one (non-zero)
MODULE_INIT = """module() {
  if [ "$1" = load ] && [ "$2" != known/1.0 ]; then
    echo "Lmod has detected the following error: The following module(s) are unknown: $2" >&2
    return 1
  fi
  export LOADED_MODULE=$2
}
"""
# a venv whose activation is visible to the command (sourced in the script's own scope)
ACTIVATE = 'export VIRTUAL_ENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"\n'


class Setup:
    """A scratch project: shims, a module init file, a venv that exists, and runs of rendered scripts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "out"
        self.out.mkdir()
        self.python = self._executable("bin/python3", PYTHON)
        self.module_init = root / "lmod init.sh"
        self.module_init.write_text(MODULE_INIT)
        self.venv = root / "venvs" / "it's tf"
        (self.venv / "bin").mkdir(parents=True)
        (self.venv / "bin" / "activate").write_text(ACTIVATE)
        self.workdir = root / "project"
        self.workdir.mkdir()

    def _executable(self, name: str, body: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        path.chmod(stat.S_IRWXU)
        return path

    def job(self, environment: str = "", overrides: tuple[str, ...] = (), extra: str = "") -> ResolvedJob:
        text = f"name: env-check\ncommand: [train.py]\nworkdir: '{self.workdir}'\n{extra}"
        if environment:
            text += f"environment: {environment}\n"
        site = load_site("local", (f"runs_dir={self.root / 'runs'}", f"python={self.python}", *overrides),
                         environ=ALICE)
        return resolve(load_spec_text(text, "job.yaml", self.root), site, "env-check-run", environ=ALICE)

    def run(self, script: str, *, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
        subprocess.run(["bash", "-n"], input=script, text=True, check=True)
        (self.root / "job.sbatch").write_text(script)
        env = {"PATH": path, "SHIM_OUT": str(self.out), "HOME": str(self.root)}
        return subprocess.run(["bash", str(self.root / "job.sbatch")], env=env, cwd=self.root,
                              capture_output=True, text=True, timeout=30)

    @property
    def command_ran(self) -> bool:
        return (self.out / "python-ran").exists()


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def assert_stopped(setup: Setup, result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, result.stderr
    assert f"hpc-tf: setup failed: {message}\n" in result.stderr
    assert not setup.command_ran, "the job's command ran in a half-set-up environment"


def missing_venv(venv: Path) -> str:
    return f"venv {venv} cannot be activated (no {venv}/bin/activate): check environment.venv in job.yaml"


def unknown_module(name: str) -> str:
    return (f"module load {name} failed: check environment.modules in job.yaml or modules in the site config "
            "('module avail' lists what the site has)")


def test_a_missing_venv_stops_the_job_naming_the_venv(setup: Setup) -> None:
    missing = setup.root / "venvs" / "gone"
    result = setup.run(render_script(setup.job(f"{{venv: '{missing}'}}")))
    assert_stopped(setup, result, missing_venv(missing))


def test_a_venv_that_fails_to_activate_stops_the_job(setup: Setup) -> None:
    (setup.venv / "bin" / "activate").write_text("return 3\n")
    result = setup.run(render_script(setup.job(f"{{venv: \"{setup.venv}\"}}")))
    assert_stopped(setup, result, f"venv {setup.venv}: sourcing {setup.venv}/bin/activate failed: "
                                  "check environment.venv in job.yaml")


def test_an_unknown_module_stops_the_job(setup: Setup) -> None:
    job = setup.job("{modules: [known/1.0, nope/2.0]}", (f"module_init={setup.module_init}",))
    result = setup.run(render_script(job))
    assert "The following module(s) are unknown: nope/2.0" in result.stderr
    assert_stopped(setup, result, unknown_module("nope/2.0"))


def test_modules_without_a_module_command_name_the_site_setting(setup: Setup) -> None:
    result = setup.run(render_script(setup.job("{modules: [known/1.0]}")))
    assert_stopped(setup, result, "no 'module' command to load known/1.0 with: set module_init in the site "
                                  "config to the file that defines it (e.g. Lmod's init/bash)")


def test_a_module_init_that_is_not_there_stops_the_job(setup: Setup) -> None:
    gone = setup.root / "no-lmod.sh"
    result = setup.run(render_script(setup.job("{modules: [known/1.0]}", (f"module_init={gone}",))))
    assert_stopped(setup, result, f"module_init {gone} is not a readable file: check module_init in the site config")


def test_a_module_init_that_defines_no_module_command_is_named(setup: Setup) -> None:
    setup.module_init.write_text("# not an init file\n")
    result = setup.run(render_script(setup.job("{modules: [known/1.0]}", (f"module_init={setup.module_init}",))))
    assert_stopped(setup, result, f"module_init {setup.module_init} defines no module command to load known/1.0 "
                                  "with: check module_init in the site config")


def test_conda_missing_or_failing_stops_the_job(setup: Setup) -> None:
    result = setup.run(render_script(setup.job("{conda: 'my env'}")))
    assert_stopped(setup, result, "no 'conda' command to activate the conda environment my env with: "
                                  "put conda on PATH (e.g. its module in environment.modules)")
    shims = setup.root / "shims"
    setup._executable("shims/conda", '#!/bin/bash\n[ "$1" = activate ] && { echo "no env $2" >&2; exit 1; }\n:\n')
    result = setup.run(render_script(setup.job("{conda: 'my env'}")), path=f"{shims}:/usr/bin:/bin")
    assert_stopped(setup, result, "conda environment my env cannot be activated: check environment.conda in "
                                  "job.yaml ('conda env list' shows the environments)")


def test_a_python_that_is_not_there_stops_the_job_naming_it(setup: Setup) -> None:
    result = setup.run(render_script(setup.job(overrides=("python=/opt/gone/bin/python3",))))
    assert_stopped(setup, result, "python /opt/gone/bin/python3 is not an executable file or command: "
                                  "check environment.python in job.yaml or python in the site config")


def test_an_output_dir_that_cannot_be_made_stops_the_job(setup: Setup) -> None:
    (setup.root / "a-file").write_text("")
    out = setup.root / "a-file" / "out"
    result = setup.run(render_script(setup.job(extra=f"output_dir: '{out}'\n")))
    assert_stopped(setup, result, f"cannot create the output directory {out}: check output_dir in job.yaml")


def test_a_job_whose_setup_works_runs_its_command_in_that_environment(setup: Setup) -> None:
    job = setup.job(f"{{modules: [known/1.0], venv: \"{setup.venv}\"}}", (f"module_init={setup.module_init}",))
    result = setup.run(render_script(job))
    assert result.returncode == 0, result.stderr
    assert (setup.out / "python-ran").read_text().strip() == str(setup.venv)  # activated in the script's scope


def test_a_handoff_job_with_a_missing_venv_stops_before_the_handoff(setup: Setup) -> None:
    missing = setup.root / "gone"
    job = setup.job(f"{{venv: '{missing}'}}", extra="handoff: {model: mlp}\n")
    Path(job.run_dir).mkdir(parents=True)
    result = setup.run(render_handoff_script(job))
    assert_stopped(setup, result, missing_venv(missing))


def test_a_serving_node_job_with_an_unknown_module_stops_before_the_server(setup: Setup) -> None:
    job = ServeJob(site="sandbox", repository=str(setup.root / "models"), log=str(setup.root / "serve"),
                   command=(str(setup.python), "-m", "hpc.cli", "serve", "node"), partition="cpu", account=None,
                   qos=None, time_seconds=600, cpus=1, mem=None, module_init=str(setup.module_init),
                   modules=("tritonserver/2.51",))
    result = setup.run(render_serve_script(job))
    assert_stopped(setup, result, unknown_module("tritonserver/2.51"))


def test_submitit_setup_lines_stop_a_function_job_too(setup: Setup) -> None:
    """submitit's local executor joins the setup lines with '&&' before the command: they must chain."""
    missing = setup.root / "gone"
    lines = setup_lines(setup.job(f"{{venv: '{missing}'}}"))
    result = setup.run(" && ".join([*lines, f"{setup.python} -c pass"]) + "\n")
    assert_stopped(setup, result, missing_venv(missing))
    assert setup_lines(setup.job()) == [], "a job without an environment needs no setup"
