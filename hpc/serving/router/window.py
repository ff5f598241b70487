"""What each variant's traffic looked like over the last minute, kept in the router (``serve status``
shows it without asking any replica): requests, errors and latency per one-second slot, summed on demand."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hpc.serving.router.metrics import Series

WINDOW_S = 60


@dataclass
class _Slots:
    """One variant's per-second series, oldest first (seconds with no request have no slot)."""

    slots: deque[tuple[int, Series]] = field(default_factory=deque)

    def at(self, second: int) -> Series:
        if not self.slots or self.slots[-1][0] != second:
            self.slots.append((second, Series()))
        return self.slots[-1][1]

    def trim(self, oldest: int) -> None:
        while self.slots and self.slots[0][0] < oldest:
            self.slots.popleft()


class TrafficWindow:
    """Per variant (public name, model, version): what finished in the last ``seconds`` seconds."""

    def __init__(self, seconds: int = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._now = clock
        self._variants: dict[tuple[str, str, str], _Slots] = {}

    def record(self, public: str, model: str, version: str, elapsed: float, ok: bool) -> None:
        second = int(self._now())
        slots = self._variants.setdefault((public, model, version or "-"), _Slots())
        slots.trim(second - self.seconds + 1)
        series = slots.at(second)
        series.start()  # finish() counts the request; start() keeps its in-flight count at 0
        series.finish(elapsed, ok)

    def summary(self) -> list[dict[str, object]]:
        """One JSON-able entry per variant that had traffic in the window: its requests, errors, rate
        (per second, over the window or since its first request if that is later) and p50/p99 (seconds,
        the upper bound of the histogram bucket they fall in)."""
        now = int(self._now())
        found = []
        for (public, model, version), slots in sorted(self._variants.items()):
            slots.trim(now - self.seconds + 1)
            if not slots.slots:
                continue
            total = Series()
            for _, series in slots.slots:
                total.requests += series.requests
                total.errors += series.errors
                total.latency_sum += series.latency_sum
                total.buckets = [a + b for a, b in zip(total.buckets, series.buckets, strict=True)]
            span = max(1, min(self.seconds, now - slots.slots[0][0] + 1))
            found.append({"public": public, "model": model, "version": version, "window_s": span,
                          "requests": total.requests, "errors": total.errors,
                          "rate": total.requests / span, "error_rate": total.errors / total.requests,
                          "p50_s": total.quantile(0.5), "p99_s": total.quantile(0.99)})
        return found
