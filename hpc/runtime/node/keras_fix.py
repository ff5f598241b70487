"""Make Keras 3 ``model.fit`` work under MultiWorkerMirroredStrategy with 2+ workers.

keras-team/keras#20585 (open; TF 2.21 / Keras 3.15.1 in the lab notes §2a). Two bugs
in ``keras/src/backend/tensorflow/trainer.py``, both only in multi-worker mode:

1. ``_maybe_symbolic_build`` calls ``strategy.reduce("MEAN", <nest of PerReplica>)`` on
   the first batch; multi-worker reduce cannot take a nest ("Attempt to convert a value
   (PerReplica:...) with an unsupported type"). The build only needs shapes, so the
   first local replica's value is enough and no collective is needed.
2. ``reduce_per_replica`` reduces "mean" logs with ``axis=0``, which fails on the scalar
   loss ("Invalid reduction dimension 0 for input with 0 dimensions"). Single-worker
   Keras averages over replicas only; ``axis=None`` does exactly that across workers.

The patch replaces private Keras internals, so it is applied only to Keras versions it
was tested with (2 workers, bitwise-identical weights); any other version stops the
import with an error rather than train with an unknown fix or fail mid-run.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ._errors import RuntimeSetupError

TRAINER_MODULE = "keras.src.backend.tensorflow.trainer"

# Versions run through tests/integration/test_mwms_local.py with tensorflow-cpu 2.21 (2 workers:
# bitwise-identical weights with the patch, the #20585 error without it). Add a version only
# after that test passes with it.
TESTED_KERAS_VERSIONS = frozenset(
    {"3.12.0", "3.12.1", "3.12.4", "3.13.0", "3.13.1", "3.13.2", "3.14.0", "3.14.1", "3.15.0", "3.15.1"}
)


def check_version(version: str) -> None:
    if version not in TESTED_KERAS_VERSIONS:
        raise RuntimeSetupError(
            f"Keras {version} is not a version hpc-tf's multi-worker Keras handling (the model.fit fix for "
            f"keras-team/keras#20585 and the per-worker file writes) was tested with "
            f"({', '.join(sorted(TESTED_KERAS_VERSIONS))})",
            hint="install a tested Keras version, or set tf: {keras_mwms_fix: false} in job.yaml if this Keras no "
            "longer needs the fit fix (check with 2 workers) and every worker's files go to its own paths",
        )


def apply(trainer: ModuleType) -> None:
    """Patch the just-imported trainer module (a post-import hook)."""
    check_version(importlib.import_module("keras.src.version").__version__)
    # trainer.py itself imports these; take them from it so the patch matches its world
    tf: Any = trainer.tf
    tree: Any = trainer.tree
    original_reduce_per_replica = trainer.reduce_per_replica
    multi_worker = trainer._collective_all_reduce_multi_worker

    def first_local_value(value: Any, strategy: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def _maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if self._distribute_strategy is None:
            return
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(lambda value: first_local_value(value, strategy), batch)
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction in ("auto", "mean") and multi_worker(strategy):
            return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original_reduce_per_replica(values, strategy, reduction)

    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    setattr(trainer, "reduce_per_replica", reduce_per_replica)  # noqa: B010 (a module global)
