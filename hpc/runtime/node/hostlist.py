"""Slurm's compact host and task-count lists, expanded in Slurm's order.

Host lists (``SLURM_STEP_NODELIST``), the same results as ``scontrol show hostnames``:

    >>> expand_hostlist("gpu-[01-02,10],cpu07")
    ['gpu-01', 'gpu-02', 'gpu-10', 'cpu07']
    >>> expand_hostlist("rack[1-2]-n[1-2]")
    ['rack1-n1', 'rack1-n2', 'rack2-n1', 'rack2-n2']
    >>> expand_hostlist("n[9-10]")
    ['n9', 'n10']
    >>> expand_hostlist("n[0001-0003],m5")
    ['n0001', 'n0002', 'n0003', 'm5']

Commas (and blanks) outside brackets separate hosts; inside brackets they separate
ranges. A range keeps the zero padding of its lower bound (``[08-10]`` gives 08, 09,
10). Several bracket groups multiply out in Slurm's own order (see
``_expand_expression``). Order is kept and nothing is sorted or deduplicated: position
i is the step's node i. Text after the last bracket (``n[1-2]-ib``) is accepted,
although Slurm 22.05 refuses it.

Task counts (``SLURM_STEP_TASKS_PER_NODE``):

    >>> expand_tasks_per_node("3(x2),2,1")
    [3, 3, 2, 1]

Malformed input raises ValueError; the caller names the variable it came from.
"""

from __future__ import annotations

import itertools
import re

# Slurm refuses lists this long too; it also keeps "n[1-999999999]" from eating memory.
MAX_HOSTS = 1 << 20

_SEPARATORS = ", \t\n"
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_TASK_COUNT = re.compile(r"(\d+)(?:\(x(\d+)\))?")


def expand_hostlist(hostlist: str) -> list[str]:
    """Every host name in ``hostlist``, in Slurm's order."""
    hosts: list[str] = []
    for expression in _split_top_level(hostlist):
        hosts.extend(_expand_expression(expression, budget=MAX_HOSTS - len(hosts)))
    return hosts


def expand_tasks_per_node(spec: str) -> list[int]:
    """``3(x2),2,1`` → ``[3, 3, 2, 1]``: one task count per node, in node order."""
    counts: list[int] = []
    for item in spec.split(","):
        match = _TASK_COUNT.fullmatch(item.strip())
        if match is None:
            raise ValueError(f"invalid tasks-per-node item {item!r} in {spec!r} (expected N or N(xM))")
        count, repeat = int(match.group(1)), int(match.group(2) or 1)
        if repeat == 0 or len(counts) + repeat > MAX_HOSTS:
            raise ValueError(f"invalid repeat count in {item!r}")
        counts.extend([count] * repeat)
    return counts


def _split_top_level(hostlist: str) -> list[str]:
    """Split at separators that are not inside brackets; empty pieces are dropped."""
    pieces: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(hostlist):
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested '[' in hostlist {hostlist!r}")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in hostlist {hostlist!r}")
        elif char in _SEPARATORS and depth == 0:
            pieces.append(hostlist[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unbalanced '[' in hostlist {hostlist!r}")
    pieces.append(hostlist[start:])
    return [piece for piece in pieces if piece]


def _expand_expression(expression: str, *, budget: int) -> list[str]:
    """One host expression such as ``rack[1-2]-n[01-03]``: literal text and bracket groups."""
    literals: list[str] = []  # text before group 1, between groups, after the last group
    groups: list[list[str]] = []
    rest = expression
    while (open_at := rest.find("[")) >= 0:
        close_at = rest.index("]", open_at)
        literals.append(rest[:open_at])
        groups.append(_expand_group(rest[open_at + 1 : close_at], expression))
        rest = rest[close_at + 1 :]
    literals.append(rest)
    total = 1
    for numbers in groups:
        total *= len(numbers)
        if total > budget:
            raise ValueError(f"hostlist {expression!r} expands to more than {MAX_HOSTS} hosts")
    # Slurm's order (hostlist.c, _push_range_list): the last group varies fastest; the
    # others, peeled off from the right, nest outside it, so group k-1 varies slowest:
    # a[1-2]b[3-4]c[5-6] → a1b3c5 a1b3c6 a2b3c5 a2b3c6 a1b4c5 ...
    order = [*range(len(groups) - 2, -1, -1), len(groups) - 1] if groups else []
    names = []
    for combination in itertools.product(*(groups[index] for index in order)):
        # same lengths by construction; no strict=: this runs on the user's Python, maybe 3.9
        chosen = dict(zip(order, combination))  # noqa: B905
        names.append(literals[0] + "".join(chosen[i] + literals[i + 1] for i in range(len(groups))))
    return names


def _expand_group(group: str, expression: str) -> list[str]:
    """The inside of one bracket, e.g. ``01-02,10`` → ``['01', '02', '10']``."""
    numbers: list[str] = []
    for item in group.split(","):
        match = _RANGE.fullmatch(item)
        if match is None:
            raise ValueError(f"invalid range {item!r} in hostlist {expression!r}")
        low_text, high_text = match.group(1), match.group(2)
        low = int(low_text)
        high = low if high_text is None else int(high_text)
        if high < low:
            raise ValueError(f"range {item!r} in hostlist {expression!r} goes backwards")
        if len(numbers) + high - low + 1 > MAX_HOSTS:
            raise ValueError(f"hostlist {expression!r} expands to more than {MAX_HOSTS} hosts")
        width = len(low_text)
        numbers.extend(f"{value:0{width}d}" for value in range(low, high + 1))
    return numbers
