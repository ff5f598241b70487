"""hpc.text: the one check for text that reaches a script, an #SBATCH line or a terminal, and that
every user-facing model applies it to every field that holds text."""

from __future__ import annotations

import os
import re
import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hpc.campaign.model import CampaignSpec
from hpc.site.model import SiteConfig
from hpc.spec.model import JobSpec
from hpc.text import forbidden_character, named, one_line, shown

# every character some reader of our output takes as a line break or a command (bash: \n; sbatch:
# \n and refuses \r; str.splitlines: \v \f \x1c-\x1e \x85 \u2028 \u2029 too; a terminal: ESC, ...)
# ...and lone surrogates: how Python hands over bytes of argv or the environment that are not UTF-8
REFUSED = ["\n", "\r", "\0", "\t", "\v", "\f", "\x1b", "\x1c", "\x1d", "\x1e", "\x7f", "\x85", "\u2028", "\u2029",
           os.fsdecode(b"\xff"), "\ud800"]
ACCEPTED = ["plain", "two words", "it's \"quoted\"", "$(id) `id` ;x", "# not a comment", "100%", "back\\slash",
            "ünïcødé ∑ 漢字 🙂", ""]


@pytest.mark.parametrize("char", REFUSED)
def test_one_line_refuses_every_line_break_and_control_character(char: str) -> None:
    with pytest.raises(ValueError, match="must be one line of printable text; it contains \\\\"):
        one_line(f"a{char}b", "the value")
    assert forbidden_character(f"a{char}b") is not None
    assert char not in str(forbidden_character(char))  # the message shows it escaped


@pytest.mark.parametrize("value", ACCEPTED)
def test_one_line_accepts_any_printable_text(value: str) -> None:
    assert one_line(value) == value


def test_named_matches_the_whole_string() -> None:
    pattern = re.compile(r"^[A-Za-z_]+$")  # the style that let "FOO\n" through re.match
    assert re.match(pattern, "FOO\n")
    with pytest.raises(ValueError, match=r"^'FOO\\n' is not valid: letters$"):
        named("FOO\n", pattern, "letters")
    assert named("FOO", pattern, "letters") == "FOO"


def test_shown_escapes_and_shortens() -> None:
    assert shown("a\u2028b\x1b[31m") == "'a\\u2028b\\x1b[31m'"
    assert shown("x" * 200) == f"'{'x' * 80}... (200 characters)'"


# ---- every text field of the job spec, site config and campaign refuses a line break ------------------

BASES: dict[type[BaseModel], dict[str, Any]] = {
    JobSpec: {"name": "a", "command": ["x"], "environment": {"container": {"image": "i"}}, "handoff": {"model": "m"},
              "resources": {"gpus_per_node": 1}},
    SiteConfig: {"name": "s"},
    CampaignSpec: {"name": "c", "job": "job.yaml", "stages": [{"name": "s", "resources": {"gpus_per_node": 1}}],
                   "parameters": {"random": {"samples": 1, "space": {"p": {"choice": [1]}}}}},
}
# sbatch_extra / sbatch_defaults: checked by hpc.scheduler.managed (the sbatch option parser's own field
# type); their values are also refused by the quoting layer at render time (test_render.py)
# stages[].after: its keys must equal the name of an earlier stage, a StageName
# srun_extra: as sbatch_extra, by the srun option parser; setup: a step holds exactly one of job and node, so
# one cannot be filled beside the other (test_setup_steps.py refuses a line break in each)
NOT_HERE = {"sbatch_extra", "sbatch_defaults", "after", "srun_extra", "setup"}
VALUE_SAMPLES: dict[str, Any] = {"partitions": {}, "space": {"choice": [1]}}
SAMPLES = {"time": "10{}", "default_time": "10{}", "max_time": "10{}", "mem": "1G{}", "mem_per_node": "1G{}",
           "mem_per_gpu": "1G{}", "mem_per_cpu": "1G{}", "gres": "nvme:1{}"}


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _text_fields(model: type[BaseModel], loc: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    """(location, how to write a text value there) for every place a model holds user text."""
    found: list[tuple[tuple[str | int, ...], Any]] = []
    for name, field in model.model_fields.items():
        if name in NOT_HERE:
            continue
        for member in _members(field.annotation):
            origin, args = typing.get_origin(member), typing.get_args(member)
            inner = _members(args[-1] if origin is dict else args[0]) if origin in (list, tuple, dict) else []
            if member is str:
                found.append(((*loc, name), SAMPLES.get(name, "x{}")))
            elif isinstance(member, type) and issubclass(member, BaseModel):
                found += _text_fields(member, (*loc, name))
            elif origin in (list, tuple) and str in inner:
                found.append(((*loc, name), [SAMPLES.get(name, "x{}")]))
            elif origin is dict and args[-1] is not Any:  # dict[str, Any]: an inline job, a JobSpec later
                value = VALUE_SAMPLES.get(name, ["v"] if typing.get_origin(args[-1]) is list else "v")
                found.append(((*loc, name), {"k{}": value}))  # the key
                if str in inner:
                    found.append(((*loc, name), {"K": "{}"}))
                for sub in inner:
                    if isinstance(sub, type) and issubclass(sub, BaseModel):
                        found += _text_fields(sub, (*loc, name, "k"))
            elif origin is list:
                for sub in inner:
                    if isinstance(sub, type) and issubclass(sub, BaseModel):
                        found += _text_fields(sub, (*loc, name, 0))
    return found


def _fill(shape: Any, text: str) -> Any:
    if isinstance(shape, str):
        return shape.format(text)
    if isinstance(shape, list):
        return [_fill(item, text) for item in shape]
    if isinstance(shape, dict):
        return {_fill(key, text): _fill(value, text) for key, value in shape.items()}
    return shape


def _with(base: dict[str, Any], loc: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    doc = typing.cast(dict[str, Any], _fill(base, ""))  # a deep copy
    node: Any = doc
    for part in loc[:-1]:
        if isinstance(part, int):
            node = node[part]
        else:
            node = node.setdefault(part, {} if part != "stages" else [{"name": "s"}])
    node[loc[-1]] = value
    return doc


CASES = [(model, loc, shape) for model in BASES for loc, shape in _text_fields(model)]


def test_the_walk_finds_the_fields_that_reach_scripts() -> None:
    spots = {(model.__name__, ".".join(map(str, loc))) for model, loc, _ in CASES}
    assert {("JobSpec", "env"), ("JobSpec", "resources.constraint"), ("JobSpec", "command"),
            ("SiteConfig", "python"), ("SiteConfig", "partitions"), ("SiteConfig", "partitions.k.gpu_types"),
            ("CampaignSpec", "stages.0.name"), ("CampaignSpec", "args"), ("CampaignSpec", "job")} <= spots


@pytest.mark.parametrize(("model", "loc", "shape"), CASES, ids=[f"{m.__name__}:{loc}" for m, loc, _ in CASES])
def test_every_text_field_refuses_a_line_break(model: type[BaseModel], loc: tuple[str | int, ...], shape: Any) -> None:
    model.model_validate(BASES[model])
    model.model_validate(_with(BASES[model], loc, _fill(shape, "")))
    with pytest.raises(ValidationError) as info:
        model.model_validate(_with(BASES[model], loc, _fill(shape, "\u2028")))
    (error,) = info.value.errors()
    assert "\\u2028" in error["msg"], error
