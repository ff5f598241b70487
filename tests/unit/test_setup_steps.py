"""Setup steps, module subcommands and srun options (issue 20): what the spec accepts and refuses, and
what the rendered script does with them, run in bash with a stand-in python (the local launcher's
script: a node step runs once there; the cluster tests run the Slurm one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpc.errors import SpecError
from hpc.functions.plan import setup_lines, slurm_parameters
from hpc.render.cpu_jobs import render_handoff_script
from hpc.render.script import render_script
from hpc.resolve import resolve
from hpc.scheduler.managed import MANAGED_SRUN_FLAGS
from hpc.scheduler.sbatch_options import SRUN
from hpc.site.load import load_site
from hpc.spec import load_spec_text
from tests.unit.test_setup_fails_closed import Setup, assert_stopped

ALICE = {"HOME": "/home/alice", "USER": "alice"}
# the stand-in python: records where the command started and what the setup left in its environment
PYTHON = """#!/bin/bash
printf '%s %s\\n' "$PWD" "${FROM_SETUP:-unset}" > "$SHIM_OUT/python-ran"
"""
# a module system that records each subcommand, in order
MODULE_INIT = 'module() { echo "$*" >> "$SHIM_OUT/module-calls"; }\n'


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    made = Setup(tmp_path)
    made.python.write_text(PYTHON)
    made.module_init.write_text(MODULE_INIT)
    return made


def problem(yaml_text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec_text(f"name: a\ncommand: x\n{yaml_text}\n", "job.yaml", Path("/x"))
    (found,) = info.value.problems
    return str(found)


def steps(*lines: str) -> str:
    return "setup:\n" + "".join(f"  - {line}\n" for line in lines)


# ---- the spec -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("modules", "message"),
    [
        ("[purge]", "'purge' is 'module purge', not a module to load: set environment.module_purge: true"),
        ("['use ~/modulefiles']", "'use ~/modulefiles' is 'module use', not a module to load: list the directory "
                                  "under environment.module_use"),
        ("['load gcc/12']", "'load gcc/12' is 'module load', not a module to load: list the module's name alone"),
    ],
)
def test_module_subcommands_written_as_modules_are_refused_pointing_to_the_field(modules: str, message: str) -> None:
    assert problem(f"environment: {{modules: {modules}}}") == f"job.yaml:3: environment.modules[0]: {message}"


@pytest.mark.parametrize(
    ("key", "option"),
    [("SLURM_MPI_TYPE", "--mpi=…"), ("SLURM_CPU_BIND", "--cpu-bind=…"), ("SRUN_CPU_BIND", "--cpu-bind=…"),
     ("SRUN_CPUS_PER_TASK", "--cpus-per-task=…")],
)
def test_srun_variables_in_env_point_to_srun_extra(key: str, option: str) -> None:
    assert problem(f"env: {{{key}: x}}") == (f"job.yaml:3: env: {key} is read by srun as an option: write it under "
                                             f"srun_extra ({option}), which reaches the tasks' srun only")


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("[a]", "a setup step is a shell line, or {node: LINE} to run it once on every node"),
        ("true", "YAML reads this step as a bool, not a shell line: quote it"),
        ("{}", "a setup step is a shell line, or {node: LINE} to run it once on every node"),
        ("{nod: x}", "unknown key (did you mean 'node'?); allowed here: job, node"),
        ('"a\\nb"', "a setup line must be one line of printable text; it contains \\n"),
        ('{node: "a\\u2028b"}', "the value must be one line of printable text; it contains \\u2028"),
        ('{job: "a\\u2028b"}', "the value must be one line of printable text; it contains \\u2028"),
    ],
)
def test_a_setup_step_of_another_shape_is_refused_with_its_index(step: str, message: str) -> None:
    assert problem(steps("'true'", step)).startswith("job.yaml:5: setup[1]")
    assert problem(steps("'true'", step)).endswith(message)


@pytest.mark.parametrize(
    ("entry", "canonical"),
    [("-l", "--label"), ("-u", "--unbuffered"), ("--mpi pmi2", "--mpi=pmi2"), ("--cpu-bi=cores", "--cpu-bind=cores"),
     ("--gpu-bind=none", "--gpu-bind=none")],
)
def test_srun_extra_is_read_as_srun_reads_it(entry: str, canonical: str) -> None:
    spec = load_spec_text(f"name: a\ncommand: x\nsrun_extra: [{json.dumps(entry)}]\n", "job.yaml", Path("/x")).spec
    assert spec.srun_extra == [canonical]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("-n 8", "'-n 8' is --ntasks, which hpc-tf manages: the tasks' layout comes from resources"),
        ("-c4", "'-c4' is --cpus-per-task, which hpc-tf manages: set resources.cpus_per_task"),
        ("--outp=x", "'--outp=x' is --output, which hpc-tf manages: hpc-tf writes each task's log"),
        ("-K", "'-K' is --kill-on-bad-exit, which hpc-tf manages"),
        ("--mpii=pmi2", "'--mpii=pmi2' is not an srun option: did you mean --mpi?"),
        ("--array=1-3", "'--array=1-3' is not an srun option"),  # sbatch's, not srun's
        ("--label\u2028", "an srun option must be one line of printable text"),
    ],
)
def test_srun_extra_refuses_managed_and_unknown_options(entry: str, message: str) -> None:
    assert message in problem(f"srun_extra: [{json.dumps(entry)}]")


def test_every_managed_srun_option_is_an_srun_option() -> None:
    assert set(MANAGED_SRUN_FLAGS) <= {name for table in SRUN.long.values() for name in table}


# ---- the rendered script --------------------------------------------------------------------------

def sandbox_job(text: str) -> str:
    loaded = load_spec_text(f"name: a\ncommand: [train.py]\n{text}", "job.yaml", Path("/x"))
    return render_script(resolve(loaded, load_site("sandbox", environ=ALICE), "a-run", environ=ALICE))


def test_srun_extra_is_rendered_on_the_tasks_srun_and_submitits_only() -> None:
    text = "resources: {nodes: 2, cpus_per_task: 2}\nsrun_extra: [-l, --mpi=pmi2]\nsetup: [{node: hostname}]\n"
    script = sandbox_job(text)
    (task_srun,) = [line for line in script.splitlines() if line.lstrip().startswith("srun --kill-on-bad-exit")]
    assert "--cpus-per-task=2 --label --mpi=pmi2 --output=" in task_srun
    (node_srun,) = [line for line in script.splitlines() if line.startswith("srun ")]
    assert node_srun.startswith("srun --nodes=2 --ntasks=2 --ntasks-per-node=1 bash -c hostname ||")
    loaded = load_spec_text(f"name: a\ncommand: [train.py]\n{text}", "job.yaml", Path("/x"))
    job = resolve(loaded, load_site("sandbox", environ=ALICE), "a-run", environ=ALICE)
    assert slurm_parameters(job)["srun_args"] == ["--kill-on-bad-exit=1", "--cpus-per-task=2", "--label",
                                                  "--mpi=pmi2"]


def test_module_purge_and_use_come_before_the_site_and_job_modules(setup: Setup) -> None:
    job = setup.job("{module_purge: true, module_use: [~/modulefiles, 'site mods'], modules: [known/1.0]}",
                    (f"module_init={setup.module_init}", "modules=[base/1]"))
    result = setup.run(render_script(job))
    assert result.returncode == 0, result.stderr
    assert (setup.out / "module-calls").read_text().splitlines() == [
        "purge", "use /home/alice/modulefiles", f"use {setup.root}/site mods", "load base/1", "load known/1.0"]


def test_job_lines_run_in_the_batch_shell_in_order_and_node_lines_once_here(setup: Setup) -> None:
    (setup.workdir / "sub").mkdir()
    (setup.workdir / "env.sh").write_text("export FROM_SETUP=sourced\n")
    result = setup.run(render_script(setup.job(extra=steps(
        "source env.sh",
        "cd sub && echo \"$UNSET_IN_A_HAND_WRITTEN_SCRIPT\" >> ../order",  # no set -u in a step
        "{node: echo node >> ../order}",
        "false | true",  # no pipefail in a step either
        "echo job >> ../order",
    ))))
    assert result.returncode == 0, result.stderr
    assert (setup.workdir / "order").read_text().splitlines() == ["", "node", "job"]
    # source and cd last for the job: the command starts in sub/, with what env.sh exported
    assert (setup.out / "python-ran").read_text().split() == [str(setup.workdir / "sub"), "sourced"]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("exit_3() { return 3; }; exit_3", "setup[1] exited with status 3: exit_3() { return 3; }; exit_3: "
                                           "fix it under setup in job.yaml"),
        ("if then fi", "setup[1] exited with status 2: if then fi: fix it under setup in job.yaml"),
        ("{node: 'test -d no-such-dir'}", "setup[1] (once per node) exited with status 1: test -d no-such-dir: "
                                          "fix it under setup in job.yaml"),
    ],
)
def test_a_failing_step_stops_the_job_naming_it(setup: Setup, step: str, message: str) -> None:
    result = setup.run(render_script(setup.job(extra=steps("'true'", step, "touch later-step-ran"))))
    assert_stopped(setup, result, message)
    assert not (setup.workdir / "later-step-ran").exists()


def test_submitit_setup_lines_carry_the_steps_of_a_function_job(setup: Setup) -> None:
    """A function job (submit_function) takes the same spec: its steps reach submitit's setup lines, which
    submitit's local executor joins with '&&' before the command."""
    (setup.workdir / "env.sh").write_text("export FROM_SETUP=sourced\n")
    job = setup.job(extra=steps(f"cd '{setup.workdir}'", "source env.sh", "{node: echo node >> order}"))
    result = setup.run(" && ".join([*setup_lines(job), str(setup.python)]) + "\n")
    assert result.returncode == 0, result.stderr
    assert (setup.workdir / "order").read_text() == "node\n"
    assert (setup.out / "python-ran").read_text().split() == [str(setup.workdir), "sourced"]
    (setup.out / "python-ran").unlink()
    failing = setup.job(extra=steps("'false'", "touch later-step-ran"))
    result = setup.run(" && ".join([*setup_lines(failing), str(setup.python)]) + "\n")
    assert_stopped(setup, result, "setup[0] exited with status 1: false: fix it under setup in job.yaml")


def test_a_handoff_job_purges_and_uses_modules_as_the_training_job(setup: Setup) -> None:
    job = setup.job("{module_purge: true, module_use: [/opt/mods]}", (f"module_init={setup.module_init}",),
                    extra="handoff: {model: mlp}\n")
    script = render_handoff_script(job)
    assert "\nmodule purge || " in script and "\nmodule use /opt/mods || " in script
