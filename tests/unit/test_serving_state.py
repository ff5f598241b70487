"""The recorded serving state (serving.json): round trip, atomic owner-only writes, and every damaged or
hostile file refused as a whole in one line — by ``serve up`` before anything starts, and by the reader."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpc.errors import InputError, RecordError
from hpc.serving.config import parse_config, render_config
from hpc.serving.names import named_model
from hpc.serving.repository import Repository
from hpc.serving.restore import pin, selected
from hpc.serving.state import (
    ServingState,
    Split,
    Variant,
    split_from_dict,
    split_to_dict,
    update_state,
    write_state,
)
from tests.unit.test_loading import hpc_tf, one_error_line

GOOD: dict[str, Any] = {
    "v": 1,
    "models": {"quickstart": {"versions": [1], "updated": "2026-12-05T14:00:00+00:00", "by": "handoff"}},
    "splits": {"public": {"variants": [{"model": "quickstart", "version": 1, "weight": 10},
                                       {"model": "other", "version": None, "weight": 90}],
                          "sticky_header": "x-user"}},
}


def plant(tmp_path: Path, document: object) -> Repository:
    repo = Repository.at(tmp_path / "repo")
    repo.state_dir.mkdir(parents=True)
    repo.serving_file.write_text(json.dumps(document))
    return repo


def test_a_missing_file_records_nothing(tmp_path: Path) -> None:
    state = ServingState.read(Repository.at(tmp_path / "repo"))
    assert state.models == {} and state.splits == {}


def test_what_is_written_reads_back_and_only_its_owner_may_write_it(tmp_path: Path) -> None:
    repo = plant(tmp_path, GOOD)
    state = ServingState.read(repo)
    assert state.models["quickstart"].versions == (1,) and state.models["quickstart"].by == "handoff"
    assert state.splits["public"] == Split((Variant("quickstart", 1, 10), Variant("other", None, 90)), "x-user")
    assert state.to_dict() == GOOD
    later = update_state(repo, lambda s: s.with_model("quickstart", [2], "rollback").with_model("mlp", [3, 1], "x"))
    assert ServingState.read(repo) == later
    assert later.models["mlp"].versions == (1, 3) and later.models["quickstart"].by == "rollback"
    assert repo.serving_file.stat().st_mode & 0o022 == 0
    assert [p.name for p in repo.state_dir.iterdir() if p.name.endswith(".tmp")] == []  # temp file renamed
    write_state(repo, later.with_model("mlp", [], "rollback"))  # no versions: no longer recorded
    assert set(ServingState.read(repo).models) == {"quickstart"}


def test_a_starting_node_loads_the_recorded_versions_and_those_its_splits_name(tmp_path: Path) -> None:
    state = ServingState.read(plant(tmp_path, GOOD))
    assert state.to_load() == {"quickstart": (1,)}  # 'other' has no version of its own recorded
    canary = Split((Variant("quickstart", 1, 95), Variant("quickstart", 2, 5), Variant("b", 4, 1)))
    assert state.with_split("public", canary).to_load() == {"b": (4,), "quickstart": (1, 2)}


def test_a_split_s_json_form_round_trips_with_the_file_s_checks() -> None:
    data = GOOD["splits"]["public"]
    split = split_from_dict("public", {**data, "sticky_header": "X-User"})
    assert split.sticky_header == "x-user" and split_to_dict(split) == data
    with pytest.raises(InputError, match=r"^split public.variants\[1\].weight: a weight is an integer"):
        split_from_dict("public", {"variants": [data["variants"][0], {**data["variants"][1], "weight": "90"}]})
    with pytest.raises(InputError, match=r"^split 'a/b': not a model name"):
        split_from_dict("a/b", data)


def test_a_split_that_cannot_serve_is_one_line() -> None:
    with pytest.raises(InputError, match=r"^split p.variants: the weights add up to 0"):
        ServingState().with_split("p", Split((Variant("a", None, 0),)))
    with pytest.raises(InputError, match="model: not a model name"):
        ServingState().with_split("p", Split((Variant("../a", None, 1),)))
    with pytest.raises(InputError, match="sticky_header"):
        ServingState().with_split("p", Split((Variant("a", 1, 1),), "X User"))


def _edit(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    document = json.loads(json.dumps(GOOD))
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


HOSTILE = {
    "traversal": (_edit(("models", "../etc"), {"versions": [1], "updated": "", "by": "handoff"}),
                  "models.'../etc': not a model name"),
    "version as text": (_edit(("models", "quickstart", "versions"), ["1"]), "a version is a positive integer"),
    "version true": (_edit(("models", "quickstart", "versions"), [True]), "a version is a positive integer"),
    "version 0": (_edit(("models", "quickstart", "versions"), [0]), "a version is a positive integer"),
    "no versions": (_edit(("models", "quickstart", "versions"), []), "not a list of version numbers"),
    "models a list": (_edit(("models",), ["quickstart"]), "models: not a JSON object"),
    "unknown field": (_edit(("models", "quickstart", "load"), "/bin/sh"), "'load': unknown field"),
    "by with a newline": (_edit(("models", "quickstart", "by"), "handoff\nx"), ".by: 'handoff\\nx' is not"),
    "variant model": (_edit(("splits", "public", "variants", 0, "model"), "a/b"), "variants[0].model"),
    "weight negative": (_edit(("splits", "public", "variants", 0, "weight"), -1), "a weight is an integer"),
    "other format": (_edit(("v",), 2), "is not 1, the only format"),
    "not JSON": (None, "not valid JSON"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_a_damaged_or_hostile_state_is_refused_as_a_whole_in_one_line(tmp_path: Path, case: str) -> None:
    document, expected = HOSTILE[case]
    repo = plant(tmp_path, document)
    if document is None:
        repo.serving_file.write_text('{"v": 1, "models": ')
    with pytest.raises(RecordError) as caught:
        ServingState.read(repo)
    assert "the recorded serving state" in caught.value.message and expected in caught.value.message
    assert "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("change", "expected"),
    [(lambda path: path.chmod(0o666), "is writable by others (mode 0666): hpc-tf does not trust it"),
     (lambda path: os.chown(path, 54321, 54321), "is owned by uid 54321, not by you: hpc-tf does not trust it")],
)
def test_a_state_someone_else_could_have_written_is_not_trusted(tmp_path: Path, change: Any, expected: str) -> None:
    if os.geteuid() != 0 and "uid" in expected:
        pytest.fail("needs root, to give the file to another uid (tests/run runs as root)")
    repo = plant(tmp_path, GOOD)
    change(repo.serving_file)
    with pytest.raises(RecordError) as caught:
        ServingState.read(repo)
    assert "the recorded serving state" in caught.value.message and expected in caught.value.message


@pytest.mark.parametrize("where", ["--local", "--slurm"])
def test_serve_up_refuses_a_hostile_state_before_it_starts_anything(tmp_path: Path, where: str) -> None:
    repo = plant(tmp_path, HOSTILE["traversal"][0])
    line = one_error_line(hpc_tf("serve", "up", where, "--site", "local", "--repository", repo.root))
    assert "the recorded serving state" in line and "models.'../etc': not a model name" in line
    assert not repo.endpoint_file.exists() and not repo.server_dir.exists()  # no node, nothing loaded


def test_serve_status_without_a_node_shows_what_is_recorded(tmp_path: Path) -> None:
    repo = plant(tmp_path, GOOD)
    (repo.root / "quickstart" / "1").mkdir(parents=True)
    result = hpc_tf("serve", "status", "--site", "local", "--repository", repo.root)
    assert result.returncode == 0, result.stderr
    assert "no serving node runs for" in result.stderr and "hpc-tf serve up" in result.stderr
    assert "  quickstart  v1  by handoff 2026-12-05T14:00:00+00:00  NOT SERVED: no serving node answers" in \
        result.stdout.splitlines()
    listed = json.loads(hpc_tf("serve", "status", "--json", "--site", "local", "--repository", repo.root).stdout)
    assert [(r["model"], r["version"], r["state"]) for r in listed["recorded"]] == [("quickstart", 1, "NOT SERVED")]
    (repo.root / "quickstart" / "1").rmdir()
    listed = json.loads(hpc_tf("serve", "status", "--json", "--site", "local", "--repository", repo.root).stdout)
    assert listed["recorded"][0]["state"] == "MISSING"


CONFIG = 'name: "m"\nbackend: "python"\nversion_policy { latest { num_versions: 1 } }\n'


@pytest.mark.parametrize(("versions", "rewritten"), [((3,), False), ((2,), True), ((1, 3), True)])
def test_pin_selects_exactly_the_recorded_versions(tmp_path: Path, versions: tuple[int, ...], rewritten: bool) -> None:
    repo = Repository.at(tmp_path / "repo")
    for version in (1, 2, 3):
        (repo.root / "m" / str(version)).mkdir(parents=True)
    repo.write_config("m", CONFIG)
    before = os.stat(repo.config_file("m")).st_ino
    pin(repo, "m", versions)
    cfg = parse_config(repo.read_config("m") or "")
    assert selected(cfg, [1, 2, 3]) == set(versions)
    assert (os.stat(repo.config_file("m")).st_ino != before) == rewritten  # untouched when it already selects them
    assert cfg.name == "m" and cfg.backend == "python"
    if rewritten:
        assert render_config(cfg) == repo.read_config("m")


def _mostly(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten: most documents get past their first field."""
    return st.integers(0, 9).flatmap(lambda n: hostile if n == 0 else valid)


