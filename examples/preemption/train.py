"""A custom MultiWorkerMirroredStrategy training loop that resumes exactly after a preemption.

A ``model.fit`` script needs nothing from hpc-tf; a loop of your own says where its steps begin.
``Resumable`` restores the newest checkpoint of the job (if any) and tells the loop the step to
start from; ``before_step`` writes the periodic checkpoints (``checkpoint.every_steps``) and, once
Slurm's warning arrived, the checkpoint all workers agreed on, after which the job is requeued
and this script starts again. The data position is the loop's own: here batch ``step`` of a fixed
synthetic data set. Outside a job with a ``preemption`` or ``checkpoint`` section Resumable does
nothing and the loop starts at step 0.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from hpc_tf_runtime.preemption import Resumable  # hpc-tf's runtime, importable in every job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--output", default=os.environ.get("HPC_TF_OUTPUT_DIR", "output"))
    args = parser.parse_args()

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # workers, not replicas: a worker with several GPUs has several replicas but reads one share of the batch
    rank, workers = strategy.cluster_resolver.task_id, strategy.cluster_resolver.cluster_spec().num_tasks("worker")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.steps * args.batch_size, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(len(x), 1))).astype("float32")
    with strategy.scope():
        w = tf.Variable(tf.zeros((8, 1)), name="w")
        b = tf.Variable(tf.zeros((1,)), name="b")

    @tf.function
    def train_step(features: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        def step(features: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((features @ w + b - labels) ** 2)
            grads = tf.distribute.get_replica_context().all_reduce("mean", tape.gradient(loss, [w, b]))
            w.assign_sub(0.05 * grads[0])
            b.assign_sub(0.05 * grads[1])
            return loss

        return strategy.reduce("mean", strategy.run(step, args=(features, labels)), axis=None)

    resumable = Resumable(strategy, w=w, b=b)  # restores the newest checkpoint, if there is one
    print(f"worker {rank}: training steps {resumable.step}..{args.steps}", flush=True)
    share = args.batch_size // workers  # each worker trains on its share of the global batch
    loss = float("nan")
    for step in range(resumable.step, args.steps):
        resumable.before_step(step)  # checkpoints; on Slurm's warning: the agreed checkpoint, then a requeue
        rows = slice(step * args.batch_size + rank * share, step * args.batch_size + (rank + 1) * share)
        loss = float(train_step(tf.constant(x[rows]), tf.constant(y[rows])))
        if (step + 1) % 200 == 0:
            print(f"worker {rank}: step {step + 1} loss {loss:.6f}", flush=True)

    if rank == 0:
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        result = {"steps": args.steps, "loss": loss, "restarts": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}
        (output / "result.json").write_text(json.dumps(result) + "\n")
        print(f"final loss {loss:.6f} after {args.steps} steps", flush=True)


if __name__ == "__main__":
    main()
