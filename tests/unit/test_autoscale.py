"""The router's autoscaler without a network: its decision (pure: the needs over the up and down delays,
the held request, the quota's refusal), its loop's step on a real router and replica controller (the
log line with its inputs, the count it sets), the held request, ``serve status``'s lines and the
``serving.autoscale`` site key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hpc.errors import HpcTfError, QuotaRefused
from hpc.serving.repository import Repository
from hpc.serving.router.autoscale import Autoscaler, decide, need
from hpc.serving.router.core import NoReplica, Route, Router
from hpc.serving.router.launchers import Managed, Seen
from hpc.serving.router.pool import Replica
from hpc.serving.router.replicas import ReplicaController
from hpc.serving.router.service import router_lines
from hpc.serving.secret import NodeSecret
from hpc.serving.state import ServingState
from hpc.site.model import Autoscale

FAST = Autoscale(min_replicas=1, max_replicas=3, target_in_flight=4, window=2, up_delay=2, down_delay=10)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def test_the_need_is_the_average_over_the_target_with_a_tolerance_clamped_to_min_and_max() -> None:
    assert need(FAST, 0.0, 0) == 1  # no scale to zero: min_replicas
    assert need(FAST, 4.3, 50) == 1  # within 10 % of one replica's target
    assert need(FAST, 5.0, 50) == 2
    assert need(FAST, 100.0, 50) == 3  # max_replicas
    zero = FAST.model_copy(update={"scale_to_zero": True})
    assert need(zero, 0.0, 0) == 0
    assert need(zero, 0.0, 1) == 1  # one request in the window: not idle, although none is in flight now


def _needs(*spans: tuple[float, float, int]) -> list[tuple[float, int]]:
    """Needs every 0.5 s: ``(from, to, need)``."""
    return [(t / 2, n) for start, end, n in spans for t in range(int(start * 2), int(end * 2))]


def test_scale_up_needs_the_load_for_the_whole_up_delay_and_goes_to_the_lowest_need_seen() -> None:
    burst = _needs((0, 9, 1), (9, 10, 3))  # 1 s of load: shorter than the 2 s up delay
    assert decide(FAST, burst, 0, 10, 1, held=False).wanted == 1
    sustained = _needs((0, 7, 1), (7, 8, 3), (8, 10, 2))
    decision = decide(FAST, sustained, 0, 10, 1, held=False)
    assert decision.wanted == 2 and decision.why.startswith("up:")
    assert decide(FAST, _needs((0, 1, 3)), 0, 1, 1, held=False).wanted == 1  # not seen 2 s yet


def test_scale_down_waits_the_whole_down_delay_and_goes_to_the_highest_need_seen() -> None:
    assert decide(FAST, _needs((0, 5, 3), (5, 14, 1)), 0, 14, 3, held=False).wanted == 3
    assert decide(FAST, _needs((0, 5, 3), (5, 6, 2), (6, 15, 1)), 0, 15, 3, held=False).wanted == 2
    decision = decide(FAST, _needs((0, 5, 3), (5, 17, 1)), 0, 17, 3, held=False)
    assert decision.wanted == 1 and decision.why.startswith("down:")


def test_a_held_request_with_no_replica_wanted_starts_one_at_once() -> None:
    zero = FAST.model_copy(update={"scale_to_zero": True})
    decision = decide(zero, _needs((0, 0.5, 1)), 0, 0.5, 0, held=True)
    assert decision.wanted == 1 and "held" in decision.why
    assert decide(zero, _needs((0, 0.5, 1)), 0, 0.5, 1, held=True).wanted == 1  # one is coming: no second


def test_a_count_the_quota_refused_is_not_asked_for_again_while_the_need_stays() -> None:
    decision = decide(FAST, _needs((0, 10, 3)), 0, 10, 3, held=False, refused_at=3)
    assert decision.wanted == 3 and decision.why == "steady"
    more = FAST.model_copy(update={"max_replicas": 5})
    decision = decide(more, _needs((0, 10, 5)), 0, 10, 3, held=False, refused_at=3)
    assert decision.wanted == 3 and "refused 3" in decision.why


class QuotaLauncher:
    """Starts ``room`` replicas, then answers as the quota preflight does when the account's GPUs are in use."""

    def __init__(self, room: int) -> None:
        self.room, self.started = room, 0

    def start(self, name: str) -> tuple[str | None, int | None]:
        if self.started >= self.room:
            raise QuotaRefused("GPU quota: account lab GrpTRES gres/gpu=2 is in use (2 of 2 GPUs held)")
        self.started += 1
        return str(100 + self.started), None

    def poll(self, replicas: list[Managed]) -> dict[str, Seen]:
        return {m.name: Seen(True, "PENDING") for m in replicas}

    def stop(self, replica: Managed) -> None:
        pass


