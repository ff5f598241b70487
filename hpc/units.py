"""Durations and memory sizes as users write them in job specs and site configs (Slurm's notation)."""

from __future__ import annotations

import re

from hpc.text import shown

# at most 9 digits a part (Slurm keeps these in 32 bits): a longer number is a typo, not a time
_TIME = re.compile(
    r"(?:(?P<days>\d{1,9})-(?P<dh>\d{1,9})(?::(?P<dm>\d{1,9})(?::(?P<ds>\d{1,9}))?)?"  # D-H, D-H:M, D-H:M:S
    r"|(?P<a>\d{1,9})(?::(?P<b>\d{1,9})(?::(?P<c>\d{1,9}))?)?)"  # M, M:S, H:M:S
)
_MEM = re.compile(r"(?P<n>\d{1,15})(?P<unit>[KMGT]?)B?", re.IGNORECASE)
_MEM_FACTOR_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}
# ``mem: all``: every megabyte of each node, which Slurm spells --mem=0 (so a bare 0 is refused: it
# looks like "none" to a reader and would silently take the whole node)
ALL_MEMORY = "all"


def parse_duration(text: str) -> int:
    """Seconds in a Slurm time limit: ``90`` (minutes), ``1:30:00``, ``2-00:00:00``, ``1-12``.

    Raises ValueError with the accepted forms. Zero (Slurm's "no limit") is refused rather than passed on
    or replaced by a default: hpc-tf needs a finite limit to check the GPU-minutes quota and to send the
    preemption warning before it, and on a partition with a MaxTime an unlimited job would pend forever.
    """
    match = _TIME.fullmatch(text.strip())
    if match is None and text.strip().lower() not in ("unlimited", "infinite"):
        raise ValueError(
            f"{shown(text)} is not a Slurm time; use minutes ('90'), 'H:MM:SS' ('1:30:00') "
            "or 'D-HH:MM:SS' ('2-00:00:00')"
        )
    seconds = 0 if match is None else _seconds(match)
    if seconds == 0:
        raise ValueError(f"{shown(text)} is no time limit to Slurm, which hpc-tf does not submit: give the longest "
                         "the job may run, e.g. '2-00:00:00'")
    return seconds


def _seconds(match: re.Match[str]) -> int:
    g = match.groupdict()
    if g["days"] is not None:
        return (int(g["days"]) * 24 + int(g["dh"])) * 3600 + int(g["dm"] or 0) * 60 + int(g["ds"] or 0)
    if g["c"] is not None:  # H:M:S
        return int(g["a"]) * 3600 + int(g["b"]) * 60 + int(g["c"])
    return int(g["a"]) * 60 + int(g["b"] or 0)  # M or M:S


_SHORT = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h)?")
_SHORT_UNIT_S = {"s": 1, "m": 60, "h": 3600, None: 1}


def parse_short_duration(text: str) -> float:
    """Seconds in a short duration as command options take it: ``60s``, ``2m``, ``1.5h``, ``10`` (seconds).

    Raises ValueError naming the accepted forms (the caller adds which option it was)."""
    match = _SHORT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{shown(text)} is not a duration (e.g. 60s, 2m, 1h)")
    return float(match[1]) * _SHORT_UNIT_S[match[2]]


def format_duration(seconds: int) -> str:
    """``D-HH:MM:SS`` (or ``HH:MM:SS`` under a day): the form Slurm prints and accepts."""
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def parse_memory_mb(text: str) -> int:
    """Megabytes in a Slurm memory size: ``16G``, ``500M``, ``16000`` (MB, Slurm's default unit)."""
    match = _MEM.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{shown(text)} is not a memory size; use e.g. '16G', '500M' or '16000' (megabytes)")
    if int(match["n"]) == 0:
        raise ValueError(f"{shown(text)} asks Slurm for all of each node's memory; write mem: {ALL_MEMORY} if that is "
                         "meant, else a size such as '16G'")
    return max(1, round(int(match["n"]) * _MEM_FACTOR_MB[match["unit"].upper()]))
