"""(spec, site) -> what submitit is asked for: the executor, its parameters, the job's python (pure).

A function job is resolved exactly like a command job (:func:`hpc.resolve.resolve`), so the spec's
resources, the site's partitions and limits and every validation message are the same. Only the last
step differs by executor:

* ``slurm``: the resolved job becomes the parameters of submitit's :class:`~submitit.SlurmExecutor`,
  which writes its own script around ``srun python -m submitit.core._submit``;
* ``local``: the job is a job of hpc-tf's local launcher, rendered like any command job whose command
  is submitit's task entry point (``python -m submitit.core._submit FOLDER``): the same run directory,
  run records, logs, status, cancel and requeue as ``hpc-tf launch --site local``, and the bootstrap
  sets each task up before submitit calls the function.

The spec's ``command`` has no meaning for a function: it may be left out (a placeholder is used
while validating) and is ignored when given; ``resolved.json`` records the function instead.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hpc.errors import HpcTfError
from hpc.modelbase import validate_document
from hpc.paths import RunPaths
from hpc.render.directives import sbatch_options, step_options
from hpc.render.quoting import sh, sh_run_time
from hpc.render.script import container_prefix, driver_python, log_pattern, render_script, template_environment
from hpc.resolve import ResolvedJob, resolve
from hpc.rundir import new_run_id
from hpc.site.load import load_site
from hpc.spec.load import LoadedSpec
from hpc.spec.model import JobSpec
from hpc.text import run_time_literal, shown
from hpc.yamlsource import YamlDocument, load_yaml_file

ExecutorKind = Literal["slurm", "local"]
SpecInput = Path | str | Mapping[str, Any]

# stands in for the spec's command while validating; a function job has none
PLACEHOLDER_COMMAND = ("<python function>",)
FUNCTION_PREFIX = "python-function:"
# submitit's task entry point: it loads the pickled function by SLURM_JOB_ID / SLURM_PROCID
SUBMITIT_ENTRY = ("-u", "-m", "submitit.core._submit")

# sbatch options of hpc-tf's own directives that submitit writes itself, or that have a named
# submitit parameter: option -> submitit's SlurmExecutor parameter (None: submitit owns it)
_SUBMITIT_NAMES: dict[str, str | None] = {
    "job-name": None,
    "output": None,
    "nodes": None,
    "ntasks-per-node": None,
    "time": None,
    "open-mode": None,
    "signal": None,  # preemption: see _preemption()
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "gres": "gres",
    "gpus-per-task": "gpus_per_task",
    "cpus-per-task": "cpus_per_task",
    "mem": "mem",
    "constraint": "constraint",
    "exclusive": "exclusive",
}


@dataclass(frozen=True)
class FunctionPlan:
    """Everything decided for one function job; nothing written or submitted yet."""

    job: ResolvedJob
    executor: ExecutorKind
    parameters: dict[str, Any]  # slurm: for executor.update_parameters(**parameters)
    python: str  # slurm: the shell words that start the tasks' Python (submitit's ``python=``)
    script: str | None = None  # local: the batch script the local launcher runs (hpc.render)

    @property
    def run_dir(self) -> Path:
        return Path(self.job.run_dir)

    @property
    def folder(self) -> Path:
        """submitit's folder: inside the run directory, so one run keeps everything together."""
        return RunPaths.at(self.run_dir).submitit_dir


def function_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def load_function_spec(spec: SpecInput | JobSpec, base_dir: Path | None = None) -> LoadedSpec:
    """A job spec from a file, a mapping or a JobSpec; ``command`` may be missing.

    A mapping's relative paths are relative to ``base_dir`` (default: the current directory).
    """
    if isinstance(spec, JobSpec):
        spec = spec.model_dump(mode="json")
    if isinstance(spec, Mapping):
        document = YamlDocument(data=dict(spec), source="<job spec mapping>")
        base = (base_dir or Path.cwd()).resolve()
    else:
        path = Path(spec)
        document = load_yaml_file(path)
        base = path.resolve().parent
    if isinstance(document.data, dict) and "command" not in document.data:
        document = YamlDocument(data={**document.data, "command": list(PLACEHOLDER_COMMAND)},
                                source=document.source, lines=document.lines)
    loaded = validate_document(JobSpec, document, what="job spec")
    return LoadedSpec(spec=loaded, document=document, base_dir=base)


def plan_function(
    fn: Callable[..., Any],
    spec: SpecInput | JobSpec,
    site_name: str | None = None,
    overrides: Sequence[str] = (),
    executor: ExecutorKind | None = None,
    environ: Mapping[str, str] | None = None,
) -> FunctionPlan:
    env = os.environ if environ is None else environ
    loaded = load_function_spec(spec)
    site = load_site(site_name, overrides, env)
    job = resolve(loaded, site, new_run_id(loaded.spec.name), env)
    job = job.model_copy(update={"command": (FUNCTION_PREFIX + function_name(fn),)})
    kind = executor or job.launcher
    if kind not in ("slurm", "local"):
        raise HpcTfError(f"executor must be 'slurm' or 'local', not {kind!r}")
    if job.handoff is not None:
        raise HpcTfError("a function job cannot have a handoff section",
                         hint="export the model in the function, or launch a command job (hpc-tf launch)")
    if kind == "slurm":
        return FunctionPlan(job=job, executor="slurm", parameters=slurm_parameters(job),
                            python=container_prefix(job) + sh_run_time(job.python, "environment.python"))
    # the tasks run this Python (it has hpc-tf and submitit), on this machine: no container
    job = job.model_copy(update={"launcher": "local", "python": run_time_literal(sys.executable), "container": None})
    return FunctionPlan(job=job, executor="local", parameters={}, python=sh(sys.executable, "python"),
                        script=render_script(local_task_job(job)))


