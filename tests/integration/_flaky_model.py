"""A test model whose versions fail a set share of requests: a python-backend ``model.py`` that doubles its
input and answers every ``fail_every``-th request it receives with an error (0: none). Deterministic: the
count is per model instance, so with one instance exactly 1 / fail_every of the requests fail."""

from __future__ import annotations

from pathlib import Path

from hpc.serving.repository import Repository

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [{{ name: "features" data_type: TYPE_FP32 dims: [-1, 16] }}]
output [{{ name: "output_0" data_type: TYPE_FP32 dims: [-1, 16] }}]
instance_group [{{ kind: KIND_CPU count: 1 }}]
"""

MODEL = '''import numpy as np
import triton_python_backend_utils as pb_utils

FAIL_EVERY = {fail_every}


class TritonPythonModel:
    def initialize(self, args):
        self.count = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            self.count += 1
            if FAIL_EVERY and self.count % FAIL_EVERY == 0:
                error = pb_utils.TritonError(f"request {{self.count}} fails by design (every {{FAIL_EVERY}})")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            x = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
            out = pb_utils.Tensor("output_0", (x * 2).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
'''


def write_flaky(repo: Path, name: str, versions: dict[int, int]) -> None:
    """``name`` with a version per entry of ``versions`` (version -> fail_every) in the repository."""
    repository = Repository.at(repo)
    for version, fail_every in versions.items():
        folder = repository.version_dir(name, version)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.py").write_text(MODEL.format(fail_every=fail_every))
    repository.write_config(name, CONFIG.format(name=name))
