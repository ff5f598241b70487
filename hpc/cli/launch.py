"""``hpc-tf launch`` and ``hpc-tf render``."""

from __future__ import annotations

from pathlib import Path

import typer

from hpc.backends import QuotaPolicy, backend_for
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, SpecArg, print_json
from hpc.launch import LaunchPlan, plan_launch, submit_plan
from hpc.paths import RunPaths
from hpc.quota import QuotaVerdict, notices
from hpc.runs import Run
from hpc.units import ALL_MEMORY


def _say(text: str) -> None:
    # plain click styling, not rich: rich's import is a tenth of a launch, and nothing here is markup
    typer.echo(text, err=True)


def _bold(text: str) -> str:
    return typer.style(text, bold=True)


def _warning(text: str) -> str:
    return f"{typer.style('warning:', fg='yellow')} {text}"


def _summary(plan: LaunchPlan) -> str:
    job = plan.job
    gpus = f"{job.total_gpus} GPU(s) ({job.gpus_per_node}/node)" if job.total_gpus else "no GPUs"
    where = ", ".join(p for p in (f"partition {job.partition}" if job.partition else "",
                                  f"account {job.account}" if job.account else "") if p)
    memory = "" if job.mem is None else f", memory {job.mem}/node"
    if job.mem == ALL_MEMORY:
        memory = ", memory: all of each node's (--mem=0)"
    for amount, unit in ((job.mem_per_gpu, "GPU"), (job.mem_per_cpu, "CPU")):
        memory += f", memory {amount}/{unit}" if amount else ""
    return (f"{job.name}: {job.nodes} node(s) x {job.tasks_per_node} worker(s), {gpus}{memory}, "
            f"time {job.time_limit}, strategy {job.runtime.strategy}" + (f"; {where}" if where else ""))


def launch(
    spec: SpecArg,
    site: SiteOpt = None,
    set_: SetOpt = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the script and the plan; submit nothing."),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the job (and its hand-off) until it ends; exit with its exit code."),
    force: bool = typer.Option(False, "--force", help="Submit even when the GPU quota check says it can never run."),
    no_queue: bool = typer.Option(False, "--no-queue", help="Refuse (exit 3) a job that would wait for GPU quota."),
    as_json: JsonOpt = False,
) -> None:
    """Validate a job spec, check the GPU quota, render its batch script into a new run directory, submit it."""
    plan = plan_launch(spec, site, set_ or ())
    if dry_run:
        typer.echo(plan.script, nl=False)
        _say(f"{_bold('dry run')}: {_summary(plan)}\nwould create {plan.job.run_dir}; nothing submitted")
        if plan.handoff_script is not None:
            _say(f"then a hand-off job ({RunPaths.at(plan.job.run_dir).handoff_script}):\n{plan.handoff_script}")
        return
    backend = backend_for(plan.job.launcher, Path(plan.job.run_dir).parent, plan.job.scheduler)
    launched = submit_plan(plan, backend, QuotaPolicy(force=force, no_queue=no_queue))
    if launched.quota is not None:
        _show_quota(launched.quota, force)
    if as_json:
        print_json({"job_id": launched.job_id, "run_dir": str(launched.paths.root),
                    "handoff_job_id": launched.handoff_job_id,
                    "quota": launched.quota.to_dict() if launched.quota is not None else None})
    else:
        typer.echo(launched.job_id)
    _say(f"submitted job {_bold(launched.job_id)}: {_summary(plan)}\n"
         f"run directory: {launched.paths.root}\n"
         f"follow it:     hpc-tf status {launched.job_id}   |   hpc-tf logs {launched.paths.root} --follow")
    if launched.handoff_job_id is not None and plan.job.handoff is not None:
        _say(f"hand-off job {_bold(launched.handoff_job_id)} runs after job {launched.job_id} succeeds: "
             f"model '{plan.job.handoff.model}' into {plan.job.handoff.repository} "
             f"(log {launched.paths.handoff_log(launched.handoff_job_id)})")
    if wait:
        from hpc.cli.jobs import wait_for  # the status machinery, only for --wait

        waited = [launched.job_id] + ([launched.handoff_job_id] if launched.handoff_job_id else [])
        raise typer.Exit(wait_for(waited, backend.scheduler, [Run(launched.job_id, launched.paths)]))


def _show_quota(verdict: QuotaVerdict, force: bool) -> None:
    for sentence, is_warning in notices(verdict, force):
        _say(_warning(sentence) if is_warning else sentence)


def render(spec: SpecArg, site: SiteOpt = None, set_: SetOpt = None) -> None:
    """Print the batch script a job spec renders to (nothing is written or submitted)."""
    typer.echo(plan_launch(spec, site, set_ or ()).script, nl=False)
