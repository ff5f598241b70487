"""sbatch's (and srun's) options read the way they read them: the one parser for every option hpc-tf passes to Slurm.

sbatch hands the words of its ``#SBATCH`` lines to getopt_long, which takes any unambiguous prefix of a
long option for the option (``--partitio=x`` is ``--partition=x``; an exact name wins over longer
ones), maps short letters (``-p x``, ``-px``) and reads an optional argument only after ``=``. The
tables of long and short options come from sbatch itself, one per supported Slurm version
(:mod:`hpc.scheduler.sbatch_option_table`). A name is accepted only if it means the same option in
every supported version, so a spec reads the same wherever it is submitted.

Every accepted option comes back canonical: its full long name, so whoever reads it next (the managed
check, the renderer, the local launcher, submitit) compares whole names.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from hpc.scheduler import sbatch_option_table as recorded
from hpc.text import shown


@dataclass(frozen=True)
class Grammar:
    """One command's recorded options: srun and sbatch share slurm_opt.c, each with its own selection."""

    command: str
    long: dict[str, dict[str, str]]  # version -> long option -> 'none', 'required' or 'optional'
    short: dict[str, dict[str, str]]  # version -> short letter -> long option


SBATCH = Grammar("sbatch", recorded.LONG_OPTIONS["sbatch"], recorded.SHORT_OPTIONS["sbatch"])
SRUN = Grammar("srun", recorded.LONG_OPTIONS["srun"], recorded.SHORT_OPTIONS["srun"])
SUPPORTED_VERSIONS: tuple[str, ...] = tuple(sorted(SBATCH.long))


class OptionError(ValueError):
    """One line: what sbatch would make of the option, and what to write instead."""


class _Refused(Exception):
    """What is wrong with one word; the caller names the word (or the whole entry) in the message."""

    def __init__(self, word: str, problem: str) -> None:
        super().__init__(problem)
        self.word = word


@dataclass(frozen=True)
class SbatchOption:
    name: str  # the full long name, without "--"
    value: str | None  # None for an option given without an argument

    def __str__(self) -> str:
        return f"--{self.name}" if self.value is None else f"--{self.name}={self.value}"


def parse_arguments(args: Sequence[str], versions: Sequence[str] = SUPPORTED_VERSIONS,
                    grammar: Grammar = SBATCH) -> list[SbatchOption]:
    """The options in ``args`` (the words of ``#SBATCH`` lines), read as sbatch's getopt_long reads them.

    Like sbatch, a word that is not an option is an error (its option string starts with ``+``), and
    an option that requires an argument takes the next word when none is attached.
    """
    try:
        return _parse(args, versions, grammar)[0]
    except _Refused as err:
        raise OptionError(f"{shown(err.word)} {err}") from None


def parse_command_line(args: Sequence[str], versions: Sequence[str] = SUPPORTED_VERSIONS,
                       grammar: Grammar = SRUN) -> tuple[list[SbatchOption], int]:
    """The options before the program in ``args`` (the words after ``srun``), read as srun reads them,
    and the index of the program's word: srun's option string starts with ``+`` too, so the first word
    that is not an option (or the one after ``--``) starts the command srun runs."""
    try:
        return _parse(args, versions, grammar, command=True)
    except _Refused as err:
        raise OptionError(f"{shown(err.word)} {err}") from None


def parse_option(text: str, versions: Sequence[str] = SUPPORTED_VERSIONS, grammar: Grammar = SBATCH) -> SbatchOption:
    """One option as a user writes it in ``sbatch_extra``, ``sbatch_defaults`` or (srun's) ``srun_extra``.

    ``--name=value``, ``--name value``, ``-x value``, ``-xvalue`` or a bare ``--name``/``-x``; the
    value is everything after the first ``=`` or space (it is quoted for sbatch when rendered).
    """
    head, space, rest = text.lstrip(" ").partition(" ")
    try:
        options, _ = _parse([head, rest] if space and "=" not in head else [text.lstrip(" ")], versions, grammar)
    except _Refused as err:
        subject = shown(text) if err.word == text else f"{shown(text)}: {shown(err.word)}"
        raise OptionError(f"{subject} {err}") from None
    if len(options) != 1:
        raise OptionError(f"{shown(text)} holds {len(options)} options: write one option per entry")
    return options[0]


