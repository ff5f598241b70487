"""What is serving, per repository: the versions of each model and the traffic splits.

Recorded in one file, ``<repository>/.hpc-tf/serving.json``, so that a serving node (or a replica)
that starts loads what was serving before it takes traffic, and a router splits traffic the same way::

    {"v": 1,
     "models": {"<model>": {"versions": [1], "updated": "<iso time>", "by": "handoff"}},
     "splits": {"<public name>": {"variants": [{"model": "<model>", "version": 2, "weight": 10}, ...],
                                  "sticky_header": "x-user"}},
     "canaries": {"<model>": {"old": 1, "new": 2, "steps": [5, 25, 100], "step_s": 60, "max_error_rate": 0.01,
                              "max_p99_ms": null, "min_requests": 20, "step": 0, "status": "running",
                              "reason": "", "updated": "<iso time>"}},
     "service": {"replicas": 2}}

``service`` (absent: no replica count recorded, the router manages no replicas) is the number of Triton
replicas the router's replica controller keeps (:mod:`hpc.serving.router.replicas`).

Written by temp file + rename under the repository's state lock (:func:`update_state`), never writable
by group or others; read only when it is the owner's alone (it decides what the node loads). A missing
file means nothing is recorded. Anything else that is not exactly this shape — wrong types, a name
that is not a model name (``../x``) — is refused as a whole, in one line: nothing of it is loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

from hpc.atomic import write_text_atomic
from hpc.errors import InputError, ModelNameError
from hpc.records import read_record
from hpc.serving.names import check_model_name
from hpc.serving.repository import Repository
from hpc.text import shown

FORMAT_VERSION = 1
# who changed a model's entry: a word ("handoff", "rollback", "split", "canary", ...)
_BY_RE = re.compile(r"[a-z][a-z-]{0,31}")
# an HTTP header name (RFC 9110 token), as the router looks it up: lower case
_HEADER_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,64}")
_UPDATED_LIMIT = 64


@dataclass(frozen=True)
class Variant:
    """One destination of a split: ``model`` at ``version`` (None: the version the model serves)."""

    model: str
    version: int | None
    weight: int


@dataclass(frozen=True)
class Split:
    """A public model name whose requests go to its variants in proportion to their weights; with
    ``sticky_header`` set, requests carrying the same value of that header go to the same variant."""

    variants: tuple[Variant, ...]
    sticky_header: str | None = None


@dataclass(frozen=True)
class Served:
    """The versions of one model that serve, and which operation made them serve, when."""

    versions: tuple[int, ...]
    updated: str
    by: str


CANARY_STATUSES = ("running", "rolled-back", "promoted")


@dataclass(frozen=True)
class Canary:
    """A step-wise rollout of ``model`` from version ``old`` to ``new`` (:mod:`hpc.serving.canary`): at step
    ``step`` the new version takes ``steps[step]`` % of the model's requests; gates on the step's error rate
    and p99 latency; ``status`` running, rolled-back (``reason`` says why) or promoted."""

    old: int
    new: int
    steps: tuple[int, ...]
    step_s: float
    max_error_rate: float
    max_p99_ms: float | None
    min_requests: int
    step: int = 0
    status: str = "running"
    reason: str = ""
    updated: str = ""


@dataclass(frozen=True)
class Service:
    """How many Triton replicas the router keeps behind its endpoint."""

    replicas: int = 1


REPLICAS_LIMIT = 64  # a typo (--replicas 1000) must not fill the cluster's queue


@dataclass(frozen=True)
class ServingState:
    models: Mapping[str, Served] = field(default_factory=dict)
    splits: Mapping[str, Split] = field(default_factory=dict)
    canaries: Mapping[str, Canary] = field(default_factory=dict)
    service: Service | None = None

    @classmethod
    def read(cls, repository: Repository) -> ServingState:
        """The recorded state (empty when nothing is recorded); RecordError, one line, when the file is
        damaged, hostile or not the owner's alone."""
        try:
            return read_record(repository.serving_file, "the recorded serving state", parse=_parse, owned=True,
                               fix="correct it or remove it (a node then loads nothing until the next hand-off)")
        except FileNotFoundError:
            return cls()

    def to_load(self) -> dict[str, tuple[int, ...]]:
        """What a starting node loads: each model's recorded versions, and the versions its splits' variants
        name (a variant without a version takes the model's recorded ones)."""
        load = {model: set(served.versions) for model, served in self.models.items()}
        for split in self.splits.values():
            for variant in split.variants:
                if variant.version is not None:
                    load.setdefault(variant.model, set()).add(variant.version)
        return {model: tuple(sorted(versions)) for model, versions in sorted(load.items())}

    def with_model(self, model: str, versions: tuple[int, ...] | list[int], by: str) -> ServingState:
        """This state with ``model`` serving ``versions`` (none: the model is no longer recorded)."""
        models = dict(self.models)
        if versions:
            models[check_model_name(model)] = Served(_versions(list(versions), "versions"), _now(), _by(by))
        else:
            models.pop(model, None)
        return replace(self, models=models)

    def with_split(self, name: str, split: Split | None) -> ServingState:
        """This state with the public name ``name`` split as ``split`` (None: no split); InputError, one
        line, for a split that cannot serve (no variant, weights adding up to 0, a bad name)."""
        splits = dict(self.splits)
        if split is None:
            splits.pop(name, None)
        else:
            try:
                splits[_name(name, f"split {shown(name)}")] = _checked_split(split, f"split {name}")
            except ValueError as err:
                raise InputError(str(err)) from None
        return replace(self, splits=splits)

    def with_canary(self, model: str, canary: Canary) -> ServingState:
        """This state with ``model``'s canary as ``canary`` (time-stamped now); InputError, one line, for one
        that cannot run."""
        try:
            checked = _checked_canary(replace(canary, updated=_now()), f"canaries.{shown(model)}")
            return replace(self, canaries={**self.canaries, _name(model, f"canaries.{shown(model)}"): checked})
        except ValueError as err:
            raise InputError(str(err)) from None

    def with_service(self, replicas: int) -> ServingState:
        """This state with the router keeping ``replicas`` replicas; InputError, one line, for a count out of range."""
        try:
            return replace(self, service=Service(_replicas(replicas, "service.replicas")))
        except ValueError as err:
            raise InputError(str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        canaries = {name: canary_to_dict(c) for name, c in sorted(self.canaries.items())}
        return {
            "v": FORMAT_VERSION,
            "models": {name: {"versions": list(s.versions), "updated": s.updated, "by": s.by}
                       for name, s in sorted(self.models.items())},
            "splits": {name: split_to_dict(split) for name, split in sorted(self.splits.items())},
            **({"canaries": canaries} if canaries else {}),  # none: the file as before canaries existed
            **({} if self.service is None else {"service": {"replicas": self.service.replicas}}),
        }


def canary_to_dict(canary: Canary) -> dict[str, Any]:
    return {**asdict(canary), "steps": list(canary.steps)}


def split_to_dict(split: Split) -> dict[str, Any]:
    """A split's JSON form, as serving.json and the router's control API have it."""
    return {"variants": [{"model": v.model, "version": v.version, "weight": v.weight} for v in split.variants],
            "sticky_header": split.sticky_header}


def split_from_dict(name: str, data: object) -> Split:
    """The split of public name ``name`` from its JSON form (:func:`split_to_dict`); InputError, one line
    naming the field, for anything else (the same checks as serving.json's)."""
    try:
        where = f"split {_name(name, f'split {shown(name)}')}"
        return _split(data, where)
    except ValueError as err:
        raise InputError(str(err)) from None


def write_state(repository: Repository, state: ServingState) -> None:
    """Replace the recorded state (callers that change it hold the state lock: :func:`update_state`)."""
    write_text_atomic(repository.serving_file, json.dumps(state.to_dict(), indent=2) + "\n", mode=0o644)


def update_state(repository: Repository, change: Callable[[ServingState], ServingState]) -> ServingState:
    """Read, change and write the recorded state under the repository's state lock; the new state."""
    with repository.state_lock():
        state = change(ServingState.read(repository))
        write_state(repository, state)
    return state


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- parsing: every field checked, one path
def _parse(data: dict[str, Any]) -> ServingState:
    if data.get("v") != FORMAT_VERSION:
        raise ValueError(f"v: {shown(repr(data.get('v')))} is not {FORMAT_VERSION}, the only format this "
                         "hpc-tf reads")
    _only(data, {"v", "models", "splits", "canaries", "service"}, "")
    models = {_name(name, f"models.{shown(name)}"): _served(entry, f"models.{shown(name)}")
              for name, entry in _object(data.get("models", {}), "models").items()}
    splits = {_name(name, f"splits.{shown(name)}"): _split(entry, f"splits.{shown(name)}")
              for name, entry in _object(data.get("splits", {}), "splits").items()}
    canaries = {_name(name, f"canaries.{shown(name)}"): _canary(entry, f"canaries.{shown(name)}")
                for name, entry in _object(data.get("canaries", {}), "canaries").items()}
    service = None if "service" not in data else _service(data["service"])
    return ServingState(models, splits, canaries, service)


def _canary(entry: object, where: str) -> Canary:
    entry = _object(entry, where)
    _only(entry, {f.name for f in fields(Canary)}, where)
    steps = entry.get("steps")
    try:
        canary = Canary(**{**entry, "steps": tuple(steps) if isinstance(steps, list) else ()})
    except TypeError:
        raise ValueError(f"{where}: a field is missing") from None
    return _checked_canary(canary, where)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN


def _checked_canary(c: Canary, where: str) -> Canary:
    _versions([c.old], f"{where}.old")
    _versions([c.new], f"{where}.new")
    if c.old == c.new:
        raise ValueError(f"{where}.new: the version serving ({c.old})")
    if not c.steps or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100 for s in c.steps) \
            or list(c.steps) != sorted(set(c.steps)) or c.steps[-1] != 100:
        raise ValueError(f"{where}.steps: rising percents, the last 100")
    if not _number(c.step_s) or not 0 < c.step_s <= 86_400:
        raise ValueError(f"{where}.step_s: seconds, > 0, at most a day")
    if not _number(c.max_error_rate) or not 0 <= c.max_error_rate <= 1:
        raise ValueError(f"{where}.max_error_rate: a fraction from 0 to 1")
    if c.max_p99_ms is not None and (not _number(c.max_p99_ms) or not c.max_p99_ms > 0):
        raise ValueError(f"{where}.max_p99_ms: milliseconds > 0, or null")
    if not isinstance(c.min_requests, int) or isinstance(c.min_requests, bool) or not 0 < c.min_requests <= 10**9:
        raise ValueError(f"{where}.min_requests: a whole number >= 1")
    if not isinstance(c.step, int) or isinstance(c.step, bool) or not 0 <= c.step < len(c.steps):
        raise ValueError(f"{where}.step: an index into steps")
    if c.status not in CANARY_STATUSES:
        raise ValueError(f"{where}.status: one of {', '.join(CANARY_STATUSES)}")
    if not isinstance(c.reason, str) or len(c.reason) > 1000 or not isinstance(c.updated, str) \
            or len(c.updated) > _UPDATED_LIMIT:
        raise ValueError(f"{where}.reason: at most 1000 characters")
    return c


