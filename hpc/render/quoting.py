"""All quoting in hpc-tf: one function per grammar that reads the text.

* ``#SBATCH`` lines are read by sbatch's own parser, not by bash: a backslash escapes the next
  character, single or double quotes group, and an unquoted ``#`` starts a comment.
* Slurm expands ``%j``, ``%t``… in ``--output`` file names; a literal ``%`` is ``%%``.
* Script lines are read by bash: :func:`shlex.quote` gives one single-quoted word.

Values with a line break or another control character are refused everywhere (:func:`hpc.text.one_line`,
the check the spec, site and campaign models apply at load time, repeated here for values that come
from elsewhere, such as ``$VAR`` expanded in a path): no quoting makes them safe in a line-based file.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from hpc.errors import HpcTfError
from hpc.text import forbidden_character, shown


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


def read_sbatch_value(text: str) -> str:
    """The value :func:`sbatch_value` wrote: bare, or double-quoted with ``\\`` and ``"`` escaped."""
    if not (text.startswith('"') and text.endswith('"') and len(text) >= 2):
        return text
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def slurm_filename(path: str) -> str:
    """A literal path inside a Slurm filename pattern (``%`` doubled so Slurm does not expand it)."""
    return _check(path, "path").replace("%", "%%")


def sh(value: str, what: str = "value") -> str:
    """One bash word with exactly the characters of ``value``."""
    return shlex.quote(_check(value, what))


def sh_words(values: Iterable[str], what: str = "command") -> str:
    return " ".join(sh(v, what) for v in values)
