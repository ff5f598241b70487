"""Rank → node placement (hpc.runtime.node.layout), checked against Slurm's own placements."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hpc.runtime.node.layout import Placement, rank_layout


def nodes_of(layout: tuple[Placement, ...]) -> list[int]:
    return [placement.node_index for placement in layout]


def test_block_cyclic_and_plane_match_what_slurm_placed() -> None:
    # Placements recorded on the test cluster (fixture slurm-22.05-cgroup.jsonl): rank → (NODEID, LOCALID)
    assert rank_layout((2, 2), None) == (Placement(0, 0), Placement(0, 1), Placement(1, 0), Placement(1, 1))
    assert rank_layout((2, 2), 1) == (Placement(0, 0), Placement(1, 0), Placement(0, 1), Placement(1, 1))
    assert rank_layout((2, 1), 1) == (Placement(0, 0), Placement(1, 0), Placement(0, 1))
    assert rank_layout((2, 2), 2) == (Placement(0, 0), Placement(0, 1), Placement(1, 0), Placement(1, 1))


def test_uneven_nodes() -> None:
    assert nodes_of(rank_layout((3, 3, 2, 1), None)) == [0, 0, 0, 1, 1, 1, 2, 2, 3]
    assert nodes_of(rank_layout((3, 3, 2, 1), 1)) == [0, 1, 2, 3, 0, 1, 2, 0, 1]
    assert nodes_of(rank_layout((3, 1, 2), 2)) == [0, 0, 1, 2, 2, 0]


def test_plane_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        rank_layout((1, 1), 0)


@given(st.lists(st.integers(0, 6), min_size=1, max_size=6), st.one_of(st.none(), st.integers(1, 4)))
def test_layout_is_a_placement_of_every_task_exactly_once(counts: list[int], plane: int | None) -> None:
    layout = rank_layout(tuple(counts), plane)
    assert len(layout) == sum(counts)
    assert len(set(layout)) == len(layout)
    for node_index, count in enumerate(counts):
        # a node's local ranks are 0..n-1, given out in increasing rank order
        assert [p.local_rank for p in layout if p.node_index == node_index] == list(range(count))
