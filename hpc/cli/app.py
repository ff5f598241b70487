"""The typer application and the single place where HpcTfError becomes an exit code."""

from __future__ import annotations

import sys

import typer

from hpc import __version__
from hpc.errors import HpcTfError

app = typer.Typer(
    name="hpc-tf",
    help="Run unmodified TensorFlow training scripts on a Slurm cluster, or on this machine with the local "
         "launcher (the default site, 'local'): launch, status, quota, campaigns, hand-off to Triton.\n\n"
         "Start with: hpc-tf launch job.yaml --wait   (then --site NAME for your cluster's site config)",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help, as Slurm's and git's: flags without type tags
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hpc-tf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """hpc-tf: TensorFlow on Slurm without sbatch boilerplate."""


# Commands: each module holds one command group and is one call into the library.
from hpc.cli import campaign as _campaign  # noqa: E402
from hpc.cli import config as _config  # noqa: E402
from hpc.cli import handoff as _handoff  # noqa: E402
from hpc.cli import jobs as _jobs  # noqa: E402
from hpc.cli import launch as _launch  # noqa: E402
from hpc.cli import node_env as _node_env  # noqa: E402
from hpc.cli import quota as _quota  # noqa: E402
from hpc.cli import serve as _serve  # noqa: E402

app.command("launch", short_help="Check, render and submit a job spec (or run it locally).")(_launch.launch)
app.command("render", short_help="Print the batch script a job spec renders to.")(_launch.render)
app.command("status", short_help="Jobs: state, why they wait, time, nodes, GPUs.")(_jobs.status)
app.command("logs", short_help="Print or follow a job's log, or one worker's.")(_jobs.logs)
app.command("cancel", short_help="Cancel jobs by id or run directory.")(_jobs.cancel)
app.command("quota", short_help="Your GPU limits beside the GPUs in use.")(_quota.quota)
app.add_typer(_config.config_app, name="config", short_help="Show the layered site configuration.")
app.add_typer(_campaign.campaign_app, name="campaign", short_help="Sweeps as job arrays; pipelines of stages.")
app.command("node-env", short_help="What the bootstrap would set for this task.")(_node_env.node_env)
app.add_typer(_serve.serve_app, name="serve", short_help="The Triton serving node: up, down, status, predict.")
app.command("handoff", short_help="Hand a SavedModel to Triton as a new version.")(_handoff.handoff)


def main() -> None:
    try:
        app()
    except HpcTfError as err:
        print(f"hpc-tf: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
