"""The one check for text that reaches a script, an ``#SBATCH`` line or a terminal, and the one way to
show a user's value inside an error message.

Every name, token and value a user writes passes :func:`one_line` (no line break or control character
of any kind: bash, sbatch and Python each split lines on a different set) and, where it has a shape,
:func:`named` (the whole string must match; ``re.match`` with ``$`` accepts a trailing newline).
Messages quote values with :func:`shown`, which escapes what a terminal would interpret and shortens
what would flood it.

The user-facing models (job spec, site config, campaign) use these checks through the pydantic types
at the end (:data:`OneLine`, :func:`matching`, :func:`keys_matching`), so an error carries the file,
line and field path like any other.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import partial
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: every character that some
# reader of our output (bash, sbatch, str.splitlines, a terminal) takes as a line break or a command.
# Lone surrogates too: Python's stand-ins for bytes of argv or the environment that are not UTF-8,
# which no file can be written with.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
SHOWN_LIMIT = 80


def forbidden_character(value: str) -> str | None:
    """The first character :func:`one_line` refuses, escaped (``\\n``, ``\\u2028``), or None."""
    found = _FORBIDDEN.search(value)
    return None if found is None else _escape_char(found.group())


def one_line(value: str, what: str = "value") -> str:
    """``value`` unchanged, or ValueError when it holds a line break or another control character."""
    bad = forbidden_character(value)
    if bad is not None:
        raise ValueError(f"{what} must be one line of printable text; it contains {bad}")
    return value


def named(value: str, pattern: re.Pattern[str], rule: str) -> str:
    """``value`` unchanged if the WHOLE string matches ``pattern``; else ValueError with ``rule``."""
    if pattern.fullmatch(value) is None:
        raise ValueError(f"{shown(value)} is not valid: {rule}")
    return value


def _escape_char(char: str) -> str:
    escaped = char.encode("unicode_escape").decode("ascii")
    return escaped if escaped != char else f"\\u{ord(char):04x}"


def shown(value: object, limit: int = SHOWN_LIMIT) -> str:
    """``value`` quoted for a message: control, format and separator characters escaped, long values
    cut to ``limit`` characters with the full length said."""
    text = value if isinstance(value, str) else repr(value)
    out = []
    for char in text[:limit]:
        category = unicodedata.category(char)
        out.append(_escape_char(char) if category[0] in "CZ" and char != " " else char)
    cut = f"... ({len(text)} characters)" if len(text) > limit else ""
    return f"'{''.join(out)}{cut}'"


# --- the same checks as pydantic field types -----------------------------------------------------------

def _one_value(value: str) -> str:
    return one_line(value, "the value")


# free text that reaches a script, an #SBATCH line or a terminal: paths, command words, env values
OneLine = Annotated[str, AfterValidator(_one_value)]

T = TypeVar("T")


def _one_value_if_text(value: T) -> T:
    return one_line(value, "the value") if isinstance(value, str) else value  # type: ignore[return-value]


# the same for a union such as ``str | dict``: ``Annotated[str | dict[...], ONE_LINE_IF_TEXT]`` (a OneLine
# member of a union would make pydantic report every member that did not match)
ONE_LINE_IF_TEXT = AfterValidator(_one_value_if_text)


def matching(pattern: re.Pattern[str], rule: str) -> AfterValidator:
    """A field check: the whole value matches ``pattern`` (``Annotated[str, matching(NAME, "...")]``)."""
    return AfterValidator(partial(named, pattern=pattern, rule=rule))


M = TypeVar("M", bound=Mapping[str, Any])


def _keys_named(value: M, pattern: re.Pattern[str], rule: str) -> M:
    for key in value:
        named(key, pattern, rule)
    return value


def keys_matching(pattern: re.Pattern[str], rule: str) -> AfterValidator:
    """A check on a mapping's keys; the error names the mapping (a key in pydantic's path would be
    printed raw, and a key is not where a YAML line can point)."""
    return AfterValidator(partial(_keys_named, pattern=pattern, rule=rule))
