"""The canary without a network: its gates on a step's per-variant series, its record in serving.json, the
CLI's words, ``serve status`` lines, and the controller in a router rolling back on errors and promoting
on a clean run (the replicas' loads are exercised on real Triton in tests/integration/test_canary_triton.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from hpc.errors import InputError, RecordError, ServingError
from hpc.serving.canary import Seen, canary_lines, canary_settings, judge
from hpc.serving.config import parse_config
from hpc.serving.repository import Repository
from hpc.serving.restore import selected
from hpc.serving.router.core import Router
from hpc.serving.router.metrics import Series
from hpc.serving.secret import NodeSecret
from hpc.serving.state import Canary, ServingState, update_state

CANARY = Canary(old=1, new=2, steps=(5, 25, 100), step_s=60.0, max_error_rate=0.01, max_p99_ms=50.0,
                min_requests=20)


def _step(requests: int, errors: int = 0, seconds: float = 0.001) -> Series:
    series = Series()
    for i in range(requests):
        series.start()
        series.finish(seconds, i >= errors)
    return series


def test_the_gates_fail_on_errors_or_latency_once_enough_requests_and_a_quiet_step_fails_at_its_end() -> None:
    assert judge(CANARY, _step(19, errors=19), ended=False) is None  # too few to judge yet
    reason = judge(CANARY, _step(40, errors=2), ended=False)
    assert reason == "error rate 5.0% (2 of 40) of version 2 at step 1 (5 %) is above 1.0%"
    assert "p99 latency <= 100 ms of version 2" in str(judge(CANARY, _step(40, seconds=0.07), ended=False))
    assert judge(CANARY, _step(200), ended=False) is None and judge(CANARY, _step(200), ended=True) is None
    quiet = judge(CANARY, _step(3), ended=True)
    assert quiet is not None and quiet.startswith("only 3 request(s) reached version 2 at step 1")


def test_a_step_counts_only_the_requests_since_it_began() -> None:
    series = _step(100, errors=100)
    before = Seen.of(series)
    for _ in range(30):
        series.start()
        series.finish(0.001, True)
    step = Seen.of(series).since(before)
    assert (step.requests, step.errors) == (30, 0) and judge(CANARY, step, ended=True) is None


def test_a_canary_is_recorded_in_serving_json_and_read_back(tmp_path: Path) -> None:
    repo = Repository.at(tmp_path / "repo")
    written = update_state(repo, lambda s: s.with_canary("m", CANARY))
    assert ServingState.read(repo) == written and written.canaries["m"].steps == (5, 25, 100)
    assert json.loads(repo.serving_file.read_text())["canaries"]["m"]["status"] == "running"


@pytest.mark.parametrize(("change", "says"), [
    ({"steps": [25, 5, 100]}, "canaries.'m'.steps: rising percents"),
    ({"steps": [5, 25]}, "the last 100"),
    ({"new": 1}, "canaries.'m'.new: the version serving (1)"),
    ({"max_error_rate": 5}, "canaries.'m'.max_error_rate: a fraction from 0 to 1"),
    ({"step": 3}, "canaries.'m'.step: an index into steps"),
    ({"status": "maybe"}, "canaries.'m'.status: one of running, rolled-back, promoted"),
    ({"surprise": 1}, "canaries.'m'.'surprise': unknown field"),
])
def test_a_damaged_canary_record_is_refused_in_one_line(tmp_path: Path, change: dict[str, Any], says: str) -> None:
    repo = Repository.at(tmp_path / "repo")
    update_state(repo, lambda s: s.with_canary("m", CANARY))
    document = json.loads(repo.serving_file.read_text())
    document["canaries"]["m"].update(change)
    repo.serving_file.write_text(json.dumps(document))
    with pytest.raises(RecordError) as refused:
        ServingState.read(repo)
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_the_cli_words_become_the_control_body_and_bad_ones_are_one_line() -> None:
    assert canary_settings("5,25,100", "2m", "1%", None, 20) == {
        "steps": [5, 25, 100], "step_s": 120.0, "max_error_rate": 0.01, "max_p99_ms": None,
        "min_requests": 20}
    assert canary_settings("100", "90", "0.05", 250.0, 5)["step_s"] == 90.0
    assert canary_settings()["steps"] == [5, 25, 100]  # the defaults of serve canary and handoff --canary
    for args, says in ((("5,x", "60s", "1%"), "--steps"), (("5,100", "soon", "1%"), "--step-time"),
                       (("5,100", "60s", "lots"), "--max-error-rate")):
        with pytest.raises(InputError, match=says):
            canary_settings(*args)


def test_status_says_where_a_canary_is_and_why_it_was_rolled_back() -> None:
    from dataclasses import replace

    state = ServingState(canaries={"a": replace(CANARY, step=1, updated="T1"),
                                   "b": replace(CANARY, status="rolled-back", reason="error rate 50.0%", updated="T2"),
                                   "c": replace(CANARY, status="promoted", updated="T3")})
    assert canary_lines(state) == [
        "canary a v1 -> v2: step 2/3, 25 % to v2 (steps 5,25,100 % every 60 s; since T1)",
        "canary b v1 -> v2: ROLLED BACK T2, v1 serves: error rate 50.0%",
        "canary c v1 -> v2: promoted T3, v2 serves"]


# ------------------------------------------------------------------ the controller in a router


def _repo(tmp_path: Path) -> Repository:
    repo = Repository.at(tmp_path / "repo")
    for version in (1, 2):
        repo.version_dir("m", version).mkdir(parents=True)
    repo.write_config("m", 'name: "m"\nbackend: "python"\n')
    update_state(repo, lambda s: s.with_model("m", [1], "handoff"))
    return repo


def _drive(router: Router, answers: list[bool], begin: Any) -> None:
    """Run ``begin()`` in the router's loop, then feed the new version (v2) ``answers`` while the canary runs,
    into the router's series of that variant, as forward() keeps it."""
    router.canaries.tick = 0.02

    async def main() -> None:
        begin()
        task = router.canaries.tasks["m"]
        while not task.done():
            await asyncio.sleep(0.01)
            if any(v.version == 2 for v in getattr(router.splits.get("m"), "variants", ())):
                for ok in answers:
                    series = router.metrics.variant("m", "m", "2")
                    series.start()
                    series.finish(0.001, ok)
        await router.close()

    asyncio.run(main())


