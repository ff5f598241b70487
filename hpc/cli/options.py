"""Options shared by several commands, declared once; and the settings every typer app shares."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

SpecArg = Annotated[Path, typer.Argument(help="The job spec (job.yaml).", show_default=False, metavar="JOB.YAML")]
SiteOpt = Annotated[
    str | None,
    typer.Option("--site", "-s", metavar="NAME|FILE",
                 help="Site config: a built-in name (sandbox, local, …) or a YAML path. "
                 "Default: $HPC_TF_SITE, then 'site' in ~/.config/hpc-tf/config.yaml, then local."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", show_default=False,
                 help="Override a site value, e.g. --set account=lab (repeatable)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output (one JSON document on stdout).")]


def print_json(document: object) -> None:
    """What ``--json`` prints, for every command: one JSON document on stdout and nothing else there
    (warnings and progress go to stderr, as without it). A dataclass is printed as its fields."""
    if is_dataclass(document) and not isinstance(document, type):
        document = asdict(document)
    typer.echo(json.dumps(document, indent=2))


def plain_typer(**settings: Any) -> typer.Typer:
    """A typer app with plain help, as Slurm's and git's (flags without type tags), and no completion
    or pretty-traceback machinery: errors reach hpc.cli.app.main, which prints them."""
    return typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, add_completion=False, **settings)
