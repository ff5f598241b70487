"""The typer application and the single place where HpcTfError becomes an exit code."""

from __future__ import annotations

import sys

import typer

from hpc import __version__
from hpc.errors import HpcTfError

app = typer.Typer(
    name="hpc-tf",
    help="Run unmodified TensorFlow training scripts on Slurm: launch, status, quota, campaigns, hand-off.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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

app.command("launch")(_launch.launch)
app.command("render")(_launch.render)
app.command("status")(_jobs.status)
app.command("logs")(_jobs.logs)
app.command("cancel")(_jobs.cancel)
app.command("quota")(_quota.quota)
app.add_typer(_config.config_app, name="config")
app.add_typer(_campaign.campaign_app, name="campaign")
app.command("node-env")(_node_env.node_env)
app.add_typer(_serve.serve_app, name="serve")
app.command("handoff")(_handoff.handoff)


def main() -> None:
    try:
        app()
    except HpcTfError as err:
        print(f"hpc-tf: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
