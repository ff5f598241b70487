"""Parameters → tasks, deterministically: the same campaign.yaml always gives the same tasks, ids and values.

Task ids are positions in the expansion (0, 1, 2 …): blocks combine as a product in the order
list x zip x grid x random, the last block varying fastest, and inside a grid the last key
varies fastest. Random samples come from :class:`random.Random` seeded with the file's seed
(its ``random()`` sequence is the same on every platform and Python 3 version), rounded to
six significant digits so the values read well on a command line.

Each task also carries a ``key``: a digest of its parameters, the same for the same values
whatever position they end up in.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hpc.campaign.model import Distribution, Parameters, RandomSamples, Value
from hpc.text import expand_run_time, run_time_literal

Combination = dict[str, Value]


@dataclass(frozen=True)
class Task:
    id: int
    params: Mapping[str, Value]
    key: str


def format_value(value: Value) -> str:
    """A parameter value as text on a command line or in an environment variable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float: 0.001, 1e-05
    return str(value)


def task_key(params: Mapping[str, Value]) -> str:
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _grid(values: Mapping[str, Sequence[Value]]) -> list[Combination]:
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(values[n] for n in names))]


def _zipped(values: Mapping[str, Sequence[Value]]) -> list[Combination]:
    names = list(values)
    return [dict(zip(names, combo, strict=True)) for combo in zip(*(values[n] for n in names), strict=True)]


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _draw(rng: random.Random, dist: Distribution) -> Value:
    if dist.uniform is not None:
        low, high = dist.uniform
        return _round(low + (high - low) * rng.random())
    if dist.log_uniform is not None:
        low, high = (math.log(b) for b in dist.log_uniform)
        return _round(math.exp(low + (high - low) * rng.random()))
    if dist.randint is not None:
        low, high = dist.randint
        return low + min(int((high - low + 1) * rng.random()), high - low)
    assert dist.choice is not None  # the model guarantees exactly one kind
    return dist.choice[min(int(len(dist.choice) * rng.random()), len(dist.choice) - 1)]


def _random(samples: RandomSamples) -> list[Combination]:
    # only rng.random() is used: its sequence for a seed is fixed, unlike randrange's internals
    rng = random.Random(samples.seed)
    return [{name: _draw(rng, dist) for name, dist in samples.space.items()} for _ in range(samples.samples)]


def combinations(parameters: Parameters | None) -> list[Combination]:
    """Every combination, in task-id order."""
    if parameters is None:
        return [{}]
    blocks: list[list[Combination]] = []
    if parameters.list is not None:
        blocks.append([dict(c) for c in parameters.list])
    if parameters.zip is not None:
        blocks.append(_zipped(parameters.zip))
    if parameters.grid is not None:
        blocks.append(_grid(parameters.grid))
    if parameters.random is not None:
        blocks.append(_random(parameters.random))
    return [_merge(parts) for parts in itertools.product(*blocks)] if blocks else [{}]


def _merge(parts: Iterable[Combination]) -> Combination:
    merged: Combination = {}
    for part in parts:
        merged.update(part)
    return merged


def expand(parameters: Parameters | None) -> list[Task]:
    return [Task(id=index, params=combo, key=task_key(combo)) for index, combo in enumerate(combinations(parameters))]


def render_template(template: str, fields: Mapping[str, str]) -> str:
    """``--lr={lr}`` with ``fields`` filled in (placeholders were checked when the file was loaded)."""
    return template.format_map(fields)


def render_literal(template: str, fields: Mapping[str, str]) -> str:
    """A template of a task's arguments or variables, which reach it without a shell: run-time text
    with no references (refused at load), so only ``$$`` becomes ``$``; the fields are literal."""
    return expand_run_time(render_template(template, {k: run_time_literal(v) for k, v in fields.items()}), {})


def default_args(params: Mapping[str, Value]) -> list[str]:
    """``--batch-size 64`` for ``batch_size: 64``: the argparse convention."""
    args: list[str] = []
    for name, value in params.items():
        args += [f"--{name.replace('_', '-')}", format_value(value)]
    return args
