"""Whether a generated config turns on Triton's dynamic batcher: decided by a measurement at hand-off time.

The batcher is a thread between Triton's frontend and the model instance. Each request pays for that extra
hand-off, about 70 µs of p50 on BENCHMARKS.md figure 6's machine (0.19 against 0.12 ms for a 5 µs model).
Joining 8 requests that wait together saves each of them a share of the per-execution cost:
``(t1 + F) - (t8 + F) / 8``. Here t1 and t8 are the runtime's time for a batch of 1 and a batch of 8, and F is
the format's own cost per execution: the python backend's stub round trip (about 230 µs, figure 6), or
nothing for ``onnx`` (ONNX Runtime inside tritonserver). Batching is on when the saving is larger than the
batcher's cost.

- The python-backend formats always pass: F alone pays for the batcher.
- ``onnx`` is measured with ONNX Runtime in this process, the runtime the hand-off has just used for its
  parity check, in a bounded time. A model of a few microseconds, such as figure 6's, is served without
  the batcher; a model whose batch of 8 costs much less than 8 single runs is served with it.

The decision, and the numbers behind it, go into the hand-off record (``batching``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpc.serving.config import PYTHON_BACKEND_FORMATS, Format
from hpc.serving.samples import Samples
from hpc.text import shown

BATCHER_COST_US = 70.0
STUB_ROUND_TRIP_US = 230.0
BATCH = 8
MEASURE_BUDGET_S = 1.0  # per batch size; a model slower than that is timed on the few runs that fit


@dataclass(frozen=True)
class Batching:
    dynamic: bool
    why: str
    batch1_us: float | None = None
    batch8_us: float | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def worth_saying(self) -> bool:
        """Measured, or off: what the hand-off's publish line mentions (the python formats' usual "on" is not)."""
        return self.batch1_us is not None or not self.dynamic


def decide(fmt: Format, batched: bool, onnx: Path | None, samples: Samples, threads: int) -> Batching:
    """Dynamic batching for ``fmt`` or not, and why. ``batched``: the config has a batch dimension.
    ``onnx``: the converted model, timed for format onnx."""
    if not batched:
        return Batching(False, "the model has no batch dimension (max_batch_size 0)")
    if fmt in PYTHON_BACKEND_FORMATS:
        return Batching(True, f"the python backend's stub round trip (~{STUB_ROUND_TRIP_US:g} µs per execution) "
                              f"is shared by the requests of a batch")
    if fmt != "onnx" or onnx is None:
        return Batching(True, f"format {fmt} is not measured: Triton's usual dynamic batching")
    try:
        t1, t8 = time_onnx(onnx, samples, threads)
    except Exception as err:  # ONNX Runtime raises its own classes: any error means it cannot tell
        return Batching(False, f"ONNX Runtime could not run a batch of {BATCH} ({shown(str(err), 200)}): "
                               "dynamic batching left off")
    saving = t1 - t8 / BATCH
    numbers = (f"ONNX Runtime ran a batch of 1 in {t1:.1f} µs, of {BATCH} in {t8:.1f} µs: joining saves "
               f"{saving:.1f} µs per request")
    if saving > BATCHER_COST_US:
        return Batching(True, f"{numbers}, more than the batcher's ~{BATCHER_COST_US:g} µs", t1, t8)
    return Batching(False, f"{numbers}, less than the batcher's ~{BATCHER_COST_US:g} µs", t1, t8)


def time_onnx(onnx: Path, samples: Samples, threads: int) -> tuple[float, float]:
    """Median µs of a batch of 1 and of BATCH rows (the first sample row repeated), ``threads`` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    session = ort.InferenceSession(str(onnx), sess_options=opts, providers=["CPUExecutionProvider"])
    one = {name: value[:1] for name, value in samples.inputs.items()}
    many = {name: np.repeat(value, BATCH, axis=0) for name, value in one.items()}
    return median_us(lambda: session.run(None, one)), median_us(lambda: session.run(None, many))


def median_us(call: Any, warmup: int = 5, most: int = 200, budget_s: float = MEASURE_BUDGET_S) -> float:
    for _ in range(warmup):
        call()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < most and (len(times) < 3 or time.perf_counter() < end):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e6
