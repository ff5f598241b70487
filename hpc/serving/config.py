"""config.pbtxt through Triton's own protobuf schema (``inference.ModelConfig``), never a text template.

The compiled schema comes from the ``tritonclient`` wheel (``tritonclient.grpc.model_config_pb2``),
so this works offline from PyPI packages. Text is produced by ``text_format`` from a message and read
back with the same schema (:func:`parse_config`): what Triton parses is what was built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from hpc.errors import ServingError
from hpc.serving.signature import Signature, TensorSpec

# python-onnx: the python backend running tf2onnx's conversion with ONNX Runtime (hpc.serving.triton_onnx_model)
Format = Literal["onnx", "savedmodel", "python", "python-onnx"]
FORMATS: tuple[Format, ...] = ("onnx", "savedmodel", "python", "python-onnx")
# what a user may ask a hand-off for: a format, or auto (the fastest that passes parity: hpc.serving.choose)
FormatChoice = Format | Literal["auto"]
AUTO: Final = "auto"
PYTHON_BACKEND_FORMATS = ("python", "python-onnx")  # a model.py, run by Triton's python backend
ONNX_FORMATS = ("onnx", "python-onnx")  # served from tf2onnx's conversion: parity within a tolerance

# what sits in <repository>/<model>/<version>/ for each format (Triton's default_model_filename)
MODEL_FILE: dict[str, str] = {"onnx": "model.onnx", "savedmodel": "model.savedmodel", "python": "model.py",
                              "python-onnx": "model.py"}
# what the python backend's model.py runs, beside it in the version directory
PYTHON_SAVEDMODEL = "model.savedmodel"
PYTHON_ONNX = MODEL_FILE["onnx"]
# the Triton backend that serves each format (a directory of that name in tritonserver's backend directory)
BACKEND: dict[str, str] = {"onnx": "onnxruntime", "savedmodel": "tensorflow", "python": "python",
                           "python-onnx": "python"}


def backend_formats(backend: str) -> str:
    """The formats a Triton backend serves, as a user names them (``onnx``; ``python, python-onnx``)."""
    return ", ".join(f for f in FORMATS if BACKEND[f] == backend)


@dataclass(frozen=True)
class ServingOptions:
    """The knobs of a generated config. Dynamic batching, where it pays (:mod:`hpc.serving.batching`), with no
    queue delay (bench/serving.py): requests that queue while the instance is busy are still batched, and a
    lone request is not held — a 500 µs delay cost ~0.8 ms of p50 at concurrency 1 and made the generated
    config slower than no batching there, with no gain at concurrency 8."""

    max_batch_size: int = 64
    # None: the hand-off decides from a measurement (hpc.serving.batching); a config built without one batches
    dynamic_batching: bool | None = None
    queue_delay_us: int = 0
    instances: int = 1
    # threads of the runtime in each instance: TF (python), ONNX Runtime (python-onnx, onnx); 0 = its default
    tf_threads: int = 1
    parameters: dict[str, str] = field(default_factory=dict)


def model_config_module() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as err:
        raise ServingError(f"Triton's model config schema is not importable ({err})",
                           hint="install the serving extra: pip install 'hpc-tf[serving]'") from None
    return model_config_pb2


def _io(entries: Any, specs: tuple[TensorSpec, ...], batched: bool, mc: Any) -> None:
    for spec in specs:
        dims = spec.shape[1:] if batched else spec.shape
        entries.add(name=spec.name, data_type=mc.DataType.Value(spec.triton_dtype), dims=list(dims))


def build_config(name: str, signature: Signature, fmt: Format, options: ServingOptions | None = None) -> Any:
    """The ``inference.ModelConfig`` message for serving ``signature`` in format ``fmt``."""
    opts = options or ServingOptions()
    mc = model_config_module()
    cfg = mc.ModelConfig(name=name)
    if fmt in PYTHON_BACKEND_FORMATS:
        cfg.backend = "python"
    elif fmt == "onnx":
        cfg.platform = "onnxruntime_onnx"
    elif fmt == "savedmodel":
        cfg.platform = "tensorflow_savedmodel"
    else:
        raise ServingError(f"unknown serving format '{fmt}' (use one of: {', '.join(FORMATS)})")
    if fmt not in PYTHON_BACKEND_FORMATS:
        cfg.default_model_filename = MODEL_FILE[fmt]
    batched = signature.batched and opts.max_batch_size > 0
    cfg.max_batch_size = opts.max_batch_size if batched else 0
    _io(cfg.input, signature.inputs, batched, mc)
    _io(cfg.output, signature.outputs, batched, mc)
    cfg.instance_group.add(kind=mc.ModelInstanceGroup.Kind.KIND_CPU, count=opts.instances)
    cfg.version_policy.latest.num_versions = 1
    if batched and opts.dynamic_batching is not False:
        cfg.dynamic_batching.SetInParent()  # present even with every field at its default (no queue delay)
        cfg.dynamic_batching.max_queue_delay_microseconds = opts.queue_delay_us
    params = dict(opts.parameters)
    if fmt == "python":
        params.setdefault("SIGNATURE", signature.key)
        if opts.tf_threads:
            params.setdefault("TF_INTRA_OP_THREADS", str(opts.tf_threads))
            params.setdefault("TF_INTER_OP_THREADS", str(opts.tf_threads))
    if fmt == "python-onnx" and opts.tf_threads:
        params.setdefault("ORT_INTRA_OP_THREADS", str(opts.tf_threads))
        params.setdefault("ORT_INTER_OP_THREADS", str(opts.tf_threads))
    if fmt == "onnx" and opts.tf_threads:  # the names of Triton's onnxruntime backends (NVIDIA's and hpc-tf's)
        params.setdefault("intra_op_thread_count", str(opts.tf_threads))
        params.setdefault("inter_op_thread_count", str(opts.tf_threads))
    for key, value in sorted(params.items()):
        cfg.parameters[key].string_value = value
    return cfg


def render_config(cfg: Any) -> str:
    """config.pbtxt text of a ModelConfig message (Triton's text format parser reads it)."""
    from google.protobuf import text_format

    return str(text_format.MessageToString(cfg))


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text with Triton's schema; unknown fields or bad values raise ServingError."""
    from google.protobuf import text_format

    mc = model_config_module()
    cfg = mc.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as err:
        raise ServingError(f"config.pbtxt does not parse as Triton's ModelConfig: {err}") from None
    return cfg


def config_pbtxt(name: str, signature: Signature, fmt: Format, options: ServingOptions | None = None) -> str:
    """Build, render and read back: the returned text parses to exactly the message that was built."""
    cfg = build_config(name, signature, fmt, options)
    text = render_config(cfg)
    if parse_config(text) != cfg:  # pragma: no cover - a protobuf bug, not a user error
        raise ServingError(f"config.pbtxt for {name} does not round-trip through Triton's schema")
    return text
