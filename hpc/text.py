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
from collections.abc import Callable, Mapping
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


# --- references to environment variables: ``${NAME}`` on the node, ``$NAME`` where hpc-tf runs -------------
# Two rules, one parser (:func:`_parts`). Run-time text (:data:`RunTimeText`: the job's paths, env values and
# arguments, the site's python, binds and module_init) reaches the batch script: ``${NAME}`` is an environment
# variable of the node, expanded by the batch script as a batch script would, and ``$$`` is a literal ``$``.
# Any other ``$`` is refused at load time: bash would expand ``$HOME`` or ``$(cmd)`` and hpc-tf would not, so
# the value would be a silent literal or an injection; one spelling is neither.
# Submit-time text (:data:`SubmitTimeText`: the site's runs_dir and serving.model_repository, a campaign's
# job path) is read by hpc-tf itself on the submitting host, as a shell there would: ``~``, ``$NAME`` and
# ``${NAME}`` expand from this environment, ``$$`` is a literal ``$``, an unset variable is an error
# (:func:`expand_submit_time`), never a directory named ``$NAME``.

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE = re.compile(rf"\$\{{({_NAME})\}}|\$\$")
_SUBMIT_REFERENCE = re.compile(rf"\$\{{({_NAME})\}}|\$({_NAME})|\$\$")
_BARE_NAME = re.compile(rf"\$\{{?({_NAME})")


def _parts(value: str, reference: re.Pattern[str], refused: Callable[[str, int], str]) -> list[tuple[str, bool]]:
    """``value`` as ``(text, is_reference)`` pieces: literal text (``$$`` already made ``$``) and the
    names of references, in order. ValueError(``refused(value, index)``) at the first other ``$``."""
    parts: list[tuple[str, bool]] = []
    literal: list[str] = []
    at = 0
    while (dollar := value.find("$", at)) >= 0:
        literal.append(value[at:dollar])
        found = reference.match(value, dollar)
        if found is None:
            raise ValueError(refused(value, dollar))
        name = next((group for group in found.groups() if group), None)
        if name is None:
            literal.append("$")
        else:
            parts += [("".join(literal), False), (name, True)]
            literal = []
        at = found.end()
    parts.append(("".join([*literal, value[at:]]), False))
    return [(text, ref) for text, ref in parts if text or ref]


def run_time_parts(value: str) -> list[tuple[str, bool]]:
    """``value`` as ``(text, is_reference)`` pieces: literal text (``$$`` already made ``$``) and the
    names of ``${NAME}`` references, in order. ValueError at the first other ``$``."""
    return _parts(value, _REFERENCE, _bare_dollar)


def _bare_dollar(value: str, at: int) -> str:
    name = _BARE_NAME.match(value, at)
    what = name.group() if name else value[at:at + 2]
    fix = (f"write ${{{name.group(1)}}} to expand it on the node" if name
           else "write ${NAME} to expand a variable on the node")
    return f"{shown(value)} holds {shown(what)}, which hpc-tf does not expand: {fix}, or $$ for a literal $"


def _not_a_variable(value: str, at: int) -> str:
    return (f"{shown(value)} holds {shown(value[at:at + 2])}, which hpc-tf does not expand: write $NAME or "
            "${NAME} for a variable of the environment hpc-tf runs in, or $$ for a literal $")


def expand_run_time(value: str, environ: Mapping[str, str]) -> str:
    """``value`` with each ``${NAME}`` replaced from ``environ`` (as the batch script does, for the
    parts of hpc-tf that run Python on the node instead); ValueError names an unset variable, as
    the batch script's ``set -u`` stops at one."""
    return _expand(run_time_parts(value), value, environ, "on the node")


def expand_submit_time(value: str, environ: Mapping[str, str]) -> str:
    """Submit-time text expanded from ``environ``: a leading ``~`` or ``~/`` is ``$HOME``, ``$NAME`` and
    ``${NAME}`` the variable's value, ``$$`` a ``$``. ValueError names the first unset variable."""
    home = value == "~" or value.startswith("~/")
    parts = _parts(value[1:] if home else value, _SUBMIT_REFERENCE, _not_a_variable)
    return _expand([("HOME", True), *parts] if home else parts, value, environ, "here")


def _expand(parts: list[tuple[str, bool]], value: str, environ: Mapping[str, str], where: str) -> str:
    unset = [text for text, ref in parts if ref and text not in environ]
    if unset:
        raise ValueError(f"{shown(value)}: ${{{unset[0]}}} is not set {where}")
    return "".join(environ[text] if ref else text for text, ref in parts)


def no_variables(value: str, reason: str) -> str:
    """``value`` unchanged if it holds no ``$``: text passed on as written (an ``#SBATCH`` line, an srun
    option), where a ``$`` would stay literal where its author meant a variable; else ValueError."""
    if "$" in value:
        raise ValueError(f"{shown(value)} holds a $: {reason}; write the value itself")
    return value


def run_time_literal(value: str) -> str:
    """A literal path or word written as run-time text (``$`` doubled), for values hpc-tf chooses
    itself (the spec directory, the run directory) beside those the user wrote."""
    return value.replace("$", "$$")


def _run_time(value: str) -> str:
    run_time_parts(one_line(value, "the value"))
    return value


def submit_time(value: str) -> str:
    """``value`` unchanged if it is one line of submit-time text (only ``$NAME``, ``${NAME}``, ``$$``)."""
    _parts(one_line(value, "the value"), _SUBMIT_REFERENCE, _not_a_variable)
    return value


# text the batch script expands on the node: paths, env values, command arguments
RunTimeText = Annotated[str, AfterValidator(_run_time)]
# text hpc-tf expands where it runs (expand_submit_time): paths the CLI itself creates or reads
SubmitTimeText = Annotated[str, AfterValidator(submit_time)]
