"""``hpc-tf config show``: every resolved site value and where it came from."""

from __future__ import annotations

from rich.table import Table

from hpc.cli.console import out
from hpc.cli.options import JsonOpt, SetOpt, SiteOpt, plain_typer, print_json
from hpc.errors import HpcTfError
from hpc.scheduler.choice import site_choice
from hpc.site.load import describe, load_site

config_app = plain_typer(help="Inspect the layered site configuration.", no_args_is_help=True)


@config_app.command("show", short_help="Each site value and where it came from.")
def show(site: SiteOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Print each site value with its source (default < site file < user file < HPC_TF_* < --set), and
    which Slurm scheduler ``scheduler:`` comes to on this machine."""
    loaded = load_site(site, set_ or ())
    rows = describe(loaded)
    if loaded.config.launcher == "slurm":
        try:
            choice = site_choice(loaded.config.scheduler)
        except HpcTfError as problem:  # scheduler: pyslurm that cannot work here: say why, show the rest
            rows.append(("scheduler (chosen)", "none", problem.message))
        else:
            rows.append(("scheduler (chosen)", choice.chosen, choice.why))
    if as_json:
        print_json({key: {"value": value, "source": source} for key, value, source in rows})
        return
    table = Table("key", "value", "from", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    out().print(table)
