"""The submitit API's pure parts: spec -> submitit parameters, the requeue teardown, a task's set-up.

submitit's own script builder (``_make_sbatch_string``, what ``update_parameters`` validates with)
renders the parameters, and bash reads the result, so these check what sbatch would really get.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _batch_fixtures import install_run_dir
from _runtime_fixtures import recorded_tasks
from submitit.slurm.slurm import _make_sbatch_string

from hpc.errors import HpcTfError, SpecError
from hpc.functions import FunctionTask, plan_function
from hpc.functions.plan import FUNCTION_PREFIX, PLACEHOLDER_COMMAND, load_function_spec, requeue_lines
from hpc.functions.task import SITE_DIR
from hpc.render.directives import read_directives
from hpc.spec.model import JobSpec

SANDBOX = ("sandbox", ["runs_dir=/shared/runs"])


def train(x: int) -> int:
    return x + 1


def plan(spec: dict[str, Any], site: str = SANDBOX[0], overrides: list[str] = SANDBOX[1], **kw: Any) -> Any:
    return plan_function(train, spec, site, overrides, environ={"HOME": "/home/alice", "USER": "alice"}, **kw)


def sbatch_text(parameters: dict[str, Any], folder: str = "/shared/runs/x/submitit") -> str:
    return _make_sbatch_string(command="python -u -m submitit.core._submit x", folder=folder, **parameters)


def directives(text: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            key, sep, value = line.removeprefix("#SBATCH --").partition("=")
            found[key] = value if sep else None
    return found


def test_resources_of_a_two_node_spec_become_submitit_slurm_parameters() -> None:
    p = plan({"name": "fn", "resources": {"nodes": 2, "tasks_per_node": 2, "gpus_per_node": 4, "cpus_per_task": 2,
                                          "mem": "7G", "time": "1:30:00", "constraint": "fast", "exclusive": True},
              "sbatch_extra": ["--mail-type=END,FAIL", "--hold"]})
    assert p.executor == "slurm"  # the site's launcher
    assert p.python == "/opt/hpc-tf/venv/bin/python"  # the site's python, as the bootstrap uses
    assert p.parameters == {
        "job_name": "fn", "nodes": 2, "ntasks_per_node": 2, "time": 90, "stderr_to_stdout": True,
        # --cpus-per-task on srun too: Slurm 22.05/23.02 steps do not inherit it (one CPU per task otherwise)
        "srun_args": ["--kill-on-bad-exit=1", "--cpus-per-task=2"], "wckey": None, "partition": "gpu", "account": "lab",
        "gres": "gpu:4", "cpus_per_task": "2", "mem": "7G", "constraint": "fast", "exclusive": True,
        "additional_parameters": {"mail-type": "END,FAIL", "hold": True},
    }
    assert p.folder == Path(p.job.run_dir) / "submitit"
    assert p.job.run_dir.startswith("/shared/runs/fn-")
    text = sbatch_text(p.parameters)
    assert directives(text) == {
        "account": "lab", "constraint": "fast", "cpus-per-task": "2", "exclusive": None, "gres": "gpu:4",
        "hold": None, "job-name": "fn", "mail-type": "END,FAIL", "mem": "7G", "nodes": "2", "ntasks-per-node": "2",
        "open-mode": "append", "output": "/shared/runs/x/submitit/%j_0_log.out", "partition": "gpu",
        "signal": "USR2@90", "time": "90",
    }
    assert ("srun --unbuffered --output /shared/runs/x/submitit/%j_%t_log.out --kill-on-bad-exit=1 --cpus-per-task=2 "
            "python") in text
    subprocess.run(["bash", "-n"], input=text, text=True, check=True, timeout=30)


# sbatch reads a backslash as an escape even inside submitit's single quotes: these would end the quoting
SMUGGLERS = [
    {"sbatch_extra": ["--comment=\\'\"'\" --partition=other --array=0-999 #"]},
    {"resources": {"constraint": "\\'\"'\" --gpus-per-node=8 #"}},
    {"resources": {"constraint": "it's"}},
]


@pytest.mark.parametrize("spec", SMUGGLERS)
def test_a_value_submitits_quoting_cannot_carry_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(HpcTfError, match="which submitit's #SBATCH lines cannot carry safely"):
        plan({"name": "fn", **spec})


@pytest.mark.parametrize("value", ["a b", "x#y", 'say "hi"', "100%", "a&b|c", "é ü"])
def test_other_hostile_values_reach_submitits_script_exactly(value: str) -> None:
    p = plan({"name": "fn", "resources": {"constraint": value}, "sbatch_extra": [f"--comment={value}"]})
    options = read_directives(sbatch_text(p.parameters))  # as sbatch reads them
    assert options["constraint"] == value and options["comment"] == value
    assert options["partition"] == "gpu" and "array" not in options


def test_gpus_per_task_with_a_type_and_a_time_limit_rounded_up_to_minutes() -> None:
    p = plan({"name": "fn", "resources": {"gpus_per_task": 1, "gpu_type": "a100", "time": "10:01"}})
    assert p.parameters["gpus_per_task"] == "a100:1"
    assert "gres" not in p.parameters
    assert p.parameters["time"] == 11  # submitit counts minutes; never less than asked


def test_a_spec_needs_no_command_and_its_command_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: fn\nresources:\n  nodes: 2\n")
    loaded = load_function_spec(tmp_path / "job.yaml")
    assert loaded.spec.command == PLACEHOLDER_COMMAND
    assert loaded.base_dir == tmp_path
    with_command = JobSpec.model_validate({"name": "fn", "command": "python train.py"})
    for spec in (tmp_path / "job.yaml", str(tmp_path / "job.yaml"), {"name": "fn"}, with_command):
        p = plan(spec)  # type: ignore[arg-type]
        assert p.job.command == (f"{FUNCTION_PREFIX}{__name__}.train",)


def test_environment_setup_and_the_python_of_a_container(tmp_path: Path) -> None:
    p = plan({"name": "fn", "environment": {"modules": ["cuda/12.2"], "venv": "envs/it's here",
                                            "python": "python3.11", "container": {"image": "/img/tf.sif"}}},
             overrides=[*SANDBOX[1], "module_init=/etc/lmod init.sh"])
    # each step checked (tests/unit/test_setup_fails_closed.py runs them): the steps themselves, in order
    steps = [line.split(" || ")[0] for line in p.parameters["setup"] if line.startswith(("source ", "module load "))]
    assert steps == [
        "source '/etc/lmod init.sh'",
        "module load cuda/12.2",
        f"source '{Path.cwd()}/envs/it'\"'\"'s here/bin/activate'",
    ]
    assert p.python.startswith("apptainer exec --bind ")  # a CPU job: no GPU driver inside (gpu: auto)
    assert p.python.endswith(" /img/tf.sif python3.11")
    subprocess.run(["bash", "-n"], input=sbatch_text(p.parameters), text=True, check=True, timeout=30)


def test_preemption_signals_the_tasks_and_requeues_on_their_exit_code() -> None:
    p = plan({"name": "fn", "resources": {"time": "30:00"},
              "preemption": {"enabled": True, "warning_seconds": 120, "max_restarts": 2}})
    assert p.parameters["additional_parameters"] == {"requeue": True, "signal": "USR1@120"}
    assert p.parameters["teardown"] == requeue_lines(p.job)
    found = directives(sbatch_text(p.parameters))
    assert (found["signal"], "requeue" in found) == ("USR1@120", True)  # hpc-tf's warning replaces submitit's


def preemptible_job(tmp_path: Path) -> Any:
    """A function job with max_restarts 2 whose run directory holds what its teardown runs."""
    p = plan({"name": "fn", "resources": {"time": "30:00"},
              "preemption": {"enabled": True, "warning_seconds": 120, "max_restarts": 2}},
             overrides=[f"runs_dir={tmp_path / 'runs'}"])
    install_run_dir(p.job)
    return p.job


@pytest.mark.parametrize(("status", "restarts", "requeued", "exit_code"),
                         [(75, 0, True, 0), (75, 1, True, 0), (75, 2, False, 75), (0, 0, False, 0), (1, 0, False, 1)])
def test_requeue_teardown_in_bash(tmp_path: Path, status: int, restarts: int, requeued: bool, exit_code: int) -> None:
    """The lines run right after submitit's srun line: ``$?`` is the step's exit code."""
    (tmp_path / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/scontrol.args\n")
    (tmp_path / "scontrol").chmod(0o755)
    job = preemptible_job(tmp_path)
    script = "\n".join([f"(exit {status})", "", "", "# teardown", *requeue_lines(job)])
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": str(restarts)}
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == exit_code, result.stderr
    args = tmp_path / "scontrol.args"
    assert (args.read_text().split() if args.exists() else None) == (["requeue", "42"] if requeued else None)


def test_the_local_executor_is_a_job_of_the_local_launcher_running_submitits_entry_point() -> None:
    """Run records, logs, status and requeue as for hpc-tf launch --site local: the same script, whose
    command is submitit's task entry point, under the bootstrap."""
    p = plan({"name": "fn", "resources": {"nodes": 2, "tasks_per_node": 2, "gpus_per_node": 2, "time": "2:00"}},
             site="local", overrides=["partitions.local.gpus_per_node=2"])
    assert (p.executor, p.job.launcher, p.job.python) == ("local", "local", sys.executable)
    assert p.job.command == (FUNCTION_PREFIX + "test_functions.train",)  # resolved.json names the function
    assert p.script is not None
    options = read_directives(p.script)
    assert (options["nodes"], options["ntasks-per-node"], options["gres"], options["time"]) == ("2", "2", "gpu:2",
                                                                                               "00:02:00")
    folder = Path(p.job.run_dir) / "submitit"
    assert f"bootstrap.py --resolved {p.job.run_dir}/resolved.json -- \\\n    {sys.executable} -u -m " \
           f"submitit.core._submit {folder}\n" in p.script
    assert "local_step.py" in p.script and "srun" not in p.script.split("exec ", 1)[1]
    assert "export SUBMITIT_EXECUTOR=slurm\n" in p.script  # submitit reads the launcher's emulated Slurm step
    debugged = plan({"name": "fn"}, executor="local")  # a Slurm site, debugged locally
    assert (debugged.executor, debugged.job.launcher) == ("local", "local")


