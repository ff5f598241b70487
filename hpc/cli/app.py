"""The typer application and the single place where an error becomes a message and an exit code."""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from typing import TYPE_CHECKING

import typer
import typer.main
from typer.core import TyperGroup

if TYPE_CHECKING:  # typer's own copy of click (0.29); only the types are needed
    from typer._click import Command, Context

from hpc import __version__
from hpc.cli.options import plain_typer
from hpc.errors import HpcTfError
from hpc.text import shown

# Commands are imported when they run (click's "lazily loading subcommands" pattern): a command's
# start-up is most of its time, and `hpc-tf launch` should not pay for status tables, campaigns
# and serving. name -> (module, attribute: a command function or a sub-app, one-line summary)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "launch": ("hpc.cli.launch", "launch", "Check, render and submit a job spec (or run it locally)."),
    "render": ("hpc.cli.launch", "render", "Print the batch script a job spec renders to."),
    "import": ("hpc.cli.importer", "import_command", "Draft a job.yaml from an existing sbatch script."),
    "status": ("hpc.cli.jobs", "status", "Jobs: state, why they wait, time, nodes, GPUs."),
    "logs": ("hpc.cli.jobs", "logs", "Print or follow a job's log, or one worker's."),
    "cancel": ("hpc.cli.jobs", "cancel", "Cancel jobs by id or run directory."),
    "metrics": ("hpc.cli.metrics", "metrics", "What a run's training logged, epoch by epoch."),
    "quota": ("hpc.cli.quota", "quota", "Your GPU limits beside the GPUs in use."),
    "usage": ("hpc.cli.usage", "usage", "GPU-hours your jobs held, beside your GPU-minute budget."),
    "config": ("hpc.cli.config", "config_app", "Show the layered site configuration."),
    "site": ("hpc.cli.site", "site_app", "Install your cluster's site config (and make it the default)."),
    "campaign": ("hpc.cli.campaign", "campaign_app", "Sweeps as job arrays; pipelines of stages."),
    "node-env": ("hpc.cli.node_env", "node_env", "What the bootstrap would set for this task."),
    "serve": ("hpc.cli.serve", "serve_app", "The Triton serving node: up, down, status, predict."),
    "handoff": ("hpc.cli.handoff", "handoff", "Hand a SavedModel to Triton as a new version."),
}


class LazyCommands(TyperGroup):
    """The root group: lists every command, imports one only when it is asked for."""

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, summary = COMMANDS[cmd_name]
        target = getattr(importlib.import_module(module), attribute)
        if isinstance(target, typer.Typer):
            command: Command = typer.main.get_group(target)  # a group even with one subcommand
        else:
            single = plain_typer()
            single.command(cmd_name)(target)
            command = typer.main.get_command(single)
        command.name, command.short_help = cmd_name, summary
        return command


app = plain_typer(
    cls=LazyCommands,
    name="hpc-tf",
    help="Run unmodified TensorFlow training scripts on a Slurm cluster, or on this machine with the local "
         "launcher (the default site, 'local'): launch, status, quota, campaigns, hand-off to Triton.\n\n"
         "Start with: hpc-tf launch job.yaml --wait   (then --site NAME for your cluster's site config)",
    no_args_is_help=True,
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


DEBUG_VARIABLE = "HPC_TF_DEBUG"  # set to 1: every error also prints its traceback
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # a newline stays: hints
PATH_SHOWN = 300


def _printable(message: str) -> str:
    """``message`` with every character a terminal would act on escaped: a value that reached a message
    without going through hpc.text.shown still cannot move the cursor or change colours."""
    return _TERMINAL_CONTROLS.sub(lambda found: shown(found.group())[1:-1], message)


def _fail(message: str, code: int) -> None:
    if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
        traceback.print_exc()
    print(f"hpc-tf: error: {_printable(message)}", file=sys.stderr)
    sys.exit(code)


def _os_message(err: OSError) -> str:
    names = [shown(str(name), PATH_SHOWN) for name in (err.filename, err.filename2) if name is not None]
    reason = err.strerror or str(err) or type(err).__name__
    return f"{' -> '.join(names)}: {reason}" if names else reason


def main() -> None:
    """Run the CLI: an HpcTfError, an OSError (a full disk, a permission) or anything unforeseen ends in one
    message on stderr and an exit code, never a traceback unless HPC_TF_DEBUG=1."""
    try:
        app()
    except HpcTfError as err:
        _fail(str(err), err.exit_code)
    except BrokenPipeError:
        # the reader went away (hpc-tf status | head): nothing left to say, and no one to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as err:
        _fail(_os_message(err), 1)
    except Exception as err:  # a bug: one line, the traceback on request
        detail = str(err).splitlines()[0] if str(err) else ""
        _fail(f"internal error: {type(err).__name__}{': ' + shown(detail) if detail else ''} "
              f"(set {DEBUG_VARIABLE}=1 for the traceback; please report)", 1)
