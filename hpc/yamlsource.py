"""YAML files that remember where each key was written, so errors can name the line.

Used for job specs, campaign files and site configs alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpc.errors import FieldProblem, SpecError

Location = tuple[str | int, ...]


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


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers: ``time: 30:00`` stays the string '30:00'."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+|0o?[0-7_]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def load_scalar(text: str) -> object:
    """One value as YAML reads it (``4`` -> 4, ``true`` -> True, ``[a, b]`` -> list), same rules as files."""
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


def parse_yaml(text: str, source: str) -> YamlDocument:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError(
            [FieldProblem(path="", message=f"not valid YAML: {err.problem}", line=line, source=source)]
        ) from None
    except yaml.YAMLError as err:
        raise SpecError([FieldProblem(path="", message=f"not valid YAML: {err}", source=source)]) from None
    finally:
        loader.dispose()
    lines: dict[Location, int] = {}
    if node is not None:
        _record_lines(node, (), lines)
    return YamlDocument(data=data, source=source, lines=lines)


def load_yaml_file(path: Path) -> YamlDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([FieldProblem(path="", message=f"no such file: {path}")]) from None
    except OSError as err:
        raise SpecError([FieldProblem(path="", message=f"cannot read {path}: {err.strerror}")]) from None
    return parse_yaml(text, str(path))