@pytest.mark.parametrize(("spec", "site", "message"), [
    ({"name": "fn", "resources": {"nodes": 0}}, "sandbox", "resources.nodes"),
    ({"name": "fn", "resources": {"gpus_per_node": 8}}, "sandbox", "do not fit"),
    ({"name": "fn", "bogus": 1}, "sandbox", "bogus"),
])
def test_invalid_specs_are_refused_like_hpc_tf_launch_refuses_them(spec: dict[str, Any], site: str,
                                                                   message: str) -> None:
    with pytest.raises(SpecError, match=message):
        plan(spec, site=site)


def test_a_function_job_has_no_handoff_and_no_unknown_executor() -> None:
    with pytest.raises(HpcTfError, match="handoff"):
        plan({"name": "fn", "handoff": {"model": "m"}})
    with pytest.raises(HpcTfError, match="executor"):
        plan({"name": "fn"}, executor="ssh")


def task_for(spec: dict[str, Any], **kw: Any) -> FunctionTask:
    p = plan(spec, **kw)
    return FunctionTask(train, runtime=p.job.runtime.model_dump(mode="json"), env=p.job.env, run_dir=p.job.run_dir,
                        output_dir=p.job.output_dir, workdir=p.job.workdir, name="tests.train")


def slurm_task(rank: int) -> dict[str, str]:
    """What Slurm gives task ``rank`` of a 2-node step, one task and two GPUs per node (recorded)."""
    return {**recorded_tasks("gres2-1task-per-node")[rank], "PYTHONPATH": "/mine"}


