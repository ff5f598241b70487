"""What is serving, per repository: the versions of each model and the traffic splits.

Recorded in one file, ``<repository>/.hpc-tf/serving.json``, so that a serving node (or a replica)
that starts loads what was serving before it takes traffic, and a router splits traffic the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


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
