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

from hpc.errors import ServingError
from hpc.serving.state import Split, Variant

__all__ = ["Split", "Variant", "choose", "variant_from_spec"]

_SCALE = 2**64


def choose(split: Split, sticky_value: str | None = None, draw: random.Random | None = None) -> Variant:
    """The variant a request goes to (weights > 0 only; a split has at least one,
    :func:`hpc.serving.state.split_from_dict` checks)."""
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


def variant_from_spec(text: str) -> dict[str, object]:
    """``MODEL[:VERSION]=WEIGHT`` (the CLI's form) as the JSON form :func:`hpc.serving.state.split_from_dict`
    checks."""
    target, sep, weight = text.rpartition("=")
    model, _, version = target.partition(":")
    if not sep or not model or not weight.isdigit() or (version and not version.isdigit()):
        raise ServingError(f"a variant is MODEL[:VERSION]=WEIGHT (e.g. mlp:2=10), got {text!r}")
    return {"model": model, "version": int(version) if version else None, "weight": int(weight)}
