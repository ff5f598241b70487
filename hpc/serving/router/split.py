"""Choosing a variant of a split: weighted, or sticky by a request header.

A request names a public model name; when a :class:`~hpc.serving.state.Split` is set for it, the
request goes to one of its variants (a model at a version) with probability weight / total. With a
sticky header, the header's value is hashed to a point on the same scale, so equal values always
reach the same variant (while the split is unchanged) and distinct values spread by the weights.
A request without the header falls back to the weighted draw.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

from hpc.errors import ServingError
from hpc.serving.names import check_model_name
from hpc.serving.state import Split, Variant

__all__ = ["Split", "Variant", "choose", "parse_split", "split_to_dict"]

_SCALE = 2**64


def choose(split: Split, sticky_value: str | None = None, draw: random.Random | None = None) -> Variant:
    """The variant a request goes to (weights > 0 only; a split has at least one, :func:`parse_split` checks)."""
    live = [v for v in split.variants if v.weight > 0]
    total = sum(v.weight for v in live)
    if sticky_value is not None:
        digest = hashlib.blake2b(sticky_value.encode(errors="surrogateescape"), digest_size=8).digest()
        point = int.from_bytes(digest, "big") * total // _SCALE
    else:
        point = (draw or random).randrange(total)
    for variant in live:
        if point < variant.weight:
            return variant
        point -= variant.weight
    raise AssertionError("unreachable: point < total")


def split_to_dict(split: Split) -> dict[str, object]:
    return {"variants": [{"model": v.model, "version": v.version, "weight": v.weight} for v in split.variants],
            "sticky_header": split.sticky_header}


def parse_split(public: str, data: object) -> Split:
    """A split from its JSON form (``{"variants": [{"model", "version", "weight"}], "sticky_header"}``);
    anything else is one line naming the field."""
    check_model_name(public)
    if not isinstance(data, Mapping) or not isinstance(data.get("variants"), Sequence) or not data["variants"]:
        raise ServingError(f"split {public}: 'variants' must be a non-empty list of {{model, version, weight}}")
    unknown = set(data) - {"variants", "sticky_header"}
    if unknown:
        raise ServingError(f"split {public}: unknown field(s) {', '.join(sorted(unknown))} "
                           "(known: variants, sticky_header)")
    sticky = data.get("sticky_header")
    if sticky is not None and (not isinstance(sticky, str) or not sticky.isascii() or not sticky.strip()
                               or any(c in sticky for c in " :\r\n\0")):
        raise ServingError(f"split {public}: sticky_header must be an HTTP header name, got {sticky!r}")
    variants = []
    for i, item in enumerate(data["variants"]):
        where = f"split {public}: variants[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"model", "version", "weight"}:
            raise ServingError(f"{where} must be {{model, version, weight}}, got {item!r}")
        model, version, weight = item.get("model"), item.get("version"), item.get("weight")
        if not isinstance(model, str):
            raise ServingError(f"{where}.model must be a model name, got {model!r}")
        check_model_name(model)
        if version is not None and (type(version) is not int or version < 1):
            raise ServingError(f"{where}.version must be a positive integer or null, got {version!r}")
        if type(weight) is not int or weight < 0:
            raise ServingError(f"{where}.weight must be a non-negative integer, got {weight!r}")
        variants.append(Variant(model, version, weight))
    if not any(v.weight for v in variants):
        raise ServingError(f"split {public}: at least one variant needs a weight above 0")
    return Split(tuple(variants), sticky.lower() if sticky else None)


def variant_from_spec(text: str) -> dict[str, object]:
    """``MODEL[:VERSION]=WEIGHT`` (the CLI's form) as the JSON form :func:`parse_split` checks."""
    target, sep, weight = text.rpartition("=")
    model, _, version = target.partition(":")
    if not sep or not model or not weight.isdigit() or (version and not version.isdigit()):
        raise ServingError(f"a variant is MODEL[:VERSION]=WEIGHT (e.g. mlp:2=10), got {text!r}")
    return {"model": model, "version": int(version) if version else None, "weight": int(weight)}