def test_a_slurm_task_gets_tf_config_its_gpus_and_the_hooks() -> None:
    task = task_for({"name": "fn", "env": {"DATA": "/d"}, "resources": {"nodes": 2, "gpus_per_node": 2}})
    envs = []
    for rank in (0, 1):
        environ = slurm_task(rank)
        assert task.set_up(environ).step.rank == rank
        envs.append(environ)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "0,1"]  # each node's two, as Slurm bound them
    workers = [json.loads(e["TF_CONFIG"]) for e in envs]
    assert workers[0]["cluster"] == workers[1]["cluster"]
    assert [w["task"]["index"] for w in workers] == [0, 1]
    assert [a.rpartition(":")[0] for a in workers[0]["cluster"]["worker"]] == ["node1", "node2"]
    for e in envs:
        assert e["DATA"] == "/d"
        assert e["HPC_TF_OUTPUT_DIR"] == str(Path(task.run_dir) / "output")
        assert json.loads(e["HPC_TF_HOOKS"])["worker_nodes"] == ["node1", "node2"]
        assert e["PYTHONPATH"] == f"{SITE_DIR}{os.pathsep}/mine"
    assert (SITE_DIR / "sitecustomize.py").is_file()


def test_a_function_task_expands_references_as_the_batch_script_does() -> None:
    """env values in order (one may use the one before), output_dir and checkpoint.dir, with the task's
    variables; ``$$`` a literal ``$``."""
    task = task_for({"name": "fn", "env": {"A_DATA": "${SCRATCH}/d-${SLURM_JOB_ID}", "B_COPY": "${A_DATA} $$5"},
                     "output_dir": "${SCRATCH}/out", "checkpoint": {"dir": "${SCRATCH}/ckpt", "every_steps": 9}})
    environ = {**slurm_task(0), "SCRATCH": "/scratch/u"}
    task.set_up(environ)
    job = environ["SLURM_JOB_ID"]
    assert (environ["A_DATA"], environ["B_COPY"]) == (f"/scratch/u/d-{job}", f"/scratch/u/d-{job} $5")
    assert environ["HPC_TF_OUTPUT_DIR"] == "/scratch/u/out"
    assert environ["HPC_TF_CHECKPOINT_DIR"] == "/scratch/u/ckpt"
    assert json.loads(environ["HPC_TF_HOOKS"])["preemption"]["checkpoint_dir"] == "/scratch/u/ckpt"


