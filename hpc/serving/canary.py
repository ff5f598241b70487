"""A canary: roll a new version of a model out in steps, gated on the router's own per-variant metrics.

Runs inside the router process (it outlives the ``hpc-tf serve canary`` call) and is recorded in
serving.json (:class:`hpc.serving.state.Canary`), so a router that starts again resumes a running canary at
its recorded step, and ``serve status`` reports one that was rolled back or promoted.

The version was published by a hand-off, whose parity check is the first gate. Then:

1. the model's requests are pinned to the old version (a split ``model:old=100``, recorded), and both
   versions are loaded on every healthy replica (config.pbtxt ``specific {old, new}``);
2. at each step the split gives the new version ``steps[i]`` % of the requests for ``step_s`` seconds;
   the gates look at the requests the new version answered during the step (the router's series for
   that variant): error rate above ``max_error_rate`` or p99 latency above ``max_p99_ms`` (the upper bound
   of the histogram bucket it falls in) fails the canary as soon as ``min_requests`` requests were
   seen; a step that ends with fewer requests fails too (no evidence is not a pass);
3. a failing gate sets the split back to 100 % old at once (recorded, with the reason), then unloads
   the new version and removes the split; all steps passed: the new version is recorded as serving
   alone, the old one unloaded, the split removed.

Every decision is one line in the router's log, with its inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hpc.errors import HpcTfError, InputError, ServingError
from hpc.serving.control import LOAD_TIMEOUT_S, ModelControl
from hpc.serving.restore import pin
from hpc.serving.router.metrics import BUCKETS, Series
from hpc.serving.state import Canary, ServingState, Split, Variant, canary_to_dict, update_state
from hpc.text import shown
from hpc.units import parse_short_duration

if TYPE_CHECKING:
    from hpc.serving.router.core import Router

TICK_S = 0.5  # how often the gates look at a step's requests
# the hand-off that starts a canary holds the model's lock until it has recorded it: wait for it to return
LOCK_PATIENCE_S = 60.0


@dataclass(frozen=True)
class Seen:
    """A variant's counts at one moment; two of them bound a step."""

    requests: int
    errors: int
    buckets: tuple[int, ...]

    @classmethod
    def of(cls, series: Series) -> Seen:
        return cls(series.requests, series.errors, tuple(series.buckets))

    def since(self, before: Seen) -> Series:
        return Series(requests=self.requests - before.requests, errors=self.errors - before.errors,
                      buckets=[a - b for a, b in zip(self.buckets, before.buckets, strict=True)])


def judge(canary: Canary, step: Series, ended: bool) -> str | None:
    """Why the canary fails on ``step`` (the new version's requests so far in this step), or None."""
    share = f"at step {canary.step + 1} ({canary.steps[canary.step]} %)"
    if step.requests < canary.min_requests:
        return (f"only {step.requests} request(s) reached version {canary.new} {share} in {canary.step_s:g} s, "
                f"fewer than --min-requests {canary.min_requests}") if ended else None
    rate = step.errors / step.requests
    if rate > canary.max_error_rate:
        return (f"error rate {rate:.1%} ({step.errors} of {step.requests}) of version {canary.new} {share} "
                f"is above {canary.max_error_rate:.1%}")
    p99 = step.quantile(0.99)
    if canary.max_p99_ms is not None and p99 is not None and p99 * 1000 > canary.max_p99_ms:
        shown = f"<= {p99 * 1000:g} ms" if p99 != float("inf") else f"> {BUCKETS[-1] * 1000:g} ms"
        return (f"p99 latency {shown} of version {canary.new} {share} is above {canary.max_p99_ms:g} ms "
                f"({step.requests} requests)")
    return None


def split_at(canary: Canary, percent: int) -> Split:
    """The model's split when the new version takes ``percent`` % of its requests."""
    variants = [Variant("", canary.old, 100 - percent), Variant("", canary.new, percent)]
    return Split(tuple(v for v in variants if v.weight > 0))


def canary_lines(state: ServingState) -> list[str]:
    """``serve status`` lines for the recorded canaries (in progress, rolled back, promoted)."""
    lines = []
    for model, c in sorted(state.canaries.items()):
        head = f"canary {model} v{c.old} -> v{c.new}:"
        if c.status == "running":
            lines.append(f"{head} step {c.step + 1}/{len(c.steps)}, {c.steps[c.step]} % to v{c.new} "
                         f"(steps {','.join(map(str, c.steps))} % every {c.step_s:g} s; since {c.updated})")
        elif c.status == "rolled-back":
            lines.append(f"{head} ROLLED BACK {c.updated}, v{c.old} serves: {c.reason}")
        else:
            lines.append(f"{head} promoted {c.updated}, v{c.new} serves")
    return lines


