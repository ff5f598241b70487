"""``hpc-tf handoff RUN_DIR|SAVEDMODEL --model NAME``: publish, load, verify, or roll back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.text import Text

from hpc.cli.console import err
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, print_json
from hpc.serving.canary import DEFAULT_STEP_TIME

FormatName = Literal["onnx", "savedmodel", "python", "python-onnx", "auto"]
FormatOpt = Annotated[
    FormatName | None, typer.Option(
        "--format", help="python (TensorFlow in the python backend), python-onnx (ONNX Runtime in the python "
        "backend), onnx (ONNX Runtime in tritonserver), savedmodel, or auto (the fastest that passes parity; "
        "default: the site's).")
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
    canary: str | None = typer.Option(
        None, "--canary", metavar="P,P,...",
        help="Roll the new version out through the repository's router in these percent steps (e.g. 5,25,100), "
             "rolled back when a gate fails; settings as hpc-tf serve canary's defaults."),
    canary_step_time: str = typer.Option(DEFAULT_STEP_TIME, "--canary-step-time", metavar="DURATION",
                                         help="With --canary: how long each step lasts."),
    as_json: JsonOpt = False,
    site: SiteOpt = None,
    set_: SetOpt = None,
) -> None:
    """Hand a trained SavedModel to the Triton serving node as a new version; roll back on failure. With a
    router (hpc-tf serve router), to every replica it lists."""
    from hpc.serving.handoff import handoff as run_handoff
    from hpc.serving.service import serving_target

    target = serving_target(site, set_ or (), repository)
    def progress(stage: str, detail: str) -> None:
        err().print(Text.assemble((stage, "bold"), f": {detail}"))

    from hpc.serving.canary import canary_settings

    settings = None if canary is None else canary_settings(canary, canary_step_time)
    record = run_handoff(source, model, target.repository, fmt or target.format, grpc_url=grpc_url,
                         signature_key=signature, savedmodel_subdir=savedmodel, on_stage=progress,
                         canary=settings)
    if as_json:
        print_json(record)
    else:
        typer.echo(f"{record.model} version {record.version} "
                   f"{'in its canary' if canary is not None else 'serving'} ({record.record_path})")