RUN_TASK = """
import json, pickle, sys
task = pickle.load(open(sys.argv[1], "rb"))
print(json.dumps(task()))
"""


def run_task(task: FunctionTask, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As in a task: unpickle in a fresh process, set up, call."""
    import cloudpickle  # submitit's pickler

    data = cloudpickle.dumps(task)
    assert b"hpc.functions.task" in data and b"FunctionTask" in data  # by reference: hpc is installed there
    (tmp_path / "task.pkl").write_bytes(data)
    env = {**env, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parent)}  # fn's module: this file
    return subprocess.run([sys.executable, "-c", RUN_TASK, str(tmp_path / "task.pkl")], env=env, cwd="/",
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_task_pickles_by_reference_and_runs_in_a_fresh_process(tmp_path: Path) -> None:
    """The call runs in the spec's workdir, after set-up (here ``os.getcwd``)."""
    task = task_for({"name": "fn", "workdir": str(tmp_path), "output_dir": str(tmp_path / "out")})
    task.fn = os.getcwd
    result = run_task(task, tmp_path, recorded_tasks("cpu-2tasks")[0])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == str(tmp_path)
    (record,) = [line for line in result.stderr.splitlines() if line.startswith("hpc-tf bootstrap: {")]
    shown = json.loads(record.partition(": ")[2])
    assert (shown["rank"], shown["node"], shown["command"]) == (0, "cpu1", ["tests.train"])
    hooks = json.loads(shown["env"].pop("HPC_TF_HOOKS"))  # metrics are on by default: the chief records them
    assert hooks["metrics"]["path"].endswith("/metrics.jsonl") and hooks["preemption"] is None
    assert {k: v for k, v in shown["env"].items() if k != "PYTHONPATH"} == {  # one CPU worker
        "CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert (tmp_path / "out").is_dir()


def runtime_module_of_resumable() -> list[object]:
    """What a function's own code does in a custom loop (the import the README documents)."""
    from hpc_tf_runtime import preemption  # type: ignore[import-not-found]  # the job's name for the runtime

    import hpc.runtime.node.preemption as library

    return [preemption is library, preemption.configured() is not None]


@pytest.mark.parametrize(("section", "configured"), [({}, False),
                                                     ({"preemption": {"enabled": True}}, True)])
def test_a_function_imports_hpc_tf_runtime_as_the_modules_its_hooks_were_installed_from(
    tmp_path: Path, section: dict[str, Any], configured: bool
) -> None:
    """With or without checkpointing; and it is one copy, so Resumable sees the job's settings."""
    task = task_for({"name": "fn", "workdir": str(tmp_path), "output_dir": str(tmp_path / "out"), **section})
    task.fn = runtime_module_of_resumable
    result = run_task(task, tmp_path, recorded_tasks("cpu-2tasks")[0])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, configured]


def test_importing_the_api_imports_neither_submitit_nor_tensorflow() -> None:
    program = ("import sys, hpc; f = hpc.submit_function; import hpc.functions.task; "
               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('submitit', 'tensorflow', 'keras')))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
