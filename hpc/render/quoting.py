"""All quoting in hpc-tf: one function per grammar that reads the text.

* ``#SBATCH`` lines are read by sbatch's own parser, not by bash: a backslash escapes the next
  character, single or double quotes group, and an unquoted ``#`` starts a comment.
* Slurm expands ``%j``, ``%t``… in ``--output`` file names; a literal ``%`` is ``%%``.
* Script lines are read by bash: :func:`shlex.quote` gives one single-quoted word; run-time text
  (``${NAME}`` references, :data:`hpc.text.RunTimeText`) becomes one word of single-quoted literal
  parts and double-quoted ``"${NAME}"`` parts. bash expands the reference once and never re-reads
  its value, so a value holding ``$(…)``, backticks or ``;`` stays text.

Values with a line break or another control character are refused everywhere (:func:`hpc.text.one_line`,
the check the spec, site and campaign models apply at load time, repeated here for values that come
from elsewhere, such as ``$VAR`` expanded in a path): no quoting makes them safe in a line-based file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from hpc.errors import HpcTfError
from hpc.text import forbidden_character, run_time_parts, shown


class UnsafeValue(HpcTfError):
    exit_code = 2


def _check(value: str, what: str) -> str:
    bad = forbidden_character(value)
    if bad is not None:
        raise UnsafeValue(f"{what} {shown(value)} contains {bad}: it must be one line of printable text")
    return value


_SBATCH_BARE = re.compile(r"[A-Za-z0-9_.,:@%/+=-]+")


def sbatch_value(value: str, what: str = "value") -> str:
    """A value as one argument to sbatch's ``#SBATCH`` parser.

    Plain values stay bare for readability; anything else is double-quoted with ``\\`` and ``"``
    escaped (inside quotes sbatch treats ``#`` and spaces literally).
    """
    _check(value, what)
    if _SBATCH_BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_C_SPACE = " \t\n\v\f\r"  # C's isspace(): what sbatch splits words at


def sbatch_words(text: str) -> list[str]:
    """The arguments sbatch reads from the text after ``#SBATCH`` (its ``get_argument``): words split
    at whitespace, quotes group, a backslash takes the next character as it is, an unquoted ``#``
    ends the line. The inverse of :func:`sbatch_value`; ValueError where sbatch stops with an error."""
    words: list[str] = []
    word: list[str] = []
    in_word, quote = False, ""
    chars = iter(text)
    for char in chars:
        if not in_word and char in _C_SPACE:
            continue
        if not in_word and char == ":":
            raise ValueError(f"sbatch refuses an argument that starts with ':' in {text!r}")
        in_word = True
        if char == "\\":
            word.append(next(chars, ""))
        elif quote:
            if char == quote:
                quote = ""
            else:
                word.append(char)
        elif char in "\"'":
            quote = char
        elif char == "#" or char in _C_SPACE:
            if not word:  # sbatch returns "no more arguments" for a word with no characters
                return words
            words.append("".join(word))
            word, in_word = [], False
            if char == "#":
                return words
        else:
            word.append(char)
    if quote:
        raise ValueError(f"unmatched {quote} in {text!r}")
    return [*words, "".join(word)] if word else words


def slurm_filename(path: str) -> str:
    """A literal path inside a Slurm filename pattern (``%`` doubled so Slurm does not expand it)."""
    return _check(path, "path").replace("%", "%%")


def sh(value: str, what: str = "value") -> str:
    """One bash word with exactly the characters of ``value``."""
    return shlex.quote(_check(value, what))


def sh_words(values: Iterable[str], what: str = "command") -> str:
    return " ".join(sh(v, what) for v in values)


def sh_run_time(value: str, what: str = "value") -> str:
    """One bash word that is ``value`` with its ``${NAME}`` references expanded (``$$`` a literal ``$``)."""
    try:
        parts = run_time_parts(_check(value, what))
    except ValueError as err:
        raise UnsafeValue(f"{what}: {err}") from None
    return "".join(f'"${{{text}}}"' if ref else shlex.quote(text) for text, ref in parts) or "''"


def sh_run_time_words(values: Iterable[str], what: str = "command") -> str:
    return " ".join(sh_run_time(v, what) for v in values)