_NAMES = _mostly(st.sampled_from(["quickstart", "m.2", "M_1-", "b"]),
                 st.sampled_from(["../x", "a/b", "", ".hpc-tf", "x\n", "a" * 65]))
_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 2**64) | st.floats(allow_nan=False) |
                       st.sampled_from(["handoff", "x-user", "X User", "", "1", "2026-12-05"]),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
                       max_leaves=8)
_VERSION = _mostly(st.integers(1, 5), st.integers(-1, 0) | st.booleans() | _VALUES)
_MODEL = _mostly(st.fixed_dictionaries({"versions": st.lists(_VERSION, min_size=1, max_size=3, unique_by=repr),
                                        "by": _mostly(st.sampled_from(["handoff", "rollback"]),
                                                      st.sampled_from(["Hand off", 7, "x\n"])),
                                        "updated": _mostly(st.just("2026-12-05T14:00:00+00:00"), _VALUES)}),
                 _VALUES)
_VARIANT = st.fixed_dictionaries({"model": _NAMES, "version": _mostly(st.none() | st.integers(1, 3), _VALUES),
                                  "weight": _mostly(st.integers(1, 100), st.integers(-1, 0) | _VALUES)})
_SPLIT = _mostly(st.fixed_dictionaries({"variants": st.lists(_VARIANT, min_size=1, max_size=3),
                                        "sticky_header": _mostly(st.none() | st.just("X-User"), _NAMES)}),
                 _VALUES)