def _service(entry: object) -> Service:
    entry = _object(entry, "service")
    _only(entry, {"replicas"}, "service")
    return Service(_replicas(entry.get("replicas", 1), "service.replicas"))


def _replicas(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= REPLICAS_LIMIT:
        raise ValueError(f"{where}: the number of replicas is an integer from 0 to {REPLICAS_LIMIT}")
    return value


def _served(entry: object, where: str) -> Served:
    entry = _object(entry, where)
    _only(entry, {"versions", "updated", "by"}, where)
    updated = entry.get("updated", "")
    if not isinstance(updated, str) or len(updated) > _UPDATED_LIMIT:
        raise ValueError(f"{where}.updated: not a time stamp")
    versions = entry.get("versions")
    if not isinstance(versions, list) or not versions:
        raise ValueError(f"{where}.versions: not a list of version numbers")
    by = entry.get("by")
    return Served(_versions(versions, f"{where}.versions"), updated, _by(by if isinstance(by, str) else "", where))


def _split(entry: object, where: str) -> Split:
    entry = _object(entry, where)
    _only(entry, {"variants", "sticky_header"}, where)
    variants = entry.get("variants")
    if not isinstance(variants, list):
        raise ValueError(f"{where}.variants: not a list")
    parsed = []
    for i, variant in enumerate(variants):
        at = f"{where}.variants[{i}]"
        variant = _object(variant, at)
        _only(variant, {"model", "version", "weight"}, at)
        model = variant.get("model")
        version = variant.get("version")
        parsed.append(Variant(_name(model if isinstance(model, str) else "", f"{at}.model"),
                              None if version is None else _versions([version], f"{at}.version")[0],
                              _weight(variant.get("weight"), f"{at}.weight")))
    header = entry.get("sticky_header")  # HTTP header names are case-insensitive: kept in lower case
    return _checked_split(Split(tuple(parsed), header.lower() if isinstance(header, str) else
                                None if header is None else ""), where)


def _checked_split(split: Split, where: str = "split") -> Split:
    if not split.variants:
        raise ValueError(f"{where}.variants: a split needs at least one variant")
    if sum(v.weight for v in split.variants) <= 0:
        raise ValueError(f"{where}.variants: the weights add up to 0")
    for variant in split.variants:
        _name(variant.model, f"{where}.model")
        _weight(variant.weight, f"{where}.weight")
        if variant.version is not None:
            _versions([variant.version], f"{where}.version")
    if split.sticky_header is not None and _HEADER_RE.fullmatch(split.sticky_header) is None:
        raise ValueError(f"{where}.sticky_header: {shown(split.sticky_header)} is not a lower-case HTTP header name")
    return split


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where or 'the file'}: not a JSON object")
    return value


def _only(entry: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"{where + '.' if where else ''}{shown(unknown[0])}: unknown field")


def _name(name: str, where: str) -> str:
    try:
        return check_model_name(name)
    except ModelNameError:  # its rule is longer than a record's reason may be
        raise ValueError(f"{where}: not a model name") from None


def _versions(values: list[Any], where: str) -> tuple[int, ...]:
    # bool is an int to Python, not a version to anyone
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**63 for v in values):
        raise ValueError(f"{where}: a version is a positive integer")
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: a version is listed twice")
    return tuple(sorted(values))


def _weight(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1_000_000:
        raise ValueError(f"{where}: a weight is an integer from 0 to 1000000")
    return value


def _by(by: str, where: str = "by") -> str:
    if _BY_RE.fullmatch(by) is None:
        raise ValueError(f"{where}.by: {shown(by)} is not the name of an operation")
    return by
