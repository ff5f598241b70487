"""``hpc-tf site add``: install a site config for this user (and make it the default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpc.cli.options import plain_typer
from hpc.site.install import add_site

site_app = plain_typer(help="Install site configs for this user.", no_args_is_help=True)


@site_app.command("add", short_help="Check a site file and install it as one of your sites.")
def add(
    file: Annotated[Path, typer.Argument(help="The site config (YAML), e.g. an edited copy of "
                                              "site_configs/example-plain.yaml.", show_default=False, metavar="FILE")],
    name: str | None = typer.Option(None, "--name", metavar="NAME",
                                    help="The site's name, for --site NAME (default: the file's name)."),
    default: bool = typer.Option(False, "--default",
                                 help="Make it the default site (site: NAME in ~/.config/hpc-tf/config.yaml)."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite your site of that name."),
) -> None:
    """Check FILE as a site config and copy it to ~/.config/hpc-tf/sites/NAME.yaml; with --default, every
    command uses it unless --site says otherwise."""
    added = add_site(file, name, make_default=default, replace=replace)
    typer.echo(f"site '{added.name}' installed: {added.path}")
    if added.config_file is not None:
        was = f" (was '{added.previous_default}')" if added.previous_default not in (None, added.name) else ""
        typer.echo(f"default site: {added.name}{was}, in {added.config_file}")
    typer.echo(f"check it: hpc-tf config show{'' if added.config_file else f' --site {added.name}'}")
