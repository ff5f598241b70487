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


def main() -> None:
    try:
        app()
    except HpcTfError as err:
        print(f"hpc-tf: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