def _scaler(tmp_path: Path, launcher: object, options: Autoscale = FAST) -> tuple[Router, Autoscaler]:
    repo = Repository.at(tmp_path / "repo")
    router = Router(NodeSecret("k"), repo)
    controller = ReplicaController(router, repo, launcher)  # type: ignore[arg-type]
    return router, Autoscaler(router, controller, options)


def test_each_step_logs_its_inputs_scales_the_controller_and_records_the_count(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    router, scaler = _scaler(tmp_path, QuotaLauncher(room=5))
    scaler.controller.scale(1)
    series = router.metrics.variant("a", "a", "-")
    for _ in range(10):
        series.start()  # 10 requests in flight: 3 replicas at a target of 4
    now = scaler.since
    for tick in range(6):
        decision = scaler.step(now + tick * 0.5)
        if decision.wanted != scaler.controller.wanted:
            scaler.controller.scale(decision.wanted)  # as its loop does
    assert scaler.controller.wanted == 3
    state = ServingState.read(scaler.controller.repo).service
    assert state is not None and state.replicas == 3  # a restarted router keeps it
    line = [x for x in capsys.readouterr().err.splitlines() if "autoscale:" in x][-1]
    assert "average in flight 10.00 over 2 s" in line and "0 serving + 0 coming" in line, line
    assert "1 wanted before -> 3: up:" in line, line


def test_serve_down_s_count_of_zero_stands(tmp_path: Path) -> None:
    router, scaler = _scaler(tmp_path, QuotaLauncher(room=5))
    scaler.controller.scale(0, record=False)
    router.metrics.variant("a", "a", "-").start()  # a request arriving while the service stops
    for tick in range(6):
        assert scaler.step(scaler.since + tick).why == "the service stops"
    assert scaler.controller.wanted == 0


def test_a_scale_up_the_quota_refuses_is_not_retried_and_serve_status_names_the_limit(tmp_path: Path) -> None:
    router, scaler = _scaler(tmp_path, QuotaLauncher(room=2))
    scaler.controller.scale(3)
    asyncio.run(scaler.controller.step())
    asyncio.run(scaler.controller.step())  # the same count again: no second try
    assert scaler.controller.launcher.started == 2  # type: ignore[attr-defined]
    assert len(scaler.controller.managed) == 2  # both coming (pending): counted, not missing
    lines = router_lines(router.state())
    assert "  autoscale: 1-3 replica(s), target 4 in flight each; now 0 in flight on average, - wanted: starting" \
        in lines, lines
    assert any(x.startswith("  scale-up to 3 stopped by the GPU quota: GPU quota: account lab GrpTRES gres/gpu=2")
               for x in lines), lines


def test_a_held_request_waits_for_a_replica_and_gets_a_clear_refusal_past_the_hold(tmp_path: Path) -> None:
    router, _ = _scaler(tmp_path, QuotaLauncher(room=5), FAST.model_copy(update={"hold": 0.3}))

    async def send(replica: Replica) -> tuple[str, bool]:
        return replica.name, True

    async def admitted_later() -> str:
        async def admit() -> None:
            await asyncio.sleep(0.1)
            router.pool.add(Replica("r1", "127.0.0.1", 1, 2, healthy=True))
        adding = asyncio.create_task(admit())
        answer = await router.forward(Route("a", "a", ""), send)
        await adding
        return answer

    assert asyncio.run(admitted_later()) == "r1"
    router.pool.drain("r1")
    with pytest.raises(NoReplica, match=r"no replica was ready within the hold of 0.3 s \(serving.autoscale.hold\)"):
        asyncio.run(router.forward(Route("a", "a", ""), send))


def test_serving_autoscale_refuses_a_minimum_above_the_maximum_in_one_line() -> None:
    from hpc.site.load import load_site

    with pytest.raises(HpcTfError) as err:
        load_site("local", ["serving.autoscale.min_replicas=5", "serving.autoscale.max_replicas=2"])
    assert "min_replicas (5) is above max_replicas (2)" in err.value.message and "\n" not in err.value.message
    loaded = load_site("local", ["serving.autoscale.max_replicas=2"]).config.serving.autoscale
    assert loaded is not None and loaded.max_replicas == 2 and loaded.down_delay == 600