def canary_from_request(data: object, old: int) -> Canary:
    """A new canary from the control API's body ``{"version", "steps", "step_s", "max_error_rate",
    "max_p99_ms", "min_requests"}``; checked as serving.json checks it (InputError, one line)."""
    if not isinstance(data, dict) or set(data) - {"version", "steps", "step_s", "max_error_rate", "max_p99_ms",
                                                  "min_requests"} or "version" not in data:
        raise ServingError("a canary is {version, steps?, step_s?, max_error_rate?, max_p99_ms?, min_requests?}")
    steps = data.get("steps", [5, 25, 100])
    return Canary(old=old, new=data["version"], steps=tuple(steps) if isinstance(steps, list) else (),
                  step_s=data.get("step_s", 60.0), max_error_rate=data.get("max_error_rate", 0.01),
                  max_p99_ms=data.get("max_p99_ms"), min_requests=data.get("min_requests", 20))


DEFAULT_STEPS, DEFAULT_STEP_TIME, DEFAULT_MAX_ERROR_RATE, DEFAULT_MIN_REQUESTS = "5,25,100", "60s", "1%", 20


def canary_settings(steps: str = DEFAULT_STEPS, step_time: str = DEFAULT_STEP_TIME,
                    max_error_rate: str = DEFAULT_MAX_ERROR_RATE, max_p99_ms: float | None = None,
                    min_requests: int = DEFAULT_MIN_REQUESTS) -> dict[str, object]:
    """The control API's body but the version, from the CLI's words (``5,25,100``, ``60s``/``2m``,
    ``1%``/``0.01``); the router checks the values."""
    try:
        percents = [int(s) for s in steps.split(",")]
    except ValueError:
        raise InputError(f"--steps: {shown(steps)} is not a list of percentages (e.g. 5,25,100)") from None
    try:
        step_s = parse_short_duration(step_time)
    except ValueError as err:
        raise InputError(f"--step-time: {err}") from None
    rate = max_error_rate.strip()
    try:
        fraction = float(rate[:-1]) / 100 if rate.endswith("%") else float(rate)
    except ValueError:
        raise InputError(f"--max-error-rate: {shown(max_error_rate)} is not a rate (e.g. 1% or 0.01)") from None
    return {"steps": percents, "step_s": step_s,
            "max_error_rate": fraction, "max_p99_ms": max_p99_ms, "min_requests": min_requests}


