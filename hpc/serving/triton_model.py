"""Triton python-backend model that runs a TF SavedModel; copied as ``<model>/<version>/model.py``.

It runs inside Triton's python backend stub (never in the CLI): it imports TensorFlow from the
serving node's venv. Layout: ``<version>/model.py`` and ``<version>/model.savedmodel/``. Config
``parameters``: SIGNATURE (default serving_default), TF_INTRA_OP_THREADS, TF_INTER_OP_THREADS.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        cfg = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf  # here, so that a broken TF install is a load error

        intra = int(params.get("TF_INTRA_OP_THREADS", "0"))
        inter = int(params.get("TF_INTER_OP_THREADS", "0"))
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
        self.tf = tf
        path = os.path.join(args["model_repository"], args["model_version"], "model.savedmodel")
        self.loaded = tf.saved_model.load(path)
        self.sig = self.loaded.signatures[params.get("SIGNATURE", "serving_default")]
        self.in_names = [i["name"] for i in cfg["input"]]
        self.out_names = [o["name"] for o in cfg["output"]]
        sig_in = sorted(self.sig.structured_input_signature[1])
        sig_out = sorted(self.sig.structured_outputs)
        if sorted(self.in_names) != sig_in or sorted(self.out_names) != sig_out:
            raise pb_utils.TritonModelException(
                f"config I/O {self.in_names} -> {self.out_names} differs from the signature {sig_in} -> {sig_out}")
        self.out_dtypes = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in cfg["output"]}
        self.batched = int(cfg.get("max_batch_size", 0)) > 0
        warm = {}
        for i in cfg["input"]:
            dims = [d if d > 0 else 1 for d in i["dims"]]
            shape = [1, *dims] if self.batched else dims
            warm[i["name"]] = tf.zeros(shape, dtype=pb_utils.triton_string_to_numpy(i["data_type"]))
        self.sig(**warm)  # traces once, so the first request is not slow

    def execute(self, requests: list[Any]) -> list[Any]:
        # the dynamic batcher may hand over several requests: one TF call for all, split afterwards
        parts: dict[str, list[Any]] = {n: [] for n in self.in_names}
        sizes = []
        for request in requests:
            for n in self.in_names:
                parts[n].append(pb_utils.get_input_tensor_by_name(request, n).as_numpy())
            sizes.append(parts[self.in_names[0]][-1].shape[0] if self.batched else 0)
        if self.batched:
            feed = {n: self.tf.constant(np.concatenate(v, axis=0)) for n, v in parts.items()}
            outs = {k: v.numpy() for k, v in self.sig(**feed).items()}
            responses, start = [], 0
            for size in sizes:
                tensors = [pb_utils.Tensor(n, outs[n][start:start + size].astype(self.out_dtypes[n], copy=False))
                           for n in self.out_names]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
                start += size
            return responses
        responses = []
        for i in range(len(requests)):
            outs = {k: v.numpy() for k, v in self.sig(**{n: self.tf.constant(parts[n][i]) for n in parts}).items()}
            tensors = [pb_utils.Tensor(n, outs[n].astype(self.out_dtypes[n], copy=False)) for n in self.out_names]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