_DOCUMENT = st.fixed_dictionaries({"v": _mostly(st.just(1), st.sampled_from([2, "1", None])),
                                   "models": st.dictionaries(_NAMES, _MODEL, max_size=3),
                                   "splits": st.dictionaries(_NAMES, _SPLIT, max_size=2)})


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=_DOCUMENT)
def test_any_document_is_read_whole_or_refused_in_one_line(tmp_path: Path, document: dict[str, Any]) -> None:
    """Either every model and split name is a model name, every version a positive integer and the state
    writes back to a file that reads the same, or the whole file is refused in one line."""
    repo = Repository.at(tmp_path / "repo")
    repo.state_dir.mkdir(parents=True, exist_ok=True)
    repo.serving_file.write_text(json.dumps(document))
    try:
        state = ServingState.read(repo)
    except RecordError as err:
        assert "\n" not in err.message and len(err.message) < 600
        return
    names = [*state.models, *state.splits, *(v.model for s in state.splits.values() for v in s.variants)]
    assert all(named_model(name) for name in names)
    assert all(v > 0 for versions in state.to_load().values() for v in versions)
    write_state(repo, state)
    assert ServingState.read(repo) == state


def test_the_replica_count_is_recorded_and_read_back(tmp_path: Path) -> None:
    repo = plant(tmp_path, GOOD)
    assert ServingState.read(repo).service is None  # nothing recorded: the router manages no replicas
    update_state(repo, lambda s: s.with_service(3))
    assert ServingState.read(repo).to_dict()["service"] == {"replicas": 3}
    assert json.loads(repo.serving_file.read_text())["models"] == GOOD["models"]  # the rest kept


@pytest.mark.parametrize("bad", [-1, 65, True, "3", None])
def test_a_replica_count_out_of_range_is_one_line(tmp_path: Path, bad: object) -> None:
    with pytest.raises(RecordError, match=r"service\.replicas: the number of replicas is an integer from 0 to 64"):
        ServingState.read(plant(tmp_path, {**GOOD, "service": {"replicas": bad}}))
    if isinstance(bad, int):
        with pytest.raises(InputError, match=r"service\.replicas: the number of replicas"):
            ServingState().with_service(bad)
