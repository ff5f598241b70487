"""Parameter expansion: deterministic order, stable ids and keys, seeded random samples."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hpc.campaign.expand import default_args, expand, format_value, task_key
from hpc.campaign.model import Parameters


def params(data: dict[str, Any]) -> Parameters:
    return Parameters.model_validate(data)


def test_a_grid_varies_its_last_key_fastest() -> None:
    tasks = expand(params({"grid": {"lr": [0.1, 0.01, 0.001], "seed": [1, 2, 3, 4]}}))
    assert [t.id for t in tasks] == list(range(12))
    assert [dict(t.params) for t in tasks[:5]] == [
        {"lr": 0.1, "seed": 1}, {"lr": 0.1, "seed": 2}, {"lr": 0.1, "seed": 3}, {"lr": 0.1, "seed": 4},
        {"lr": 0.01, "seed": 1},
    ]
    assert dict(tasks[11].params) == {"lr": 0.001, "seed": 4}


def test_expanding_again_gives_the_same_ids_params_and_keys() -> None:
    spec = {"list": [{"opt": "adam"}, {"opt": "sgd"}], "zip": {"a": [1, 2], "b": ["x", "y"]},
            "grid": {"lr": [0.1, 0.2]}, "random": {"samples": 3, "seed": 7, "space": {"wd": {"uniform": [0, 1]}}}}
    first, second = expand(params(spec)), expand(params(dict(spec)))
    assert first == second
    assert len(first) == 2 * 2 * 2 * 3
    # list x zip x grid x random, the last block fastest
    assert [(t.params["opt"], t.params["a"], t.params["lr"]) for t in first[:4]] == [("adam", 1, 0.1)] * 3 + [
        ("adam", 1, 0.2)]
    assert list(first[0].params) == ["opt", "a", "b", "lr", "wd"]


def test_keys_depend_on_values_not_position() -> None:
    a = expand(params({"grid": {"x": [1, 2]}}))
    b = expand(params({"list": [{"x": 2}, {"x": 1}]}))
    assert a[0].key == b[1].key and a[1].key == b[0].key and a[0].key != a[1].key
    assert task_key({"x": 1, "y": 2}) == task_key({"y": 2, "x": 1})


def test_zip_takes_lists_together() -> None:
    tasks = expand(params({"zip": {"lr": [0.1, 0.2, 0.3], "bs": [8, 16, 32]}}))
    assert [tuple(t.params.values()) for t in tasks] == [(0.1, 8), (0.2, 16), (0.3, 32)]


def test_random_samples_are_pinned_by_their_seed() -> None:
    space = {"lr": {"log_uniform": [1e-4, 1e-1]}, "units": {"randint": [16, 128]}, "opt": {"choice": ["a", "b"]},
             "drop": {"uniform": [0.0, 0.5]}}
    tasks = expand(params({"random": {"samples": 50, "seed": 3, "space": space}}))
    assert tasks == expand(params({"random": {"samples": 50, "seed": 3, "space": space}}))
    assert tasks != expand(params({"random": {"samples": 50, "seed": 4, "space": space}}))
    for t in tasks:
        assert 1e-4 <= t.params["lr"] <= 1e-1 and 16 <= t.params["units"] <= 128  # type: ignore[operator]
        assert t.params["opt"] in ("a", "b") and 0.0 <= t.params["drop"] <= 0.5  # type: ignore[operator]
        assert isinstance(t.params["units"], int)
        assert t.params["lr"] == float(f"{t.params['lr']:.6g}")  # six significant digits
    # the exact values of seed 3: a change here changes every existing campaign's tasks
    assert dict(tasks[0].params) == {"lr": 0.00051748, "units": 77, "opt": "a", "drop": 0.30196}
    assert {t.params["opt"] for t in tasks} == {"a", "b"}
    assert len({t.params["units"] for t in tasks}) > 20


def test_no_parameters_is_one_task() -> None:
    (task,) = expand(None)
    assert task.id == 0 and dict(task.params) == {}


def test_values_read_well_on_a_command_line() -> None:
    assert [format_value(v) for v in (True, False, 3, 0.001, 1e-05, 2.5e10, "a b")] == [
        "true", "false", "3", "0.001", "1e-05", "25000000000.0", "a b"]
    assert default_args({"batch_size": 64, "lr": 0.1}) == ["--batch-size", "64", "--lr", "0.1"]


names = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
values = st.lists(st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), names),
                  min_size=1, max_size=4)


@given(st.dictionaries(names, values, min_size=1, max_size=3))
def test_a_grid_has_one_task_per_combination(grid: dict[str, list[Any]]) -> None:
    tasks = expand(params({"grid": grid}))
    assert len(tasks) == math.prod(len(v) for v in grid.values())
    assert [t.id for t in tasks] == list(range(len(tasks)))
    assert all(list(t.params) == list(grid) for t in tasks)
    assert tasks == expand(params({"grid": grid}))
