"""config.pbtxt through Triton's ModelConfig schema: built, rendered, parsed back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpc.errors import ServingError
from hpc.serving.config import ServingOptions, build_config, config_pbtxt, parse_config
from hpc.serving.signature import Signature, TensorSpec

MLP = Signature("serving_default", (TensorSpec("features", "TYPE_FP32", "float32", (-1, 16)),),
                (TensorSpec("output_0", "TYPE_FP32", "float32", (-1, 4)),))


@pytest.mark.parametrize(("fmt", "platform", "backend", "filename"), [
    ("python", "", "python", ""),
    ("python-onnx", "", "python", ""),
    ("onnx", "onnxruntime_onnx", "", "model.onnx"),
    ("savedmodel", "tensorflow_savedmodel", "", "model.savedmodel"),
])
def test_each_format_parses_with_tritons_schema(fmt: str, platform: str, backend: str, filename: str) -> None:
    text = config_pbtxt("mlp", MLP, fmt)  # type: ignore[arg-type]
    cfg = parse_config(text)
    assert cfg == build_config("mlp", MLP, fmt)  # type: ignore[arg-type]
    assert (cfg.name, cfg.platform, cfg.backend, cfg.default_model_filename) == ("mlp", platform, backend, filename)
    assert cfg.max_batch_size == 64
    assert [(i.name, list(i.dims)) for i in cfg.input] == [("features", [16])]  # no batch dimension
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("output_0", [4])]
    assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == 0
    assert cfg.version_policy.latest.num_versions == 1
    assert cfg.instance_group[0].count == 1
    assert cfg.instance_group[0].kind == type(cfg.instance_group[0]).Kind.Value("KIND_CPU")


def test_python_format_names_its_signature_and_threads() -> None:
    cfg = parse_config(config_pbtxt("mlp", MLP, "python", ServingOptions(tf_threads=2)))
    assert cfg.parameters["SIGNATURE"].string_value == "serving_default"
    assert cfg.parameters["TF_INTRA_OP_THREADS"].string_value == "2"


def test_python_onnx_format_gives_onnx_runtime_its_threads_and_no_tf_settings() -> None:
    cfg = parse_config(config_pbtxt("mlp", MLP, "python-onnx", ServingOptions(tf_threads=2)))
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params == {"ORT_INTRA_OP_THREADS": "2", "ORT_INTER_OP_THREADS": "2"}


def test_unbatched_signature_keeps_full_dims_and_no_batcher() -> None:
    fixed = Signature("s", (TensorSpec("x", "TYPE_INT64", "int64", (3, 5)),),
                      (TensorSpec("y", "TYPE_FP32", "float32", (3,)),))
    cfg = parse_config(config_pbtxt("m", fixed, "onnx"))
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [3, 5]
    assert not cfg.HasField("dynamic_batching")


def test_options_turn_batching_off() -> None:
    cfg = parse_config(config_pbtxt("m", MLP, "onnx", ServingOptions(dynamic_batching=False, instances=2)))
    assert not cfg.HasField("dynamic_batching") and cfg.instance_group[0].count == 2


def test_hostile_name_is_quoted_by_the_schema_not_by_us() -> None:
    name = 'a"b\\c\nd'
    assert parse_config(config_pbtxt(name, MLP, "python")).name == name


def test_bad_text_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ServingError, match="does not parse"):
        parse_config('name: "x"\nmax_batch_size: {')
    with pytest.raises(ServingError, match="does not parse"):
        parse_config('name: "x"\nno_such_field: 1')


def test_unknown_format() -> None:
    with pytest.raises(ServingError, match="unknown serving format"):
        build_config("m", MLP, "tensorrt")  # type: ignore[arg-type]


def test_auto_keeps_tensorflow_when_the_onnx_conversion_fails(tmp_path: Path) -> None:
    """A conversion that fails (here: a python without tf2onnx) is a reason for format python, not an error."""
    from hpc.serving.choose import choose_format
    from hpc.serving.samples import Samples

    samples = Samples({"features": np.zeros((1, 16), "float32")}, {"output_0": np.zeros((1, 4), "float32")})
    choice = choose_format(tmp_path, MLP, samples, tmp_path / "s.npz", tmp_path, python="/bin/false")
    assert choice.format == "python" and choice.onnx is None
    assert choice.why.startswith(f"python-onnx is not possible: converting {tmp_path} to ONNX failed (exit 1)")
    assert choice.record()["format"] == "python"
