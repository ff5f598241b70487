"""Base for every user-facing model (job spec, site config, campaign) and its error translation.

Pydantic reports ``('resources', 'gpus_per_node')`` and "Input should be a valid integer";
users get ``job.yaml:7: resources.gpus_per_node: expected an integer`` plus, for unknown keys,
the keys that are allowed there. A message that quotes the user's value gets it as hpc.text.shown
shows it (escaped, shortened), whichever validator wrote the message.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from hpc.errors import FieldProblem, SpecError
from hpc.scheduler.managed import sbatch_key_hint
from hpc.text import shown
from hpc.yamlsource import YamlDocument

M = TypeVar("M", bound=BaseModel)
# a model's field for sbatch options it has no field of its own for (job spec, site config)
ESCAPE_HATCHES = ("sbatch_extra", "sbatch_defaults")


class StrictModel(BaseModel):
    """Unknown keys are errors; instances are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside ``X | None``, ``list[X]``, ``dict[str, X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType, list, dict, tuple, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _submodel(arg)
            if found is not None:
                return found
    return None


def allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str] | None:
    """The field names allowed at ``loc`` (the mapping that holds the offending key)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            # a dict key (e.g. a partition name): stay on the dict's value model
            continue
        current = _submodel(field.annotation)
    return sorted(current.model_fields) if current is not None else None


def _shown_input(message: str, value: object) -> str:
    """``message`` with the raw ``value`` (as a validator may have quoted it) replaced by its shown form."""
    if not isinstance(value, str) or not value or shown(value) == f"'{value}'" or value not in message:
        return message
    return message.replace(f"'{value}'", shown(value)).replace(value, shown(value))


def error_message(model: type[BaseModel], error: Any) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) in the words users get."""
    kind = error["type"]
    loc = error["loc"]
    if kind == "extra_forbidden":
        allowed = allowed_keys(model, loc[:-1]) or []
        hatch = next((name for name in ESCAPE_HATCHES if name in model.model_fields), None)
        hint = sbatch_key_hint(str(loc[-1]), hatch) if hatch else None
        if hint is not None:  # an sbatch option written as a key: where it goes instead
            return f"unknown key: {hint}"
        near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        guess = f" (did you mean '{near[0]}'?)" if near else ""
        return f"unknown key{guess}; allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return "required key is missing"
    # pydantic prefixes custom ValueErrors with "Value error, "
    return _shown_input(str(error["msg"]).removeprefix("Value error, "), error.get("input"))


def validate_document(model: type[M], doc: YamlDocument, *, what: str) -> M:
    """Validate parsed YAML into ``model``; all problems at once, each with its line."""
    if not isinstance(doc.data, dict):
        found = "an empty file" if doc.data is None else type(doc.data).__name__
        raise SpecError([FieldProblem(path="", message=f"a {what} must be a mapping of keys, found {found}",
                                      source=doc.source, line=1)])
    try:
        return model.model_validate(doc.data)
    except ValidationError as err:
        problems = [doc.problem(e["loc"], error_message(model, e)) for e in err.errors()]
        raise SpecError(problems) from None
