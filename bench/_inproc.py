"""In-process TensorFlow baseline for bench/serving.py, in its own process (TensorFlow stays out of the
benchmark's process and its threads out of the client's):

    python -m bench._inproc SAVEDMODEL SECONDS CONCURRENCY...   → one JSON line per concurrency

The serving signature called with a batch-1 request, from CONCURRENCY threads in a closed loop.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    import tensorflow as tf

    from bench._serving import request
    from hpc.serving.signature import DEFAULT_SIGNATURE

    savedmodel, seconds = sys.argv[1], float(sys.argv[2])
    fn = tf.saved_model.load(savedmodel).signatures[DEFAULT_SIGNATURE]
    inputs = request(Path(savedmodel))

    def call() -> object:
        return fn(**{name: tf.constant(value) for name, value in inputs.items()})

    for concurrency in map(int, sys.argv[3:]):
        print(json.dumps({"concurrency": concurrency, **measure(call, concurrency, seconds)}), flush=True)


def measure(call: Callable[[], object], concurrency: int, seconds: float) -> dict[str, float]:
    """``concurrency`` threads calling ``call`` in a closed loop for ``seconds`` (after 0.5 s of warm-up);
    summed up as ``hpc-tf serve bench`` sums up a served one (the same percentiles)."""
    from bench._serving import METRICS
    from hpc.serving.loadtest import Level

    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()
    measure_from, stop = start + 0.5, start + 0.5 + seconds

    def worker() -> None:
        while (t0 := time.perf_counter()) < stop:
            call()
            if t0 >= measure_from:
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    level = Level(concurrency, time.perf_counter() - measure_from, latencies).to_dict()
    return {key: level[key] for key in METRICS}


if __name__ == "__main__":
    main()