def _parse(args: Sequence[str], versions: Sequence[str], grammar: Grammar,
           command: bool = False) -> tuple[list[SbatchOption], int]:
    """The options, and (``command``: a program follows them) the index of the first word after them."""
    found: list[SbatchOption] = []
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if command and (word == "--" or not word.startswith("-") or word == "-"):
            return found, i if word == "--" else i - 1
        if word.startswith("--") and len(word) > 2 and word[2] != "=":
            written, sep, value = word[2:].partition("=")
            name = _long_name(word, written, versions, grammar)
            kinds = _argument(name, versions, grammar)
            if sep and "none" in kinds:
                raise _Refused(word, f"is --{name}, which takes no value")
            if not sep and "required" in kinds:
                if kinds != {"required"} or i == len(args):
                    raise _Refused(word, f"is --{name}, which needs a value: write --{name}=VALUE")
                value, sep = args[i], "="
                i += 1
            found.append(SbatchOption(name, value if sep else None))
        elif word.startswith("-") and len(word) > 1 and not word.startswith("--"):
            i = _short_options(word, args, i, versions, grammar, found)
        elif found and found[-1].value is None:
            flag = found[-1].name
            takes = (f"its value only as --{flag}=VALUE" if "optional" in _argument(flag, versions, grammar)
                     else "no value")
            raise _Refused(word, f"is not an {grammar.command} option (--{flag} before it takes {takes})")
        else:
            raise _Refused(word, f"is not an {grammar.command} option (options start with - or --)")
    return found, i


def _long_name(word: str, written: str, versions: Sequence[str], grammar: Grammar) -> str:
    """The long option ``written`` (maybe abbreviated) stands for in every version, or _Refused."""
    meanings: dict[str, str] = {}
    for version in versions:
        table = grammar.long[version]
        # glibc also takes a prefix of options sharing has_arg and val as one option; no prefix matches
        # only such a pair (srun's --cpu-bind/--cpu_bind share --cpu-freq's; the recording script checks)
        matches = [written] if written in table else sorted(n for n in table if n.startswith(written))
        if len(matches) > 1:
            raise _Refused(word, f"is ambiguous in {grammar.command} {version} (it could be {_listed(matches)}): "
                                 "write the option in full")
        if matches:
            meanings[version] = matches[0]
    if not meanings:
        known = sorted({name for version in versions for name in grammar.long[version]})
        close = difflib.get_close_matches(written, known, n=1)
        hint = f"did you mean --{close[0]}?" if close else f"see {grammar.command} --help"
        raise _Refused(word, f"is not an {grammar.command} option: {hint}")
    if len(set(meanings.values())) > 1:
        read_as = " and ".join(f"--{name} by {grammar.command} {version}" for version, name in meanings.items())
        raise _Refused(word, f"is read as {read_as}: write the option in full")
    (name,) = set(meanings.values())
    missing = [version for version in versions if version not in meanings]
    if missing:
        raise _Refused(word, f"is --{name}, which {grammar.command} {', '.join(missing)} does not have "
                             f"(hpc-tf supports Slurm {' and '.join(versions)})")
    return name


def _short_options(word: str, args: Sequence[str], i: int, versions: Sequence[str], grammar: Grammar,
                   found: list[SbatchOption]) -> int:
    """Read ``-x``, ``-xVALUE``, ``-x VALUE`` and clustered flags ``-xy``; return the next index."""
    j = 1
    while j < len(word):
        letter = word[j]
        names = {grammar.short[version].get(letter) for version in versions}
        if None in names or len(names) > 1:
            subject = "is not" if word == f"-{letter}" else f"holds -{letter}, which is not"
            raise _Refused(word, f"{subject} a short {grammar.command} option in every supported Slurm version "
                                 "(write the long option)")
        (name,) = names
        assert name is not None
        kinds = _argument(name, versions, grammar)
        value = word[j + 1:]
        if kinds == {"none"}:
            found.append(SbatchOption(name, None))
            j += 1
            continue
        if kinds == {"required"} and not value:
            if i == len(args):
                raise _Refused(word, f"is --{name}, which needs a value: write --{name}=VALUE")
            value, i = args[i], i + 1
        elif kinds != {"required"} and kinds != {"optional"}:
            raise _Refused(word, f"is --{name}, which takes a value differently in each Slurm version: "
                                 f"write --{name} in full")
        found.append(SbatchOption(name, value or None if kinds == {"optional"} else value))
        break
    return i


def _argument(name: str, versions: Sequence[str], grammar: Grammar) -> set[str]:
    """How the option takes an argument in each version: 'none', 'required' or 'optional'."""
    return {grammar.long[version][name] for version in versions}


def _listed(names: Sequence[str], limit: int = 8) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(f"--{name}" for name in names[:limit]) + more
