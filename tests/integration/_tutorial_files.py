"""What tests/fixtures/tf/tutorial_fit.py leaves behind, checked the same way after a local and a Slurm run.

The witnesses are Keras itself (every file the script named loads) and the instruments' probes: each
worker's weights after every epoch. Without ``BatchNormalization(synchronized=True)`` the workers'
moving statistics differ, so a file equal to worker 0's state is the chief's copy, not worker 1's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

EPOCHS = 4
# every path the script names under OUT, and nothing else (BackupAndRestore removes its directory at the end)
EXPECTED_OUTPUTS = sorted(
    [f"ckpt-{e:02d}.keras" for e in range(1, EPOCHS + 1)]
    + [f"ckpt-{e:02d}.weights.h5" for e in range(1, EPOCHS + 1)]
    + ["best.h5", "final.keras", "final.weights.h5", "keras-model.keras", "log.csv", "tensorboard"]
)


def probe_weights(probe: Path, name: str) -> list[bytes]:
    import numpy as np

    saved = np.load(probe / f"{name}.npz")
    return [saved[key].tobytes() for key in saved.files]


def model_weights(model: object) -> list[bytes]:
    return [w.tobytes() for w in model.get_weights()]  # type: ignore[attr-defined]


def assert_outputs_are_the_chiefs(out: Path, probe: Path) -> None:
    import keras

    assert sorted(p.name for p in out.iterdir()) == EXPECTED_OUTPUTS  # no worker temp, no half-written file
    chief_pids, worker_pids = ({*(probe / f"pids-{rank}").read_text().split()} for rank in (0, 1))
    for epoch in range(1, EPOCHS + 1):
        chief = probe_weights(probe, f"epoch{epoch}-0")
        assert chief != probe_weights(probe, f"epoch{epoch}-1"), "the workers' BN statistics should differ"
        model = keras.models.load_model(out / f"ckpt-{epoch:02d}.keras")
        assert model_weights(model) == chief, f"ckpt-{epoch:02d}.keras is not the chief's state"
        model.load_weights(out / f"ckpt-{epoch:02d}.weights.h5")
        assert model_weights(model) == chief, f"ckpt-{epoch:02d}.weights.h5 is not the chief's state"
    final = probe_weights(probe, "final-0")
    for name in ("final.keras", "keras-model.keras"):
        assert model_weights(keras.models.load_model(out / name)) == final, name
    model.load_weights(out / "final.weights.h5")
    assert model_weights(model) == final
    best = model_weights(keras.models.load_model(out / "best.h5"))
    assert best in [probe_weights(probe, f"epoch{e}-0") for e in range(1, EPOCHS + 1)]

    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == list(range(EPOCHS))
    history = {}
    for line in (probe / "history-0.jsonl").read_text().splitlines():
        entry = json.loads(line)
        history[entry["epoch"]] = entry["loss"]
    assert [float(row["loss"]) for row in rows] == [history[e] for e in range(EPOCHS)]

    # event files are named ...tfevents.<time>.<host>.<pid>.<n>.v2: only the chief's are there
    events = sorted((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"train", "validation"}, events
    assert {p.name.split(".")[-3] for p in events} <= chief_pids, (events, chief_pids, worker_pids)


def epochs_trained(probe: Path, run: int, rank: int) -> list[int]:
    return [int(line) for line in (probe / f"epochs-run{run}-{rank}").read_text().split()]


def two_epochs_done(probe: Path) -> bool:
    """Both workers finished epoch 2 (the chief's backup of it is written: BackupAndRestore comes first)."""
    return all((probe / f"done-{rank}").is_file() and (probe / f"done-{rank}").read_text() == "2" for rank in (0, 1))


def assert_resumed_from_the_chiefs_backup(probe: Path, after_epochs: int) -> None:
    """The second run started at epoch ``after_epochs + 1`` on both workers, from the chief's backup."""
    backup = probe_weights(probe, f"epoch{after_epochs}-0")
    for rank in (0, 1):
        assert epochs_trained(probe, 1, rank) == list(range(after_epochs, EPOCHS)), f"worker {rank}"
        assert probe_weights(probe, f"begin-run1-{rank}") == backup, f"worker {rank} did not restore the backup"
    # worker 1's own state at that epoch differed (BN statistics): it really restored the chief's copy
    assert probe_weights(probe, f"epoch{after_epochs}-1") != backup
