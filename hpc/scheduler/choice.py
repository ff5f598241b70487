"""Which Slurm scheduler a site gets: the command-line tools, or pyslurm (site key ``scheduler:``).

``cli`` (the default): sbatch, sacct, squeue … work with every Slurm release. ``pyslurm``: Slurm's C
library through pyslurm, which wraps exactly one release (pyslurm 25.11.x needs Slurm 25.11).
``auto``: pyslurm when it is installed and made for the Slurm of this machine, else the tools.

The versions are compared *before* pyslurm is imported: its import initialises libslurm, which
reads slurm.conf and ends the process on a configuration it cannot read (another release's). Slurm's
version here is what ``scontrol --version`` says, the release the tools and the cluster speak.
Nothing is imported or run for ``cli``: the CLI's start-up stays as it was.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from hpc.errors import HpcTfError, SchedulerCommandFailed
from hpc.scheduler.run import SlurmCli

SchedulerKind = Literal["cli", "pyslurm", "auto"]
SCHEDULER_KINDS: tuple[SchedulerKind, ...] = ("cli", "pyslurm", "auto")

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.\d+)?")


@dataclass(frozen=True)
class Choice:
    """The scheduler a site's ``scheduler:`` key comes to on this machine, and why."""

    asked: SchedulerKind
    chosen: Literal["cli", "pyslurm"]
    why: str

    def __str__(self) -> str:
        return f"{self.chosen} ({self.why})"


def release(version: str) -> str | None:
    """``25.11`` of ``25.11.7`` / ``slurm 25.11.7`` / ``slurm-wlm 22.05.8``; None when there is no version."""
    match = _VERSION.search(version)
    return f"{match[1]}.{match[2]}" if match else None


def installed_pyslurm() -> str | None:
    """pyslurm's version from its package metadata (no import), or None when it is not installed."""
    from importlib import metadata  # only for pyslurm/auto: CLI start-up time

    try:
        return metadata.version("pyslurm")
    except metadata.PackageNotFoundError:
        return None


def slurm_version(cli: SlurmCli | None = None) -> str | None:
    """This machine's Slurm (``25.11.7``), from ``scontrol --version``; None without Slurm's tools."""
    try:
        out = (cli or SlurmCli()).run(["scontrol", "--version"]).stdout
    except SchedulerCommandFailed:
        return None
    match = _VERSION.search(out)
    return match[0] if match else None


def choose(asked: SchedulerKind, *, pyslurm: str | None, slurm: str | None) -> Choice:
    """The decision, from the two versions (None: not installed / no Slurm tools).

    ``scheduler: pyslurm`` that cannot be honoured raises one line naming both versions and the fix.
    """
    if asked == "cli":
        return Choice(asked, "cli", "the site's scheduler: cli")
    problem = _mismatch(pyslurm, slurm)
    if problem is None:
        return Choice(asked, "pyslurm", f"pyslurm {pyslurm} for Slurm {slurm}")
    if asked == "auto":
        return Choice(asked, "cli", f"auto: {problem}")
    raise HpcTfError(f"scheduler: pyslurm cannot be used: {problem}; {_fix(slurm)}, or set scheduler: cli")


def _mismatch(pyslurm: str | None, slurm: str | None) -> str | None:
    if slurm is None:
        return f"Slurm's tools (scontrol) are not on this machine (pyslurm {pyslurm or 'not installed'})"
    if pyslurm is None:
        return f"pyslurm is not installed (Slurm here is {slurm})"
    if release(pyslurm) != release(slurm):
        return f"pyslurm {pyslurm} is made for Slurm {release(pyslurm)} and Slurm here is {slurm}"
    return None


def _fix(slurm: str | None) -> str:
    if slurm is None:
        return "run hpc-tf where Slurm is installed"
    return (f"install pyslurm {release(slurm)}.x built against this Slurm (SLURM_INCLUDE_DIR=<slurm>/include "
            f"SLURM_LIB_DIR=<slurm>/lib pip install 'pyslurm=={release(slurm)}.*')")


@functools.cache
def site_choice(asked: SchedulerKind) -> Choice:
    """:func:`choose` with this machine's versions, found once per process (none looked up for ``cli``)."""
    if asked == "cli":
        return choose(asked, pyslurm=None, slurm=None)
    return choose(asked, pyslurm=installed_pyslurm(), slurm=slurm_version())
