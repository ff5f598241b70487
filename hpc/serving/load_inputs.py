"""The request ``hpc-tf serve bench`` sends: inputs for a served model, from what the client can see.

The newest hand-off's parity samples when the repository has them for the model and they fit what the
endpoint serves (real data, cycled to the batch size asked for); else seeded random data of the dtypes and
shapes the model's metadata declares (a split's public name, a model handed off elsewhere). Metadata rather
than the SavedModel's signature: it is what the endpoint answers to, through the router too, and reading it
needs neither TensorFlow nor the repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpc.errors import HpcTfError, InputError, ServingError
from hpc.serving.repository import Repository

Declared = dict[str, tuple[str, list[int]]]  # input name -> (Triton datatype, shape with -1 for variable)


def request_inputs(metadata: dict[str, Any], repo: Repository, model: str, batch: int) -> tuple[dict[str, Any], str]:
    """Inputs of ``batch`` rows for ``model`` and where they came from, given its metadata (KServe v2 JSON:
    ``inputs`` of ``name``, ``datatype``, ``shape``)."""
    declared = {t["name"]: (t["datatype"], [int(d) for d in t.get("shape", [])])
                for t in metadata.get("inputs", [])}
    if not declared:
        raise ServingError(f"the metadata of '{model}' declares no inputs: the load test cannot build a request")
    samples = _hand_off_samples(repo, model)
    if samples is not None and fits(samples[0], declared):
        import numpy as np

        rows = np.arange(batch)
        return ({name: np.take(array, rows % array.shape[0], axis=0) for name, array in samples[0].items()},
                f"hand-off samples ({samples[1]})")
    return random_inputs(model, declared, batch), "random, from the model's metadata"


def _hand_off_samples(repo: Repository, model: str) -> tuple[dict[str, Any], Path] | None:
    from hpc.serving.predict import latest_handoff
    from hpc.serving.samples import load_samples

    try:
        record = latest_handoff(repo, model)
        path = Path(record["samples"]) if record.get("samples") else None
        return None if path is None else (load_samples(path).inputs, path)
    except (HpcTfError, OSError, KeyError, TypeError):
        return None  # no hand-off of this name here: random inputs of the served shapes


def fits(arrays: dict[str, Any], declared: Declared) -> bool:
    """Whether samples match the served inputs: the same names and dtypes, a batch dimension, the same
    other dimensions where the model fixes them."""
    from tritonclient.utils import np_to_triton_dtype

    if set(arrays) != set(declared):
        return False
    for name, array in arrays.items():
        dtype, shape = declared[name]
        if np_to_triton_dtype(array.dtype) != dtype or array.ndim != len(shape) or array.shape[0] == 0:
            return False
        if shape[0] != -1 or any(d not in (-1, n) for d, n in zip(shape[1:], array.shape[1:], strict=True)):
            return False
    return True


def random_inputs(model: str, declared: Declared, batch: int) -> dict[str, Any]:
    """Seeded random inputs: a variable first dimension is the batch, any other variable one is 1."""
    import numpy as np
    from tritonclient.utils import triton_to_np_dtype

    rng = np.random.default_rng(0)
    inputs: dict[str, Any] = {}
    for name, (datatype, dims) in declared.items():
        if dims and dims[0] != -1 and batch != 1:
            raise InputError(f"--batch: '{model}' input '{name}' has the fixed shape {dims}; it takes no batch size")
        shape = [batch if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(dims)]
        dtype = triton_to_np_dtype(datatype)
        if dtype is None:
            raise ServingError(f"'{model}' input '{name}' has datatype {datatype}, which the load test cannot fill")
        if datatype == "BYTES":
            inputs[name] = np.full(shape, b"x", dtype=np.object_)
        elif datatype == "BOOL":
            inputs[name] = rng.integers(0, 2, size=shape).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            inputs[name] = rng.integers(0, 10, size=shape).astype(dtype)
        else:
            inputs[name] = rng.normal(size=shape).astype(dtype)
    return inputs
