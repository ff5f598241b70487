"""Where each worker's Keras writes go (hpc/runtime/node/keras_files.py), without a cluster.

The pure parts on plain files; then the installed hooks inside a real Python process with real Keras
3, as worker 1 and as worker 0 of a two-worker TF_CONFIG (the hooks decide by TF_CONFIG alone, so no
second process is needed): every callback the tutorial uses writes at the named paths on the chief
and nowhere visible on the other worker.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from hpc.errors import RuntimeSetupError
from hpc.runtime import install_into
from hpc.runtime.node import keras_files
from hpc.runtime.node.hook_config import HOOKS_VARIABLE, HookConfig
from hpc.runtime.node.keras_files import PrivateSpace, Redirect, Writer, check_landmarks, remove_stale_places
from hpc.runtime.node.preemption import Cluster

CHIEF, OTHER = Cluster(0, 2, True), Cluster(1, 2, False)


def tf_config(index: int) -> str:
    return json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": index}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", Cluster(0, 1, True)), (tf_config(0), CHIEF), (tf_config(1), OTHER),
     (json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}), OTHER)],
)
def test_the_chief_is_the_one_tensorflow_names_from_tf_config(text: str, expected: Cluster) -> None:
    assert Cluster.from_tf_config(text) == expected


def test_one_worker_gets_no_patches() -> None:
    assert keras_files.patches({}) == []
    assert keras_files.patches({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}})}) == []
    assert len(keras_files.patches({"TF_CONFIG": tf_config(1)})) == 3 + len(keras_files.REDIRECTS)


def save_text(text: str) -> object:
    def save(path: str) -> str:
        Path(path).write_text(text)
        return path
    return save


def test_the_chief_replaces_the_named_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_text("old")
    written = Writer(CHIEF).write(save_text("new"), target, whole_file=True)
    assert Path(str(written)).name.startswith(".hpc-tf-") and str(written).endswith("-model.keras")  # suffix kept
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["model.keras"]

    def broken(path: str) -> None:
        Path(path).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        Writer(CHIEF).write(broken, target, whole_file=True)
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["model.keras"]  # nothing half-written


def test_the_chief_writes_directories_and_asked_overwrites_in_place(tmp_path: Path) -> None:
    target = tmp_path / "model.keras"
    target.write_text("old")
    assert Writer(CHIEF).write(save_text("x"), target, whole_file=True, overwrite=False) == target  # Keras asks
    assert Writer(CHIEF).write(save_text("x"), tmp_path / "saved", whole_file=False) == tmp_path / "saved"


def test_another_worker_writes_privately_and_removes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "node-tmp"))
    (tmp_path / "node-tmp").mkdir()
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    writer = Writer(OTHER)
    written = Path(str(writer.write(save_text("mine"), tmp_path / "out" / "model.keras", whole_file=True)))
    assert written.name == "model.keras" and written.parent.parent.name.startswith(
        f"hpc-tf-77-{socket.gethostname()}-worker1-p{os.getpid()}-")
    assert not written.exists() and not (tmp_path / "out").exists()
    assert writer.space is not None and oct(os.stat(writer.space.root).st_mode & 0o777) == "0o700"
    inside = os.path.join(writer.space.new_place(), "x.weights.h5")
    assert writer.write(save_text("w"), inside, whole_file=True) == inside  # a private path is written as named


def test_a_callbacks_paths_point_into_a_private_place_while_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    redirect = Redirect("m", "Backup", ("backup_dir", "weights"), during=("save",), discard_after=("save",))
    callback = types.SimpleNamespace(backup_dir="out/backup", weights="out/backup/latest.weights.h5")
    writer = Writer(OTHER)
    with writer.redirected(callback, redirect):
        place = Path(callback.backup_dir).parent
        assert callback.backup_dir == str(place / "backup")
        assert callback.weights == str(place / "backup" / "latest.weights.h5")
    assert (callback.backup_dir, callback.weights) == ("out/backup", "out/backup/latest.weights.h5")
    assert place.is_dir()
    writer.discard(callback)
    assert not place.exists()

    chief_callback = types.SimpleNamespace(backup_dir="out/backup", weights="w")
    with Writer(CHIEF).redirected(chief_callback, redirect):
        assert chief_callback.backup_dir == "out/backup"


def test_a_start_removes_what_killed_processes_left_behind(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    host = socket.gethostname()
    stale = tmp_path / f"hpc-tf-9-{host}-worker1-p{dead}-abc"
    live = tmp_path / f"hpc-tf-9-{host}-worker1-p{os.getpid()}-def"
    elsewhere = tmp_path / f"hpc-tf-9-other-{host}-worker1-p{dead}-ghi"  # a $TMPDIR shared with another host
    other = tmp_path / "hpc-tf-notes"
    for directory in (stale, live, elsewhere, other):
        (directory / "backup").mkdir(parents=True)
    remove_stale_places(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name, other.name])
    assert PrivateSpace(1).holds(str(live)) is False  # not made yet: nothing is private


def test_the_workers_disagreeing_on_the_backup_is_described_per_file(tmp_path: Path) -> None:
    weights, metadata = tmp_path / "latest.weights.h5", tmp_path / "training_metadata.json"
    assert keras_files.backup_view(str(weights), str(metadata)) == "no training_metadata.json, no weights"
    weights.write_bytes(b"12345")
    metadata.write_text('{"epoch": 2, "batch": 0}')
    assert keras_files.backup_view(str(weights), str(metadata)) == '{"epoch": 2, "batch": 0}, 5 bytes of weights'


def test_a_changed_keras_function_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType(keras_files.FILE_UTILS_MODULE)
    exec("import os\ndef makedirs(path):\n    return os.makedirs(path, exist_ok=True)\n", module.__dict__)
    monkeypatch.setattr("inspect.getsource", lambda obj: "def makedirs(path):\n    return os.mkdir(path)\n")
    with pytest.raises(RuntimeSetupError, match=r"Keras 9\.9 changed .*keras\.src\.utils\.file_utils\.makedirs"):
        check_landmarks(module, "9.9")


@pytest.mark.tf
def test_the_installed_keras_is_the_one_the_patch_was_written_for() -> None:
    """Fails when a Keras upgrade changes a function the patch relies on: re-check, then update LANDMARKS."""
    import importlib

    version = importlib.import_module("keras.src.version").__version__
    for module_name in {module for module, _ in keras_files.LANDMARKS}:
        check_landmarks(importlib.import_module(module_name), version)


CALLBACKS_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import keras, numpy as np
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = np.ones((32, 4), "float32"), np.ones((32, 1), "float32")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, validation_data=(x, y), callbacks=[
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup"), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "ckpt-{epoch}.keras")),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "w-{epoch}.weights.h5"), save_weights_only=True),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "m.h5")),
        keras.callbacks.CSVLogger(os.path.join(out, "log.csv")),
        keras.callbacks.TensorBoard(os.path.join(out, "tb")),
    ])
    model.save(os.path.join(out, "final.keras"))
    model.save_weights(os.path.join(out, "final.weights.h5"))
    model.export(os.path.join(out, "saved_model"), verbose=False)
    print(json.dumps(sorted(os.listdir(out))))
""")