def local_task_job(job: ResolvedJob) -> ResolvedJob:
    """The job as the local launcher's script runs it: each task, set up by the bootstrap, starts
    submitit's task entry point, whose Slurm job environment reads the variables the launcher emulates."""
    folder = str(RunPaths.at(job.run_dir).submitit_dir)
    return job.model_copy(update={"command": (job.python, *SUBMITIT_ENTRY, run_time_literal(folder)),
                                  "env": (*job.env, ("SUBMITIT_EXECUTOR", "slurm"))})


def timeout_minutes(job: ResolvedJob) -> int:
    """submitit counts the time limit in whole minutes (``--time=N``); rounded up, never 0."""
    return max(1, math.ceil(job.time_seconds / 60))


def slurm_parameters(job: ResolvedJob) -> dict[str, Any]:
    """SlurmExecutor parameters: the job's ``#SBATCH`` options (hpc.render.directives) in submitit's words."""
    params: dict[str, Any] = {
        "job_name": job.name,
        "nodes": job.nodes,
        "ntasks_per_node": job.tasks_per_node,
        "time": timeout_minutes(job),
        # one log file per task (logs/task-<jobid>-<rank>.out links to it)
        "stderr_to_stdout": True,
        # the same step options as hpc-tf's own script (one dead worker stops the others; CPUs per task)
        "srun_args": step_options(job),
        # submitit tags jobs with --wckey=submitit; a site that enforces WCKeys may refuse it
        "wckey": None,
    }
    extra: dict[str, Any] = {}
    for option, value in sbatch_options(job, batch_log=""):
        if option in _SUBMITIT_NAMES:
            name = _SUBMITIT_NAMES[option]
            if name is not None:
                params[name] = True if value is None else value
        else:
            extra[option] = True if value is None else value
    for flag in job.sbatch_extra:
        name, sep, value = flag.removeprefix("--").partition("=")
        extra[name] = value if sep else True
    setup = setup_lines(job)
    if setup:
        params["setup"] = setup
    if job.warning_seconds is not None:
        extra.update(_preemption_options(job.warning_seconds))
        params["teardown"] = requeue_lines(job)
    if extra:
        params["additional_parameters"] = extra
    for name, value in (*params.items(), *extra.items()):
        if isinstance(value, str) and name not in ("setup", "teardown"):
            _submitit_directive_value(value, name)
    return params


def _submitit_directive_value(value: str, option: str) -> None:
    """submitit writes ``#SBATCH --option=<shlex.quote(value)>``; sbatch reads a backslash as an escape
    even inside single quotes, so a value with ``\\`` or ``'`` could end the quoting and add options of
    its own (a second --partition, an --array). hpc-tf's own scripts quote for sbatch; submitit's cannot."""
    for char in ("\\", "'"):
        if char in value:
            raise HpcTfError(f"{option.replace('_', '-')} {shown(value)} contains {char!r}, which submitit's "
                             "#SBATCH lines cannot carry safely",
                             hint="remove it, or launch the job as a command (hpc-tf launch)")


def setup_lines(job: ResolvedJob) -> list[str]:
    """The job's software environment (modules, conda or venv) and setup steps for submitit's ``setup``."""
    templates = template_environment()
    text = templates.get_template("environment.sh.j2").render(
        module_init=job.module_init, module_purge=job.module_purge, module_use=job.module_use, modules=job.modules,
        conda=job.conda, venv=job.venv, checks_follow=bool(job.setup),
    ) + templates.get_template("setup_steps.sh.j2").render(setup=job.setup, nodes=job.nodes,
                                                            local=job.launcher == "local")
    return [line for line in text.splitlines() if line.strip()]


def _preemption_options(warning_seconds: int) -> dict[str, Any]:
    # Not B: as in hpc-tf's script: submitit's batch shell has no trap, so Slurm signals the tasks
    # themselves, whose runtime checkpoints at an agreed step and exits REQUEUE_EXIT_CODE.
    return {"signal": f"USR1@{warning_seconds}", "requeue": True}


def requeue_lines(job: ResolvedJob) -> list[str]:
    """submitit's ``teardown``: the batch driver decides and requeues, by the policy of a launched job.

    submitit runs these right after its ``srun`` line, so ``$?`` is the step's exit code. The driver
    is exec'd, as in hpc-tf's own script, so Slurm's TERM after a requeue reaches it (and is ignored).
    """
    paths = RunPaths.at(job.run_dir)
    return [
        "hpc_tf_status=$?",
        f"exec {sh_run_time(driver_python(job), 'python')} -S {sh(str(paths.batch_driver), 'run_dir')} "
        f"--resolved {sh(str(paths.resolved), 'run_dir')} "
        f"--restart-log {sh(log_pattern(paths, RunPaths.RESTART_LOG_PATTERN), 'run_dir')} "
        '--step-status "$hpc_tf_status"',
    ]
