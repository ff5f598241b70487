"""``hpc-tf launch`` and ``hpc-tf render``."""

from __future__ import annotations

import typer
from rich.console import Console

from hpc.cli.jobs import wait_for
from hpc.cli.options import SetOpt, SiteOpt, SpecArg
from hpc.launch import LaunchPlan, plan_launch, submit_plan
from hpc.scheduler import SlurmScheduler

err = Console(stderr=True, highlight=False)


def _summary(plan: LaunchPlan) -> str:
    job = plan.job
    gpus = f"{job.total_gpus} GPU(s) ({job.gpus_per_node}/node)" if job.total_gpus else "no GPUs"
    where = ", ".join(p for p in (f"partition {job.partition}" if job.partition else "",
                                  f"account {job.account}" if job.account else "") if p)
    return (f"{job.name}: {job.nodes} node(s) x {job.tasks_per_node} worker(s), {gpus}, "
            f"time {job.time_limit}, strategy {job.runtime.strategy}" + (f"; {where}" if where else ""))


def launch(
    spec: SpecArg,
    site: SiteOpt = None,
    set_: SetOpt = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the script and the plan; submit nothing."),
    wait: bool = typer.Option(False, "--wait", help="Follow the job until it ends; exit with its exit code."),
) -> None:
    """Validate a job spec, render its batch script into a new run directory and submit it."""
    plan = plan_launch(spec, site, set_ or ())
    if dry_run:
        typer.echo(plan.script, nl=False)
        err.print(f"[bold]dry run[/]: {_summary(plan)}\nwould create {plan.job.run_dir}; nothing submitted")
        return
    launched = submit_plan(plan, SlurmScheduler())
    typer.echo(launched.job_id)
    err.print(f"submitted job [bold]{launched.job_id}[/]: {_summary(plan)}\n"
              f"run directory: {launched.paths.root}\n"
              f"follow it:     hpc-tf status {launched.job_id}   |   hpc-tf logs {launched.paths.root} --follow")
    if wait:
        raise typer.Exit(wait_for(launched.job_id))


def render(spec: SpecArg, site: SiteOpt = None, set_: SetOpt = None) -> None:
    """Print the batch script a job spec renders to (nothing is written or submitted)."""
    typer.echo(plan_launch(spec, site, set_ or ()).script, nl=False)