@pytest.mark.tf
@pytest.mark.parametrize("rank", [1, 0])
def test_every_callback_writes_only_on_the_chief_in_a_real_keras_process(tmp_path: Path, rank: int) -> None:
    runtime = tmp_path / "runtime"
    install_into(runtime)
    node_tmp = tmp_path / "node-tmp"
    node_tmp.mkdir()
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(node_tmp), "SLURM_JOB_ID": "5",
        "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": tf_config(rank),
        HOOKS_VARIABLE: HookConfig(30, True, ("n1", "n2")).to_json(),
        "PYTHONPATH": str(runtime / "hpc_tf_runtime" / "sitedir"),
    }
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", CALLBACKS_SCRIPT, str(out)], env=env, capture_output=True,
                            text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = json.loads(result.stdout.strip().splitlines()[-1])
    if rank == 1:
        assert listed == []  # no directory, no file of worker 1's at the paths the script named
    else:
        assert listed == ["backup", "ckpt-1.keras", "ckpt-2.keras", "final.keras", "final.weights.h5", "log.csv",
                          "m.h5", "saved_model", "tb", "w-1.weights.h5", "w-2.weights.h5"]
        assert sorted(os.listdir(out / "backup")) == ["latest.weights.h5", "training_metadata.json"]
    assert list(node_tmp.glob("hpc-tf-*")) == []  # the private places are gone at exit
