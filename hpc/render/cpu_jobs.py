"""The one-node CPU jobs beside training: the dependent hand-off job and the Triton serving node.

Same rules as :mod:`hpc.render.script`: Jinja2 with StrictUndefined, ``#SBATCH`` values through
:func:`~hpc.render.quoting.sbatch_value`, script words through the ``sh`` filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hpc import __version__
from hpc.paths import RunPaths
from hpc.render.quoting import sbatch_value, slurm_filename
from hpc.render.script import log_pattern, template_environment
from hpc.resolve import ResolvedJob
from hpc.serving.pipeline import handoff_command
from hpc.units import format_duration


def _directive_lines(opts: Sequence[tuple[str, str | None]]) -> list[str]:
    return [f"#SBATCH --{key}={sbatch_value(value, key)}" for key, value in opts if value]


def _cpu_job_options(
    *, name: str, output: str, cpus: int, mem: str | None, time_seconds: int,
    partition: str | None, account: str | None, qos: str | None,
) -> list[tuple[str, str | None]]:
    """One task on one node, in the same stable order as the training job's directives."""
    return [
        ("job-name", name),
        ("output", output),
        ("nodes", "1"),
        ("ntasks", "1"),
        ("time", format_duration(time_seconds)),
        ("partition", partition),
        ("account", account),
        ("qos", qos),
        ("cpus-per-task", str(cpus)),
        ("mem", mem),
    ]


def handoff_argv(job: ResolvedJob) -> tuple[str, ...]:
    """The command the hand-off job runs: ``hpc-tf handoff`` on this run with everything resolved."""
    if job.handoff is None:
        raise ValueError(f"job '{job.name}' has no handoff section")
    h = job.handoff
    return handoff_command(python=job.python, run_dir=job.run_dir, model=h.model, fmt=h.format,
                           savedmodel_subdir=h.savedmodel, site=job.site, repository=h.repository)


def render_handoff_script(job: ResolvedJob) -> str:
    """The hand-off job's script (submitted with ``afterok`` on the training job; see hpc.launch)."""
    if job.handoff is None:
        raise ValueError(f"job '{job.name}' has no handoff section")
    h = job.handoff
    paths = RunPaths.at(job.run_dir)
    opts = _cpu_job_options(name=f"{job.name}-handoff", output=log_pattern(paths, RunPaths.HANDOFF_LOG_PATTERN),
                            cpus=h.cpus, mem=h.mem, time_seconds=h.time_seconds, partition=h.partition,
                            account=job.account, qos=job.qos)
    return template_environment().get_template("handoff.sbatch.j2").render(
        job=job, handoff=h, version=__version__, directives=_directive_lines(opts), command=handoff_argv(job),
        module_init=job.module_init, module_purge=job.module_purge, module_use=job.module_use, modules=job.modules,
        conda=job.conda, venv=job.venv,
    )


@dataclass(frozen=True)
class ServeJob:
    """What a serving-node job needs; decided by :mod:`hpc.serving.slurm_node` from the site config."""

    site: str
    repository: str
    command: tuple[str, ...]
    log: str  # a literal path prefix; ``%j`` is appended as Slurm's job-id pattern
    partition: str | None
    account: str | None
    qos: str | None
    time_seconds: int
    cpus: int
    mem: str | None
    module_init: str | None = None
    modules: tuple[str, ...] = ()
    name: str = "hpc-tf-serve"
    gres: str | None = None  # a replica's GPUs (serving.replica_gpus), as gpu_request renders them


def render_serve_script(job: ServeJob) -> str:
    opts = _cpu_job_options(name=job.name, output=f"{slurm_filename(job.log)}-%j.out", cpus=job.cpus, mem=job.mem,
                            time_seconds=job.time_seconds, partition=job.partition, account=job.account, qos=job.qos)
    # tritonserver holds the owner's secret on its command line, which /proc shows to every user of the
    # node: no other user's job may share it (hpc.serving.secret)
    opts.append(("exclusive", "user"))
    if job.gres is not None:
        opts.append(("gres", job.gres))
    return template_environment().get_template("serve.sbatch.j2").render(
        site=job.site, repository=job.repository, version=__version__, directives=_directive_lines(opts),
        command=job.command, module_init=job.module_init, modules=job.modules, conda=None, venv=None,
    )


def render_router_script(job: ServeJob) -> str:
    """The router's job: like the node's, but it may share its node (the secret never is on its command
    line: the router reads it from the owner's config directory)."""
    opts = _cpu_job_options(name=job.name, output=f"{slurm_filename(job.log)}-%j.out", cpus=job.cpus, mem=job.mem,
                            time_seconds=job.time_seconds, partition=job.partition, account=job.account, qos=job.qos)
    return template_environment().get_template("router.sbatch.j2").render(
        site=job.site, repository=job.repository, version=__version__, directives=_directive_lines(opts),
        command=job.command, module_init=job.module_init, modules=job.modules, conda=None, venv=None,
    )
