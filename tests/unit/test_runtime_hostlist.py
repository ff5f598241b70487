"""Host list and tasks-per-node expansion (hpc.runtime.node.hostlist)."""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc.runtime.node.hostlist import MAX_HOSTS, expand_hostlist, expand_tasks_per_node
from hpc.scheduler.choice import release


@pytest.mark.parametrize(
    ("hostlist", "expected"),
    [
        # the examples
        ("gpu-[01-02,10],cpu07", ["gpu-01", "gpu-02", "gpu-10", "cpu07"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("n[9-10]", ["n9", "n10"]),
        ("n[0001-0003],m5", ["n0001", "n0002", "n0003", "m5"]),
        # TF's slurm_cluster_resolver_test.test_expand_hostlist
        ("n1", ["n1"]),
        ("n[1,3]", ["n1", "n3"]),
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("n[1-2],m5,o[3-4,6,7-9]", ["n1", "n2", "m5", "o3", "o4", "o6", "o7", "o8", "o9"]),
        ("n[0001-0003],m5,o[009-011]", ["n0001", "n0002", "n0003", "m5", "o009", "o010", "o011"]),
        # suffixes, digits before a bracket, order kept, no dedup, blanks separate like commas
        ("n[1-2]-ib", ["n1-ib", "n2-ib"]),
        # a shared suffix, as Slurm 23.11+ prints node lists ("node[0001-0010]-int", its changelog)
        ("node[0001-0003]-int", ["node0001-int", "node0002-int", "node0003-int"]),
        ("gpu-[1-2]-x,gpu-4-x", ["gpu-1-x", "gpu-2-x", "gpu-4-x"]),
        ("rack[1-2]-n[1-2]-ib", ["rack1-n1-ib", "rack1-n2-ib", "rack2-n1-ib", "rack2-n2-ib"]),
        ("n1[0-1]", ["n10", "n11"]),
        ("node[2-3],node1", ["node2", "node3", "node1"]),
        ("a,a", ["a", "a"]),
        ("a b\tc", ["a", "b", "c"]),
        ("[1-2]", ["1", "2"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("", []),
    ],
)
def test_expand_hostlist_examples(hostlist: str, expected: list[str]) -> None:
    assert expand_hostlist(hostlist) == expected


@pytest.mark.parametrize(
    "bad",
    ["n[1-2", "n1-2]", "n[[1-2]]", "n[a-b]", "n[2-1]", "n[]", "n[1-]", "n[1,,2]", "n[-1]"],
)
def test_malformed_hostlists_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        expand_hostlist(bad)


def test_huge_hostlists_are_refused_before_expanding() -> None:
    with pytest.raises(ValueError, match="more than"):
        expand_hostlist(f"n[0-{MAX_HOSTS}]")
    with pytest.raises(ValueError, match="more than"):
        expand_hostlist("a[0-9999]b[0-9999]")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # TF's test_expand_tasks_per_node
        ("2", [2]),
        ("2,1,3", [2, 1, 3]),
        ("3(x2),2,1", [3, 3, 2, 1]),
        ("3(x2),2,11(x4)", [3, 3, 2, 11, 11, 11, 11]),
        ("13(x10)", [13] * 10),
    ],
)
def test_expand_tasks_per_node(spec: str, expected: list[int]) -> None:
    assert expand_tasks_per_node(spec) == expected


@pytest.mark.parametrize("bad", ["", "2,", "x2", "2(x)", "2(x0)", "2(2)", "-1", "2(x2"])
def test_malformed_tasks_per_node_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        expand_tasks_per_node(bad)


# --- fuzz: build a host list from a model, expand the model independently, compare ---

Range = tuple[int, int, int]  # low, high, zero-padding width
Expression = tuple[str, list[tuple[list[Range], str]]]  # head text, then (bracket group, text after it)

_literal = st.text(alphabet="abcxyz019-_.", min_size=1, max_size=4)
# host names start with a letter (and scontrol would read a leading '-' as an option)
_head = st.builds(
    lambda first, rest: first + rest, st.sampled_from("abxyz"), st.text("abcxyz019-_.", max_size=3)
)
_range = st.tuples(st.integers(0, 120), st.integers(0, 12), st.integers(1, 4)).map(
    lambda t: (t[0], t[0] + t[1], t[2])
)
_group = st.lists(_range, min_size=1, max_size=3)


def without_last_tail(expression: Expression) -> Expression:
    head, groups = expression
    return (head, [*groups[:-1], (groups[-1][0], "")]) if groups else expression


def _expressions(*, tail_after_last: bool) -> st.SearchStrategy[Expression]:
    between = st.one_of(st.just(""), _literal)
    expressions = st.tuples(_head, st.lists(st.tuples(_group, between), max_size=3))
    return expressions if tail_after_last else expressions.map(without_last_tail)


def render(expression: Expression) -> str:
    head, groups = expression
    text = head
    for group, after in groups:
        items = [
            f"{low:0{width}d}" + ("" if high == low else f"-{high:0{width}d}") for low, high, width in group
        ]
        text += "[" + ",".join(items) + "]" + after
    return text


def slurm_model(expression: Expression) -> list[str]:
    """Slurm's algorithm (hostlist.c _push_range_list), transcribed: the last group is the
    range; the prefix's groups are peeled off from the right, each one looping outside."""
    head, groups = expression
    if not groups:
        return [head]
    *prefix_groups, (last, last_after) = groups
    last_numbers = [f"{n:0{w}d}" for low, high, w in last for n in range(low, high + 1)]

    def push(pieces: list[str | list[Range]]) -> list[str]:
        open_groups = [i for i, piece in enumerate(pieces) if isinstance(piece, list)]
        if not open_groups:
            prefix = "".join(str(piece) for piece in pieces)
            return [prefix + number + last_after for number in last_numbers]
        i = open_groups[-1]
        group = pieces[i]
        assert isinstance(group, list)
        out = []
        for low, high, width in group:
            for n in range(low, high + 1):
                out += push([*pieces[:i], f"{n:0{width}d}", *pieces[i + 1 :]])
        return out

    pieces: list[str | list[Range]] = [head]
    for group, after in prefix_groups:
        pieces += [group, after]
    return push(pieces)


@given(st.lists(_expressions(tail_after_last=True), min_size=1, max_size=4))
def test_hostlist_fuzz_matches_slurms_algorithm(expressions: list[Expression]) -> None:
    hostlist = ",".join(render(e) for e in expressions)
    assert expand_hostlist(hostlist) == [host for e in expressions for host in slurm_model(e)]


@given(st.lists(st.tuples(st.integers(0, 64), st.integers(1, 5)), min_size=1, max_size=6))
def test_tasks_per_node_fuzz(items: list[tuple[int, int]]) -> None:
    spec = ",".join(f"{count}" if repeat == 1 else f"{count}(x{repeat})" for count, repeat in items)
    assert expand_tasks_per_node(spec) == [count for count, repeat in items for _ in range(repeat)]


@functools.cache
def takes_shared_suffixes(scontrol: str) -> bool:
    """Slurm 23.11 and later read text after a host list's last bracket (``node[1-2]-int``); 22.05 refuses it."""
    shown = subprocess.run([scontrol, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    version = release(shown)
    assert version is not None, shown
    return tuple(int(n) for n in version.split(".")) >= (23, 11)


@pytest.mark.slurm
@settings(max_examples=150, deadline=None)
@given(st.lists(_expressions(tail_after_last=True), min_size=1, max_size=3))
def test_hostlist_fuzz_against_scontrol(expressions: list[Expression]) -> None:
    """The real `scontrol show hostnames` (no controller needed) is the reference, suffixes included
    where that Slurm reads them."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        pytest.skip("scontrol is not installed")
    if not takes_shared_suffixes(scontrol):
        expressions = [without_last_tail(e) for e in expressions]
    hostlist = ",".join(render(e) for e in expressions)
    result = subprocess.run(
        [scontrol, "show", "hostnames", hostlist], capture_output=True, text=True, timeout=30, check=True
    )
    assert expand_hostlist(hostlist) == result.stdout.split()
