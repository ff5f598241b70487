"""A SavedModel's serving signature, read from ``saved_model.pb`` without importing TensorFlow.

TensorFlow costs ~3 s and 0.5 GB to import, so the CLI parses the file with a *subset* of TF's own
protobuf schema (``tensorflow/core/protobuf/saved_model.proto``, ``meta_graph.proto``,
``tensor_shape.proto``, ``types.proto``), declared here with the same field numbers. Protobuf skips
the fields this subset does not declare (the graph, the object graph, ...), so the parse is exact for
what is read: signature keys, tensor names, dtypes and shapes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.errors import ServingError

SAVED_MODEL_PB = "saved_model.pb"
DEFAULT_SIGNATURE = "serving_default"

# tensorflow/core/framework/types.proto DataType → Triton's data_type (model_config.proto) and numpy
DTYPES: dict[int, tuple[str, str]] = {
    1: ("TYPE_FP32", "float32"),
    2: ("TYPE_FP64", "float64"),
    3: ("TYPE_INT32", "int32"),
    4: ("TYPE_UINT8", "uint8"),
    5: ("TYPE_INT16", "int16"),
    6: ("TYPE_INT8", "int8"),
    7: ("TYPE_STRING", "object"),
    9: ("TYPE_INT64", "int64"),
    10: ("TYPE_BOOL", "bool"),
    14: ("TYPE_BF16", "bfloat16"),
    17: ("TYPE_UINT16", "uint16"),
    19: ("TYPE_FP16", "float16"),
    22: ("TYPE_UINT32", "uint32"),
    23: ("TYPE_UINT64", "uint64"),
}


class SignatureError(ServingError):
    """The SavedModel has no readable serving signature."""

    exit_code = 2


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: its key (what Triton and callers use), dtype and full shape
    (-1 = any size, the first dimension is the batch dimension for Keras exports)."""

    name: str
    triton_dtype: str
    numpy_dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    key: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batched(self) -> bool:
        """Every tensor has a variable leading dimension: Triton can batch (max_batch_size > 0)."""
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))


@functools.lru_cache(maxsize=1)
def _saved_model_class() -> Any:
    """Build the SavedModel message class (subset of TF's schema) from a descriptor at run time."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fd = descriptor_pb2.FileDescriptorProto(name="hpc_tf_saved_model_subset.proto", package="hpc_tf.tf",
                                            syntax="proto3")
    f = descriptor_pb2.FieldDescriptorProto
    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED

    def message(name: str, fields: list[tuple[str, int, int, int, str]], map_entry: bool = False) -> Any:
        msg = fd.message_type.add(name=name)
        if map_entry:
            msg.options.map_entry = True
        for fname, number, label, ftype, type_name in fields:
            field = msg.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                field.type_name = f".hpc_tf.tf.{type_name}"
        return msg

    s, i64, i32, b, m = f.TYPE_STRING, f.TYPE_INT64, f.TYPE_INT32, f.TYPE_BOOL, f.TYPE_MESSAGE
    message("Dim", [("size", 1, opt, i64, ""), ("name", 2, opt, s, "")])
    message("TensorShapeProto", [("dim", 2, rep, m, "Dim"), ("unknown_rank", 3, opt, b, "")])
    # dtype is an enum in TF's schema; an int32 reads the same varint and keeps unknown values
    message("TensorInfo", [("name", 1, opt, s, ""), ("dtype", 2, opt, i32, ""),
                           ("tensor_shape", 3, opt, m, "TensorShapeProto")])
    message("TensorInfoEntry", [("key", 1, opt, s, ""), ("value", 2, opt, m, "TensorInfo")], map_entry=True)
    message("SignatureDef", [("inputs", 1, rep, m, "TensorInfoEntry"), ("outputs", 2, rep, m, "TensorInfoEntry"),
                             ("method_name", 3, opt, s, "")])
    message("SignatureDefEntry", [("key", 1, opt, s, ""), ("value", 2, opt, m, "SignatureDef")], map_entry=True)
    message("MetaInfoDef", [("tags", 4, rep, s, ""), ("tensorflow_version", 5, opt, s, "")])
    message("MetaGraphDef", [("meta_info_def", 1, opt, m, "MetaInfoDef"),
                             ("signature_def", 5, rep, m, "SignatureDefEntry")])
    message("SavedModel", [("saved_model_schema_version", 1, opt, i64, ""),
                           ("meta_graphs", 2, rep, m, "MetaGraphDef")])
    # map fields are declared as nested entry types in a real schema; move the entries there
    by_name = {msg.name: msg for msg in fd.message_type}
    for owner, entry in (("SignatureDef", "TensorInfoEntry"), ("MetaGraphDef", "SignatureDefEntry")):
        nested = by_name[owner].nested_type.add()
        nested.CopyFrom(by_name[entry])
        for field in by_name[owner].field:
            if field.type_name == f".hpc_tf.tf.{entry}":
                field.type_name = f".hpc_tf.tf.{owner}.{entry}"
    kept = [msg for msg in fd.message_type if msg.name not in ("TensorInfoEntry", "SignatureDefEntry")]
    del fd.message_type[:]
    fd.message_type.extend(kept)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("hpc_tf.tf.SavedModel"))


def _spec(key: str, info: Any, where: str) -> TensorSpec:
    if info.dtype not in DTYPES:
        raise SignatureError(f"{where} '{key}' has TensorFlow dtype number {info.dtype}, which Triton cannot serve")
    if info.tensor_shape.unknown_rank:
        raise SignatureError(f"{where} '{key}' has an unknown rank; export with a fixed input signature")
    triton, numpy = DTYPES[info.dtype]
    return TensorSpec(key, triton, numpy, tuple(int(d.size) for d in info.tensor_shape.dim))


def read_signature(savedmodel: Path, key: str = DEFAULT_SIGNATURE) -> Signature:
    """The ``key`` signature of the SavedModel directory ``savedmodel`` (tag set "serve")."""
    pb = Path(savedmodel) / SAVED_MODEL_PB
    if not pb.is_file():
        raise SignatureError(f"no SavedModel at {savedmodel}: {SAVED_MODEL_PB} is missing",
                             hint="point at the directory model.export() / tf.saved_model.save() wrote")
    from google.protobuf.message import DecodeError

    saved = _saved_model_class()()
    try:
        saved.ParseFromString(pb.read_bytes())
    except DecodeError as err:
        raise SignatureError(f"{pb} is not a SavedModel: {err}") from None
    graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags] or list(saved.meta_graphs)
    if not graphs:
        raise SignatureError(f"{pb} holds no MetaGraph")
    signatures = graphs[0].signature_def
    if key not in signatures:
        found = ", ".join(sorted(k for k in signatures if not k.startswith("__"))) or "none"
        raise SignatureError(f"SavedModel {savedmodel} has no signature '{key}' (signatures: {found})",
                             hint="export the model with a serving signature, e.g. Keras 3 model.export(path)")
    sig = signatures[key]
    inputs = tuple(_spec(k, sig.inputs[k], "input") for k in sorted(sig.inputs))
    outputs = tuple(_spec(k, sig.outputs[k], "output") for k in sorted(sig.outputs))
    if not inputs or not outputs:
        raise SignatureError(f"signature '{key}' of {savedmodel} has no inputs or no outputs")
    return Signature(key, inputs, outputs)
