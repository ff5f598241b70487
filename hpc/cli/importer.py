"""``hpc-tf import``: an sbatch script into a job.yaml draft."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpc.importer import import_script
from hpc.importer.draft import one_comment


def import_command(
    script: Annotated[Path, typer.Argument(help="The batch script (sbatch).", show_default=False,
                                           metavar="SCRIPT.SBATCH")],
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="JOB.YAML", show_default=False,
                                                help="Where to write the draft (default: SCRIPT.yaml beside the "
                                                     "script); never overwritten.")] = None,
) -> None:
    """Draft a job.yaml from an sbatch script; list on stderr what it could not place."""
    target = output if output is not None else script.with_suffix(".yaml")
    draft = import_script(script, target)
    for note in draft.notes:
        typer.echo(f"hpc-tf import: {one_comment(script.name)}: not placed: {one_comment(str(note))}", err=True)
    for hint in draft.hints:
        typer.echo(f"hpc-tf import: hint: {one_comment(hint)}", err=True)
    typer.echo(f"wrote {target} ({len(draft.notes)} line(s) not placed, kept as '# hpc-tf import:' comments); "
               f"check it, then: hpc-tf launch {target} --dry-run", err=True)
