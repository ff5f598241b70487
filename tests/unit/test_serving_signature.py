"""The TF-free signature reader against a real Keras 3 export (TF is used here only as the witness)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpc.errors import ServingError
from hpc.serving.signature import SignatureError, read_signature
from tests.unit._serving_models import export_mlp

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def savedmodel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_mlp(tmp_path_factory.mktemp("sm") / "export", seed=1)


def test_reads_the_keras_export_signature_like_tensorflow_does(savedmodel: Path) -> None:
    import tensorflow as tf

    sig = read_signature(savedmodel)
    witness = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    tf_inputs = witness.structured_input_signature[1]
    assert [t.name for t in sig.inputs] == sorted(tf_inputs) == ["features"]
    assert [t.name for t in sig.outputs] == sorted(witness.structured_outputs) == ["output_0"]
    assert sig.inputs[0].shape == (-1, 16) and sig.outputs[0].shape == (-1, 4)
    assert sig.inputs[0].triton_dtype == "TYPE_FP32" and sig.inputs[0].numpy_dtype == "float32"
    assert sig.batched
    assert read_signature(savedmodel, "serve").inputs == sig.inputs


def test_reading_does_not_import_tensorflow(savedmodel: Path) -> None:
    code = ("import sys; from pathlib import Path; from hpc.serving.signature import read_signature; "
            f"s = read_signature(Path({str(savedmodel)!r})); assert 'tensorflow' not in sys.modules; "
            "print(s.outputs[0].name)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "output_0"


def test_missing_signature_names_the_ones_there(savedmodel: Path) -> None:
    with pytest.raises(SignatureError, match=r"no signature 'predict' \(signatures: serve, serving_default\)"):
        read_signature(savedmodel, "predict")


def test_not_a_savedmodel(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match=r"saved_model\.pb is missing"):
        read_signature(tmp_path)
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff\xff not a protobuf")
    with pytest.raises(ServingError, match="is not a SavedModel"):
        read_signature(tmp_path)
