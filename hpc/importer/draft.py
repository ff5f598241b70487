"""A job.yaml draft: the fields an import placed, the notes on what it could not, and its YAML text."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from hpc.errors import SpecError
from hpc.spec.load import load_spec_text
from hpc.spec.model import JobSpec
from hpc.text import shown

NOTE_PREFIX = "# hpc-tf import:"
CONTAINER = ("environment", "container")
COMMENT_LIMIT = 2000


@dataclass(frozen=True)
class Note:
    line: int | None  # in the original script
    text: str  # what the script says there, as written
    why: str  # why it has no place in the draft, and what to do

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.text}  ({self.why})" if self.text else f"{where}{self.why}"


@dataclass
class Draft:
    """Fields by path (``("resources", "nodes")``); list fields grow item by item."""

    source: str
    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)  # what to check by hand, though everything was placed
    reading: int | None = None  # the script line being placed, remembered per field for its notes
    origins: dict[tuple[str, ...], int | None] = field(default_factory=dict)

    def set(self, path: tuple[str, ...], value: Any) -> None:
        *parents, last = path
        self._parent(parents)[last] = value
        self.origins.setdefault(path, self.reading)

    def add(self, path: tuple[str, ...], value: Any) -> None:
        *parents, last = path
        self._parent(parents).setdefault(last, []).append(value)
        self.origins.setdefault(path, self.reading)

    def get(self, path: tuple[str, ...]) -> Any:
        node: Any = self.fields
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def note(self, line: int | None, text: str, why: str) -> None:
        self.notes.append(Note(line, text, why))

    def drop(self, path: tuple[str, ...], why: str) -> None:
        """Take the field at ``path`` out of the draft into a note."""
        *parents, last = path
        parent = self._parent(parents)
        value = parent.pop(last)
        # JSON is YAML: the note can be pasted back once the value is fixed
        self.note(self._origin(path), f"{'.'.join(path)}: {json.dumps(value)}", why)
        while parents and not self.get(tuple(parents)):  # no empty mapping left behind
            *parents, emptied = parents
            self._parent(parents).pop(emptied)

    def _origin(self, path: tuple[str, ...]) -> int | None:
        lines = [line for placed, line in self.origins.items()
                 if line is not None and (placed[:len(path)] == path or path[:len(placed)] == placed)]
        return min(lines) if lines else None

    def _parent(self, path: typing.Sequence[str]) -> dict[str, Any]:
        node = self.fields
        for key in path:
            node = node.setdefault(key, {})
        return node

    def yaml_text(self, script_name: str) -> str:
        data = _in_spec_order(self.fields, JobSpec)
        head = [f"# Drafted by `hpc-tf import {one_comment(script_name)}`: check it, then "
                "`hpc-tf launch <this file> --dry-run`."]
        head += [f"# hint: {one_comment(hint)}" for hint in self.hints]
        if self.notes:
            head.append("# Not placed (the script's lines, kept here; see README 'From your sbatch script'):")
            head += [f"{NOTE_PREFIX} {one_comment(str(note))}" for note in self.notes]
        body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=10_000, allow_unicode=True)
        return "\n".join(head) + "\n" + body


def _in_spec_order(data: dict[str, Any], model: Any) -> dict[str, Any]:
    """``data`` with its keys in the order the spec declares them (as a hand-written job.yaml reads)."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return data
    order = list(model.model_fields)
    ordered = sorted(data, key=lambda key: order.index(key) if key in order else len(order))
    return {key: _in_spec_order(data[key], _model_of(model.model_fields[key].annotation))
            if isinstance(data[key], dict) and key in model.model_fields else data[key] for key in ordered}


def one_comment(text: str) -> str:
    """``text`` on one line of printable characters: safe in a YAML comment (PyYAML takes U+2028 as a line
    break and refuses control characters) and on a terminal."""
    return shown(" ".join(text.split()), limit=COMMENT_LIMIT)[1:-1]


def _model_of(annotation: Any) -> Any:
    """The model inside ``X | None`` (or the annotation itself)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        models = [arg for arg in typing.get_args(annotation) if isinstance(arg, type) and issubclass(arg, BaseModel)]
        return models[0] if models else annotation
    return annotation


def fit_to_spec(draft: Draft) -> None:
    """Move every field the spec refuses (a value it does not take, a key this release lacks) into a note
    with its reason, so the draft always loads."""
    for _ in range(20):  # each pass drops at least one refused field; the check is the one every launch meets
        try:
            load_spec_text(yaml.safe_dump(draft.fields), draft.source, base_dir=Path("."))
            return
        except SpecError as err:
            refused = [(tuple(p.path.split(".")), p.message) for p in err.problems]
            placed = [(path, why) for path, why in refused if draft.get(_field_path(path)) is not None]
            if not placed:
                draft.note(None, "", "the draft does not load yet: " + "; ".join(str(p) for p in err.problems))
                return
            for path, why in placed:
                field_path = _field_path(path)
                if field_path[:2] == CONTAINER and draft.get(CONTAINER) is not None:
                    field_path = CONTAINER  # half a container would run something else
                if draft.get(field_path) is not None:
                    draft.drop(field_path, f"the spec refuses it: {why}")


def _field_path(dotted: tuple[str, ...]) -> tuple[str, ...]:
    # "sbatch_extra[2]" or "env.FOO": a list item is dropped with its list
    return tuple(part.split("[")[0] for part in dotted)

