"""The metrics rows as TensorBoard event files too (``metrics: {tensorboard: true}``), so that
``tensorboard --logdir <run_dir>/tensorboard`` works with no code in the script.

Laid out as Keras' own ``TensorBoard`` callback lays them out, which researchers' dashboards and
habits expect: ``train/`` and ``validation/`` runs, tags ``epoch_<name>`` at the epoch number
(``val_loss`` is ``epoch_loss`` in ``validation/``, so TensorBoard draws both on one chart) and
``batch_<name>`` at the global step for step rows.

Written with TensorFlow's ``tf.summary`` from the process that trains, which has imported
TensorFlow already; a custom loop without TensorFlow gets no event files (said once). Like the
metrics file, a failure never stops training. A requeued attempt adds its own event file; its
rows repeat the epochs it trained again, at the same steps.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from .preemption import log as say

VALIDATION_PREFIX = "val_"  # Keras' name for a metric on the validation data


def place(kind: str, name: str) -> tuple[str, str]:
    """(run, tag) of one value: ``("validation", "epoch_loss")`` for an epoch row's ``val_loss``."""
    run = "validation" if name.startswith(VALIDATION_PREFIX) else "train"
    return run, f"{'epoch' if kind == 'epoch' else 'batch'}_{name.removeprefix(VALIDATION_PREFIX)}"


class EventWriter:
    """One ``tf.summary`` file writer per run under ``directory``, made on the first row."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._writers: dict[str, Any] = {}
        self._broken = False

    def write(self, kind: str, values: Mapping[str, float | None], *, epoch: int | None, step: int | None) -> None:
        at = epoch if kind == "epoch" else step
        if self._broken or at is None:
            return
        tf = sys.modules.get("tensorflow")
        if tf is None:
            self._stop("this process has not imported TensorFlow")
            return
        try:
            for name, value in values.items():
                if value is None:  # not finite: the metrics file holds null, TensorBoard gets no point
                    continue
                run, tag = place(kind, name)
                with self._writer(tf, run).as_default():
                    tf.summary.scalar(tag, value, step=at)
            for writer in self._writers.values():
                writer.flush()
        except Exception as err:  # whatever TensorFlow raises: training goes on
            self._stop(f"{type(err).__name__}: {err}")

    def _writer(self, tf: Any, run: str) -> Any:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.directory, run))
        return self._writers[run]

    def _stop(self, why: str) -> None:
        self._broken = True
        say(f"no TensorBoard events in {self.directory}: {why}; the metrics file has every value")