def _run(repo: Repository, request: dict[str, Any], answers: list[bool]) -> Router:
    """Start a canary in a router without replicas; feed the new version ``answers`` while it runs."""
    router = Router(NodeSecret("owner-key"), repo)
    router.canaries.record_new("m", request)
    _drive(router, answers, lambda: router.canaries.run("m"))
    return router


def test_a_canary_with_errors_is_rolled_back_at_its_first_step_and_says_why(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    router = _run(repo, {"version": 2, "steps": [5, 100], "step_s": 5, "min_requests": 10}, [True, False])
    state = ServingState.read(repo)
    canary = state.canaries["m"]
    assert canary.status == "rolled-back" and canary.step == 0, canary
    assert canary.reason.startswith("error rate 50.0%") and "at step 1 (5 %)" in canary.reason
    assert state.models["m"].versions == (1,) and state.splits == {} and router.splits == {}
    assert selected(parse_config(repo.read_config("m") or ""), [1, 2]) == {1}  # the new one unloaded


def test_a_clean_canary_is_promoted_after_every_step(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _run(repo, {"version": 2, "steps": [50, 100], "step_s": 0.2, "min_requests": 5}, [True])
    state = ServingState.read(repo)
    assert state.canaries["m"].status == "promoted" and state.canaries["m"].step == 1
    assert state.models["m"].versions == (2,) and state.models["m"].by == "canary" and state.splits == {}
    assert selected(parse_config(repo.read_config("m") or ""), [1, 2]) == {2}


def test_a_canary_is_refused_for_a_version_not_published_or_while_one_runs(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    router = Router(NodeSecret("owner-key"), repo)
    with pytest.raises(ServingError, match="version 3 of m is not in the repository"):
        router.canaries.record_new("m", {"version": 3})
    with pytest.raises(ServingError, match="nope must serve exactly one version"):
        router.canaries.record_new("nope", {"version": 2})
    with pytest.raises(InputError, match="steps: rising percents"):
        router.canaries.record_new("m", {"version": 2, "steps": [50]})
    assert "m" not in ServingState.read(repo).canaries


def test_a_router_that_starts_again_resumes_a_running_canary_at_its_recorded_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import replace

    repo = _repo(tmp_path)
    update_state(repo, lambda s: s.with_canary("m", replace(CANARY, steps=(10, 50, 100), step=2, step_s=0.2,
                                                            min_requests=5)))
    router = Router(NodeSecret("owner-key"), repo)
    _drive(router, [True], router.canaries.resume)  # what run.serve does once the router listens
    assert ServingState.read(repo).canaries["m"].status == "promoted"
    log = capsys.readouterr().err
    assert "canary m: resumed at step 3/3 after a restart" in log and "step 1/3" not in log and "step 3/3, 100 %" in log


def test_a_canary_starts_from_the_hand_off_s_hold_split_but_not_over_another_split(tmp_path: Path) -> None:
    from hpc.serving.state import Split, Variant

    repo = _repo(tmp_path)
    router = Router(NodeSecret("owner-key"), repo)
    router.set_split("m", Split((Variant("m", 1, 100),)))  # what hand-off --canary sets before loading
    assert router.canaries.record_new("m", {"version": 2}).status == "running"
    update_state(repo, lambda s: s.with_canary("m", CANARY).with_model("m", [1], "handoff"))
    router.set_split("m", Split((Variant("m", 1, 50), Variant("other", None, 50))))
    with pytest.raises(ServingError, match="m carries a split already"):
        router.canaries.record_new("m", {"version": 2})
