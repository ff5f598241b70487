"""Ask the serving node for a prediction on the model's parity samples, and compare it with the
trained model's own outputs for the same inputs: "what does Triton answer, and is it the model?"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc.errors import ServingError
from hpc.records import read_record
from hpc.serving import secret as node_secret
from hpc.serving.names import check_model_name
from hpc.serving.repository import Repository
from hpc.serving.samples import compare, load_samples
from hpc.serving.server import read_endpoint


@dataclass(frozen=True)
class Prediction:
    model: str
    version: str  # the version that answered
    server: str
    inputs: dict[str, Any]  # name -> array, the first ``rows`` samples
    served: dict[str, Any]
    trained: dict[str, Any]  # what the trained model answered for the same inputs
    max_abs_diff: float

    def to_dict(self) -> dict[str, Any]:
        """The prediction with plain lists for arrays, as ``--json`` prints it."""
        def rows(arrays: dict[str, Any]) -> dict[str, Any]:
            return {name: array.tolist() for name, array in arrays.items()}

        return {"model": self.model, "version": self.version, "server": self.server, "inputs": rows(self.inputs),
                "served": rows(self.served), "trained": rows(self.trained), "max_abs_diff": self.max_abs_diff}


def latest_handoff(repo: Repository, model: str) -> dict[str, Any]:
    """The newest successful hand-off record of ``model``."""
    for path in reversed(repo.handoff_records(model)):
        record = read_record(path, "the hand-off record", parse=dict,
                             fix=f"move it aside, or hand the model over again: hpc-tf handoff RUN_DIR --model {model}")
        if record.get("ok"):
            return record
    raise ServingError(f"model '{model}' has no successful hand-off in {repo.root}",
                       hint=f"hand a trained model over first: hpc-tf handoff RUN_DIR --model {model}")


def predict_samples(repo: Repository, model: str, rows: int = 1, grpc_url: str | None = None) -> Prediction:
    """Send the first ``rows`` parity samples of the newest hand-off to the serving node."""
    from hpc.serving.control import ModelControl

    check_model_name(model)
    record = latest_handoff(repo, model)
    if not record.get("samples"):
        raise ServingError(f"the newest hand-off of '{model}' recorded no samples", hint="hand the model over again")
    samples = load_samples(Path(record["samples"]))
    url = grpc_url or read_endpoint(repo).grpc_url
    control = ModelControl(url, node_secret.load(repo.root))
    try:
        # the whole sample batch, as the hand-off's parity check sent it: a batch of another size may
        # round differently in the last bit, which would not be a difference between the models
        served, version = control.infer(model, samples.inputs)
    finally:
        control.close()
    _, worst, _ = compare(samples.outputs, served, 0.0)

    def first(arrays: dict[str, Any]) -> dict[str, Any]:
        return {name: array[:rows] for name, array in arrays.items()}

    return Prediction(model=model, version=version, server=url, inputs=first(samples.inputs), served=first(served),
                      trained=first(samples.outputs), max_abs_diff=worst)
