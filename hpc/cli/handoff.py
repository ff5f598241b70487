"""``hpc-tf handoff RUN_DIR|SAVEDMODEL --model NAME``: publish, load, verify, or roll back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.text import Text

from hpc.cli.console import err
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, print_json

FormatName = Literal["onnx", "savedmodel", "python"]
FormatOpt = Annotated[
    FormatName | None, typer.Option("--format", help="onnx, savedmodel or python (default: the site's).")
]
RepoOpt = Annotated[Path | None, typer.Option("--repository", "-r", metavar="DIR",
                                              help="Model repository (default: the site's).")]


def handoff(
    source: Annotated[Path, typer.Argument(help="A run directory or a SavedModel directory.", show_default=False)],
    model: str = typer.Option(..., "--model", "-m", metavar="NAME", help="Model name in the repository."),
    fmt: FormatOpt = None,
    repository: RepoOpt = None,
    grpc_url: str | None = typer.Option(None, "--grpc-url", metavar="HOST:PORT",
                                        help="Serving node (default: the repository's endpoint)."),
    signature: str = typer.Option("serving_default", "--signature", metavar="KEY",
                                  help="SavedModel signature to serve."),
    savedmodel: str = typer.Option("export", "--savedmodel", metavar="SUBDIR",
                                   help="For a run directory: SavedModel dir in output_dir."),
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Hand a trained SavedModel to the Triton serving node as a new version; roll back on failure."""
    from hpc.serving.handoff import handoff as run_handoff
    from hpc.serving.service import serving_target

    target = serving_target(site, set_ or (), repository)
    def progress(stage: str, detail: str) -> None:
        err().print(Text.assemble((stage, "bold"), f": {detail}"))

    record = run_handoff(source, model, target.repository, fmt or target.format, grpc_url=grpc_url,
                         signature_key=signature, savedmodel_subdir=savedmodel, on_stage=progress)
    if as_json:
        print_json(record)
    else:
        typer.echo(f"{record.model} version {record.version} serving ({record.record_path})")