class Canaries:
    """The router's canaries: one task per model being rolled out."""

    def __init__(self, router: Router, tick: float = TICK_S) -> None:
        self.router = router
        self.tick = tick
        self.tasks: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ entry points
    def record_new(self, model: str, request: object) -> Canary:
        """Record a new canary of ``model`` (blocking: a file under the state lock; :meth:`run` runs it).
        Refused, one line: a canary of it running, the model not serving exactly one version, the version
        not in the repository, another split on the model's name (than one holding all on the serving version)."""
        repo = self._repo()
        if model in self.tasks and not self.tasks[model].done():
            raise ServingError(f"a canary of {model} is already running", hint="hpc-tf serve status shows it")
        state = ServingState.read(repo)
        served = state.models.get(model)
        if served is None or len(served.versions) != 1:
            raise ServingError(f"{model} must serve exactly one version for a canary (recorded: "
                               f"{', '.join(map(str, served.versions)) if served else 'none'})",
                               hint="hand a version off first: hpc-tf handoff")
        split = state.splits.get(model)  # one that holds every request on the serving version is a canary's start
        if split is not None and {(v.model, v.version) for v in split.variants} != {(model, served.versions[0])}:
            raise ServingError(f"{model} carries a split already; a canary sets its own",
                               hint="remove that split first (DELETE /hpc-tf/router/splits/<name>)")
        canary = canary_from_request(request, served.versions[0])
        state.with_canary(model, canary)  # its checks, before the repository is looked at
        if canary.new not in repo.versions(model):
            raise ServingError(f"version {canary.new} of {model} is not in the repository {repo.root}",
                               hint="publish it with a hand-off first")
        recorded = update_state(repo, lambda s: s.with_canary(model, canary)).canaries[model]
        self._log(f"canary {model}: started v{recorded.old} -> v{recorded.new}, {_plan(recorded)}")
        return recorded

    def resume(self) -> None:
        """At router start: run again every canary recorded as running, from its recorded step."""
        for model, canary in ServingState.read(self._repo()).canaries.items():
            if canary.status == "running":
                self._log(f"canary {model}: resumed at step {canary.step + 1}/{len(canary.steps)} after a restart")
                self.run(model)

    def recorded(self) -> dict[str, Any]:
        return {m: canary_to_dict(c) for m, c in sorted(ServingState.read(self._repo()).canaries.items())}

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        for task in self.tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ the rollout
    def run(self, model: str) -> None:
        """Run the recorded canary of ``model`` (in the router's event loop)."""
        task = asyncio.get_running_loop().create_task(self._run(model))
        task.add_done_callback(lambda t: t.cancelled() or t.exception() is None
                               or self._log(f"canary {model}: stopped: {t.exception()!r}"))
        self.tasks[model] = task

    async def _run(self, model: str) -> None:
        canary = ServingState.read(self._repo()).canaries[model]
        try:
            await self._split(model, canary, 0)  # unversioned requests would reach the newest once both load
            await asyncio.to_thread(self._load, model, (canary.old, canary.new))
            await self.router.probe_all()  # the pool knows at once which replicas have the new version
            for index in range(canary.step, len(canary.steps)):
                canary = await self._record(model, replace(canary, step=index))
                await self._split(model, canary, canary.steps[index])
                self._log(f"canary {model}: step {index + 1}/{len(canary.steps)}, {canary.steps[index]} % "
                          f"to v{canary.new} for {canary.step_s:g} s")
                reason = await self._watch(model, canary)
                if reason is not None:
                    await self._roll_back(model, canary, reason)
                    return
            await self._promote(model, canary)
        except HpcTfError as err:  # a load or a record that failed: the old version is what must serve
            await self._roll_back(model, canary, err.message.splitlines()[0])

    async def _watch(self, model: str, canary: Canary) -> str | None:
        series = self.router.metrics.variant(model, model, str(canary.new))
        before, ends = Seen.of(series), time.monotonic() + canary.step_s
        while True:
            await asyncio.sleep(self.tick)
            ended = time.monotonic() >= ends
            reason = judge(canary, Seen.of(series).since(before), ended)
            if reason is not None or ended:
                return reason

    async def _roll_back(self, model: str, canary: Canary, reason: str) -> None:
        await self._split(model, canary, 0)  # first: no new request reaches the new version
        await self._record(model, replace(canary, status="rolled-back", reason=reason))
        self._log(f"canary {model}: ROLLED BACK to v{canary.old}: {reason}")
        await self._settle(model, canary.old)

    async def _promote(self, model: str, canary: Canary) -> None:
        await self._split(model, canary, 100)
        await asyncio.to_thread(update_state, self._repo(),
                                lambda s: s.with_model(model, [canary.new], "canary")
                                .with_canary(model, replace(canary, status="promoted")))
        self._log(f"canary {model}: promoted, v{canary.new} serves alone (every step's gates passed)")
        await self._settle(model, canary.new)

    async def _settle(self, model: str, version: int) -> None:
        """Serve ``version`` alone: the other one unloaded from every replica, then the split removed."""
        try:
            await asyncio.to_thread(self._load, model, (version,))
        except HpcTfError as err:  # the split keeps every request on ``version`` meanwhile
            self._log(f"canary {model}: the split stays at v{version} alone: {err.message.splitlines()[0]}")
            return
        await asyncio.to_thread(self.router.set_split, model, None)

    # ------------------------------------------------------------------ helpers
    async def _split(self, model: str, canary: Canary, percent: int) -> None:
        split = split_at(canary, percent)
        await asyncio.to_thread(self.router.set_split, model,
                                replace(split, variants=tuple(replace(v, model=model) for v in split.variants)))

    async def _record(self, model: str, canary: Canary) -> Canary:
        state = await asyncio.to_thread(update_state, self._repo(), lambda s: s.with_canary(model, canary))
        return state.canaries[model]

    def _load(self, model: str, versions: tuple[int, ...]) -> None:
        """Pin ``versions`` in the model's config and load them on every healthy replica (blocking)."""
        repo = self._repo()
        with repo.lock(model, patience=LOCK_PATIENCE_S):
            pin(repo, model, versions)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        for replica in [r for r in self.router.pool.replicas.values() if r.healthy]:
            control = ModelControl(replica.grpc_target, self.router.secret)
            try:
                control.load(model, deadline)
                for version in versions:
                    control.wait_ready(model, version, deadline)
            finally:
                control.close()
            self._log(f"canary {model}: v{', v'.join(map(str, versions))} ready on replica {replica.name}")

    def _repo(self) -> Any:
        if self.router.repository is None:
            raise ServingError("a canary needs the router's repository (where it is recorded)")
        return self.router.repository

    @staticmethod
    def _log(line: str) -> None:
        print(f"hpc-tf router: {line}", file=sys.stderr, flush=True)


def _plan(c: Canary) -> str:
    p99 = f", p99 <= {c.max_p99_ms:g} ms" if c.max_p99_ms is not None else ""
    return (f"steps {','.join(map(str, c.steps))} % every {c.step_s:g} s, gates: error rate <= "
            f"{c.max_error_rate:.1%}{p99}, at least {c.min_requests} requests per step")
