"""The generated config's dynamic batching (hpc.serving.batching): on where joining requests saves more than
the batcher costs, off where it does not, and the record says why with the numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpc.serving import batching
from hpc.serving.samples import Samples

SAMPLES = Samples(inputs={"x": np.zeros((4, 3), "float32")}, outputs={"y": np.zeros((4, 1), "float32")})


@pytest.mark.parametrize(("t1", "t8", "on"), [
    (5.0, 12.0, False),  # a 5 µs model: joining 8 saves ~3.5 µs each, the batcher costs ~70
    (2_000.0, 4_000.0, True),  # a batch of 8 at twice the cost of one: ~1.5 ms saved each
    (2_000.0, 15_600.0, False),  # no gain from batching (8 × 1.95 ms): only the batcher's cost is left
])
def test_onnx_batches_only_where_joining_saves_more_than_the_batcher_costs(
    monkeypatch: pytest.MonkeyPatch, t1: float, t8: float, on: bool
) -> None:
    monkeypatch.setattr(batching, "time_onnx", lambda *_: (t1, t8))
    decided = batching.decide("onnx", True, Path("model.onnx"), SAMPLES, 1)
    assert decided.dynamic is on
    assert (decided.batch1_us, decided.batch8_us) == (t1, t8)
    assert f"a batch of 1 in {t1:.1f} µs, of 8 in {t8:.1f} µs" in decided.why
    assert ("more than" if on else "less than") in decided.why


def test_python_backend_formats_batch_and_unbatched_signatures_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "time_onnx", lambda *_: pytest.fail("python formats are not timed"))
    for fmt in ("python", "python-onnx"):
        decided = batching.decide(fmt, True, None, SAMPLES, 1)
        assert decided.dynamic and "stub round trip" in decided.why
    assert not batching.decide("onnx", False, Path("model.onnx"), SAMPLES, 1).dynamic


def test_median_us_stays_within_its_budget_for_a_slow_call() -> None:
    calls: list[int] = []

    def slow() -> None:
        calls.append(1)
        import time

        time.sleep(0.05)

    assert batching.median_us(slow, warmup=1, budget_s=0.2) >= 50_000
    assert len(calls) <= 1 + 6  # warm-up, then what fits in 0.2 s (at least 3)


def test_a_model_onnx_runtime_cannot_run_in_batches_of_8_is_served_without_the_batcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fails(*_: object) -> tuple[float, float]:
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x")

    monkeypatch.setattr(batching, "time_onnx", fails)
    decided = batching.decide("onnx", True, Path("model.onnx"), SAMPLES, 1)
    assert not decided.dynamic and "could not run a batch of 8" in decided.why and "INVALID_ARGUMENT" in decided.why
