"""Child process: ``python -m hpc.serving.runtime_timing SAVEDMODEL SIGNATURE MODEL.onnx SAMPLES.npz THREADS BATCHED``.

Times one request (the first row of the parity samples when BATCHED is 1, else a whole sample) through each
runtime a python-backend format runs: TensorFlow's signature (format ``python``) and ONNX Runtime's session
(``python-onnx``), each with THREADS threads as the generated config gives the stub. Prints one JSON line:
``{"python": µs, "python-onnx": µs}`` (median of the timed calls after a warm-up). A child process because it
imports TensorFlow; both runtimes share it, so their numbers are taken side by side on the same load.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WARMUP_CALLS = 20
TIMED_CALLS = 200


def main(argv: list[str]) -> int:
    savedmodel, key, onnx_file, samples_file, threads = Path(argv[0]), argv[1], argv[2], Path(argv[3]), int(argv[4])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnxruntime as ort
    import tensorflow as tf

    from hpc.serving.batching import median_us
    from hpc.serving.samples import load_samples

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    rows = slice(0, 1) if argv[5] == "1" else slice(None)
    one = {name: value[rows] for name, value in load_samples(samples_file).inputs.items()}
    sig = tf.saved_model.load(str(savedmodel)).signatures[key]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = threads
    session = ort.InferenceSession(onnx_file, sess_options=opts, providers=["CPUExecutionProvider"])
    def tf_call() -> object:  # as triton_model.py does it: tensors in, numpy out
        return {k: v.numpy() for k, v in sig(**{n: tf.constant(a) for n, a in one.items()}).items()}

    times = {"python": round(median_us(tf_call, WARMUP_CALLS, TIMED_CALLS), 1),
             "python-onnx": round(median_us(lambda: session.run(None, one), WARMUP_CALLS, TIMED_CALLS), 1)}
    print(json.dumps(times))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
