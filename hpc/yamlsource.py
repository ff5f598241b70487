"""The one YAML loader: job specs, campaign files and site configs. It remembers where each key was
written, so errors can name the line, and it is bounded: whatever the file holds, the answer is data
or one SpecError line, soon and in little memory.

Refused, each with its line: files over 1 MiB or not UTF-8 text (hpc.records.read_text), anchors and
aliases (a 1 kB file of nested aliases expands to gigabytes; a spec never needs them), nesting deeper
than MAX_DEPTH, a key written twice in one mapping (YAML would keep the last silently), integers
longer than MAX_INT_DIGITS, and whatever PyYAML itself cannot read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpc.errors import FieldProblem, SpecError
from hpc.records import MIB, NotText, read_text, too_large
from hpc.text import shown

Location = tuple[str | int, ...]

MAX_BYTES = MIB
MAX_DEPTH = 32  # a spec nests four levels; a stack of 10,000 brackets must not reach Python's recursion limit
MAX_INT_DIGITS = 100  # int() of a 5,000-digit string raises; no value hpc-tf takes needs 100 digits


@dataclass(frozen=True)
class YamlDocument:
    """Parsed data plus the line (1-based) of every mapping key and sequence item."""

    data: Any
    source: str
    lines: dict[Location, int] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """Line of the deepest known prefix of ``loc`` (pydantic locations may go deeper than the YAML)."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, loc: Sequence[str | int], message: str) -> FieldProblem:
        return FieldProblem(
            path=dotted(loc), message=message, line=self.line_of(loc), source=self.source
        )


class _Refused(yaml.MarkedYAMLError):
    """Something in the document this loader does not read, and where."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers (``time: 30:00`` stays the string '30:00') or
    dates (``2001-13-45`` stays a string), and with the limits above."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused("anchors and aliases (&name, *name) are not supported; write the value out in full",
                           event.start_mark)
        nests = isinstance(event, yaml.CollectionStartEvent)
        if nests and self._depth >= MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self._depth += nests
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= nests

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as err:  # a constructor's own failure, e.g. a date that is no date
            raise _Refused(f"cannot read this value: {shown(str(err))}", node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: the base class refuses it, with its line
            if earlier is not key_node:
                raise _Refused(f"key {shown(key)} appears twice, lines {earlier.start_mark.line + 1} and "
                               f"{key_node.start_mark.line + 1}; keep one", key_node.start_mark)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_DIGITS:
            raise _Refused(f"a number of {len(node.value)} digits is too long (at most {MAX_INT_DIGITS}); "
                           "quote it if it is text", node.start_mark)
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                                                              "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F][0-9a-fA-F_]*|0o?[0-7][0-7_]*)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    # a digit on at least one side of the point: '.', '-.' and '._' are text
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def load_scalar(text: str) -> object:
    """One value as YAML reads it (``4`` -> 4, ``true`` -> True, ``[a, b]`` -> list), same rules and limits
    as files; yaml.YAMLError when it cannot."""
    return yaml.load(text, Loader=_Loader)


def dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _record_lines(node: yaml.Node, loc: Location, lines: dict[Location, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*loc, key)
            lines[child] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*loc, index)
            lines[child] = item.start_mark.line + 1
            _record_lines(item, child, lines)


def _refusal(message: str, source: str, line: int | None = None) -> SpecError:
    return SpecError([FieldProblem(path="", message=message, line=line, source=source)])


def _not_text(err: NotText, source: str) -> SpecError:
    return _refusal(f"{err}; {err.fix}", source, err.line)


def parse_yaml(text: str, source: str) -> YamlDocument:
    if len(text) > MAX_BYTES:
        raise _not_text(too_large(MAX_BYTES), source)
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader refuses control characters here, before any parsing
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _Refused as err:
        raise _refusal(str(err.problem), source, err.problem_mark.line + 1 if err.problem_mark else None) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        raise _refusal(f"not valid YAML: {err.problem}", source, mark.line + 1 if mark is not None else None) from None
    except yaml.reader.ReaderError as err:
        character = shown(chr(err.character) if isinstance(err.character, int) else err.character)
        raise _refusal(f"not YAML text: it contains the control character {character}", source,
                       text.count("\n", 0, err.position) + 1) from None
    except yaml.YAMLError as err:
        raise _refusal(f"not valid YAML: {shown(str(err))}", source) from None
    finally:
        if loader is not None:
            loader.dispose()
    lines: dict[Location, int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    return YamlDocument(data=data, source=source, lines=lines)


def read_yaml_text(path: Path) -> str:
    """The text of a YAML file, read within the limits above; one SpecError line when it cannot be."""
    source = str(path)
    try:
        return read_text(path, MAX_BYTES)
    except FileNotFoundError:
        raise SpecError([FieldProblem(path="", message=f"no such file: {shown(source, 300)}")]) from None
    except OSError as err:
        raise SpecError([FieldProblem(path="", message=f"cannot read {shown(source, 300)}: {err.strerror}")]) from None
    except NotText as err:
        raise _not_text(err, source) from None


def load_yaml_file(path: Path) -> YamlDocument:
    return parse_yaml(read_yaml_text(path), str(path))
