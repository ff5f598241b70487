"""The router's autoscaler (``serving.autoscale`` in the site): scales the replica controller's count on
the requests in flight through the router, within min/max replicas and within the GPU quota.

Twice a second it samples the requests in flight (on the replicas, and held for want of one) and how
many arrived; over ``window`` seconds that is a moving average, and the replicas it needs are
``ceil(average / target_in_flight - 0.1)`` (10 % tolerance, as PAI-EAS: 2.1 in flight at a target of 2
is not a second replica), clamped to min/max. As Kubernetes' stabilisation windows, it scales up to the
*lowest* need of the last ``up_delay`` seconds (the load stayed that high the whole delay) and down to
the *highest* need of the last ``down_delay`` seconds; scale-down drains first (the controller's job).
With ``scale_to_zero``, a need of 0 means no request arrived in the window; after ``down_delay`` of that
the count goes to 0, and a request arriving then is held (:meth:`Autoscaler.hold`) while one replica
starts, for at most ``hold`` seconds (then HTTP 503 / gRPC UNAVAILABLE, saying so).

The count is the controller's (``serve scale``'s): replicas pending in the queue or starting count as
coming, so a slow start is not answered by more starts. A scale-up the quota preflight refuses is recorded
by the controller, which does not retry it until the count changes; the autoscaler does not ask for that
count again while the need stays there, and ``serve status`` names the limit. ``serve scale N`` sets the
count until the autoscaler's next decision; ``serve down`` (a count not recorded) stops it.

Defaults (../RESEARCH.md): target 2 in flight per replica (Ray Serve's ``target_ongoing_requests``);
window 30 s (Ray's look-back); up delay 30 s (Ray; SuperSONIC 60 s): a replica job's queue wait and start
take longer than a burst; down delay 600 s (Ray, SuperSONIC; PAI 300 s): a replica given back too soon
costs a queue wait to get again; hold 300 s (SuperSONIC's scale-from-zero wait); min 1 / max 4 replicas,
no scale to zero (Ray, KServe) unless asked.

Every decision is one line on the router's stderr with its inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from hpc.errors import HpcTfError
from hpc.serving.router.core import NoReplica, Router
from hpc.serving.router.replicas import ReplicaController
from hpc.site.model import Autoscale

TICK_S = 0.5
TOLERANCE = 0.1


def log(message: str) -> None:
    print(f"hpc-tf router: autoscale: {message}", file=sys.stderr, flush=True)


def need(options: Autoscale, average: float, arrived: int) -> int:
    """Replicas for ``average`` requests in flight over the window, in which ``arrived`` requests came."""
    if options.scale_to_zero and arrived == 0 and average == 0:
        return 0
    wanted = math.ceil(average / options.target_in_flight - TOLERANCE)
    return max(options.min_replicas, min(options.max_replicas, wanted))


@dataclass(frozen=True)
class Decision:
    wanted: int  # == current: no change
    why: str


def decide(options: Autoscale, needs: Sequence[tuple[float, int]], since: float, now: float, current: int,
           held: bool, refused_at: int | None = None) -> Decision:
    """What to scale to, from the needs computed so far (``(time, need)``, oldest first, since ``since``):
    up to the lowest need of the last ``up_delay`` s, down to the highest of the last ``down_delay`` s (each
    only once the autoscaler has seen that long). ``held``: requests wait with no replica serving.
    ``refused_at``: the count the quota preflight refused (not asked for again while the need stays there)."""
    if held and current == 0:
        return Decision(1, "a request is held and no replica is wanted: one starts now")
    up = _over(needs, since, now, options.up_delay, min)
    down = _over(needs, since, now, options.down_delay, max)
    if up is not None and up > current:
        if refused_at is not None and up >= refused_at:
            return Decision(current, f"{up} needed, but the quota preflight refused {refused_at}: not asked "
                                     "again until the need drops below it")
        return Decision(up, f"up: at least {up} needed for the whole up delay ({options.up_delay:g} s)")
    if down is not None and down < current:
        return Decision(down, f"down: at most {down} needed for the whole down delay ({options.down_delay:g} s)")
    return Decision(current, "steady")


def _over(needs: Sequence[tuple[float, int]], since: float, now: float, delay: float,
          pick: Callable[[list[int]], int]) -> int | None:
    """``pick`` of the needs of the last ``delay`` seconds; None before the autoscaler has seen that long."""
    if now - since < delay or not needs:
        return None
    recent = [n for at, n in needs if at >= now - delay] or [needs[-1][1]]
    return pick(recent)


class Autoscaler:
    """The loop in the router's process; attaches itself to the router (its hold hook and its state)."""

    def __init__(self, router: Router, controller: ReplicaController, options: Autoscale,
                 tick: float = TICK_S) -> None:
        self.router, self.controller, self.options, self.tick = router, controller, options, tick
        self.samples: deque[tuple[float, int, int]] = deque()  # (time, in flight, arrived so far)
        self.needs: deque[tuple[float, int]] = deque()
        self.since = time.monotonic()
        self.last: dict[str, object] = {}
        self._logged = ""
        self.holding = 0  # requests of any kind waiting in :meth:`hold` for a replica
        self._wake = asyncio.Event()
        router.hold = self.hold
        router.autoscaler_state = self.state

    # ---------------------------------------------------------------- inputs
    def _traffic(self) -> tuple[int, int]:
        """Requests in flight through the router (on a replica or held) and how many arrived so far."""
        series = self.router.metrics.variants.values()
        in_flight = sum(s.in_flight for s in series)
        return in_flight, in_flight + sum(s.requests for s in series)

    def _sample(self, now: float) -> tuple[float, int]:
        in_flight, arrived = self._traffic()
        self.samples.append((now, in_flight, arrived))
        while self.samples and self.samples[0][0] < now - self.options.window:
            self.samples.popleft()
        average = sum(s[1] for s in self.samples) / len(self.samples)
        return average, arrived - self.samples[0][2] + self.samples[0][1]

    def _counts(self) -> tuple[int, int]:
        managed = self.controller.managed.values()
        serving = sum(1 for m in managed if m.state == "serving")
        return serving, sum(1 for m in managed if m.state == "coming")

    # ---------------------------------------------------------------- the loop
    async def run(self) -> None:
        current = self.controller.wanted
        lowest = 0 if self.options.scale_to_zero else self.options.min_replicas
        start = max(lowest, min(self.options.max_replicas, self.options.min_replicas if current is None else current))
        if current != start:
            log(f"{_now()} start: {'nothing' if current is None else current} recorded, {start} wanted (min "
                f"{self.options.min_replicas}, max {self.options.max_replicas})")
            await asyncio.to_thread(self.controller.scale, start)
        while True:
            current = self.controller.wanted
            decision = self.step(time.monotonic())
            if decision.wanted != current:
                try:  # recorded in serving.json under the state lock: not on the event loop
                    await asyncio.to_thread(self.controller.scale, decision.wanted)
                except (HpcTfError, OSError) as err:  # next tick decides again
                    log(f"scale to {decision.wanted} failed: {getattr(err, 'message', err)}")
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick)

    def step(self, now: float) -> Decision:
        """Sample, decide and log; the caller applies the decision (:meth:`run`)."""
        average, arrived = self._sample(now)
        if self.controller.stopping:  # serve down: its count of 0 stands
            return Decision(self.controller.wanted or 0, "the service stops")
        self.needs.append((now, need(self.options, average, arrived)))
        keep = max(self.options.up_delay, self.options.down_delay) + self.tick
        while self.needs and self.needs[0][0] < now - keep:
            self.needs.popleft()
        current = self.controller.wanted or 0
        serving, coming = self._counts()
        refused = self.controller.refused
        if refused is not None and current < refused[0]:
            # the count dropped below the refused one (less load): a later rise may ask once more
            self.controller.refused = refused = None
        held = self.holding > 0 and not self.router.pool.any_ready()
        decision = decide(self.options, self.needs, self.since, now, current, held,
                          None if refused is None else refused[0])
        self.last = {"average_in_flight": round(average, 3), "arrived": arrived, "need": self.needs[-1][1],
                     "serving": serving, "coming": coming, "wanted": decision.wanted, "why": decision.why}
        if decision.why != self._logged and decision.why != "steady":
            log(f"{_now()} average in flight {average:.2f} over {self.options.window:g} s ({arrived} arrived), "
                f"replicas {serving} serving + {coming} coming, {current} wanted before -> {decision.wanted}: "
                f"{decision.why}")
        self._logged = decision.why
        return decision

    # ---------------------------------------------------------------- the router's hooks
    async def hold(self) -> None:
        """Wait (at most ``hold`` seconds) until a replica serves; NoReplica, one line, after that."""
        deadline = time.monotonic() + self.options.hold
        self.holding += 1
        self._wake.set()  # decide now: a held request with no replica starts one at once
        try:
            while not self.router.pool.any_ready():
                if time.monotonic() > deadline:
                    refused = self.controller.refused
                    raise NoReplica(f"no replica was ready within the hold of {self.options.hold:g} s "
                                    f"(serving.autoscale.hold)" + (f": {refusal(refused)}" if refused else
                                                                   ": one is starting; try again"))
                await asyncio.sleep(0.05)
        finally:
            self.holding -= 1

    def state(self) -> dict[str, object]:
        refused = self.controller.refused
        options = self.options.model_dump()
        return {"options": options, **self.last,
                "refused": refusal(refused) if refused else None}


def refusal(refused: tuple[int, str]) -> str:
    """What ``serve status`` says of a scale-up the quota preflight refused."""
    return f"scale-up to {refused[0]} stopped by the GPU quota: {refused[1]}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
