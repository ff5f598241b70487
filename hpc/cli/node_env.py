"""``hpc-tf node-env``: print what the bootstrap would set for this task."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from hpc.cli.options import print_json
from hpc.runtime import node_env as compute_node_env

ResolvedOpt = Annotated[
    Path | None,
    typer.Option("--resolved", metavar="FILE",
                 help="The run's resolved.json, as the bootstrap gets it (default: defaults)."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object: variable → the exact string it would export.")
]


def node_env(resolved: ResolvedOpt = None, as_json: JsonOpt = False) -> None:
    """Print the environment the bootstrap would give this task (run it under srun, inside the job)."""
    env = compute_node_env(os.environ, resolved)
    if as_json:
        print_json(env)
    else:
        typer.echo("".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items()), nl=False)
