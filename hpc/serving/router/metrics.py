"""The router's Prometheus metrics: requests, errors, latency histogram and in-flight requests, per
variant (public name, model, version) and per replica. Rendered as Prometheus text (format 0.0.4)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

# seconds; a Triton call on a small model takes about a millisecond, a loaded CPU model tens of them
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREFIX = "hpctf_router"


@dataclass
class Series:
    """The counts of one label set."""

    requests: int = 0
    errors: int = 0
    in_flight: int = 0
    latency_sum: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # last: +Inf only

    def start(self) -> None:
        self.in_flight += 1

    def finish(self, seconds: float, ok: bool) -> None:
        self.in_flight -= 1
        self.requests += 1
        self.errors += 0 if ok else 1
        self.latency_sum += seconds
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1

    def quantile(self, q: float) -> float | None:
        """An upper bound of the q-quantile of latency (the bucket it falls in), None before any request."""
        if not self.requests:
            return None
        rank, seen = q * self.requests, 0
        for bound, count in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return float("inf")


Labels = tuple[tuple[str, str], ...]


class Metrics:
    """Series per variant and per replica, created on first use."""

    def __init__(self) -> None:
        self.variants: dict[Labels, Series] = {}
        self.replicas: dict[Labels, Series] = {}

    def variant(self, public: str, model: str, version: str) -> Series:
        return self.variants.setdefault((("public", public), ("model", model), ("version", version)), Series())

    def replica(self, name: str) -> Series:
        return self.replicas.setdefault((("replica", name),), Series())

    def render(self) -> str:
        lines: list[str] = []
        for scope, table in (("variant", self.variants), ("replica", self.replicas)):
            base = f"{PREFIX}_{scope}"
            for metric, kind, text in (("requests_total", "counter", "requests answered"),
                                       ("errors_total", "counter", "requests that failed"),
                                       ("in_flight", "gauge", "requests being answered"),
                                       ("latency_seconds", "histogram", "time to answer a request")):
                lines += [f"# HELP {base}_{metric} {text}, per {scope}", f"# TYPE {base}_{metric} {kind}"]
                for labels, series in sorted(table.items()):
                    lines += _samples(f"{base}_{metric}", labels, series, metric)
        return "\n".join(lines) + "\n"


def _label_text(labels: Labels) -> str:
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in labels)
    return ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, escaped, strict=True))


def _samples(name: str, labels: Labels, series: Series, metric: str) -> list[str]:
    text = _label_text(labels)
    if metric != "latency_seconds":
        value = {"requests_total": series.requests, "errors_total": series.errors,
                 "in_flight": series.in_flight}[metric]
        return [f"{name}{{{text}}} {value}"]
    out, seen = [], 0
    for bound, count in zip((*BUCKETS, float("inf")), series.buckets, strict=True):
        seen += count
        le = "+Inf" if bound == float("inf") else repr(bound)
        out.append(f'{name}_bucket{{{text},le="{le}"}} {seen}')
    return [*out, f"{name}_sum{{{text}}} {series.latency_sum!r}", f"{name}_count{{{text}}} {series.requests}"]
