"""Model control and versioned inference over gRPC (an HTTP load stalls HTTP inference on the
same server for the whole load: triton-inference-server/server#8958). Every call has a deadline:
a python stub that cannot start makes a load hang forever. Every call carries the owner's secret
(:mod:`hpc.serving.secret`): the node refuses control calls without it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpc.errors import ServingError
from hpc.serving.secret import NodeSecret

if TYPE_CHECKING:
    from tritonclient.utils import InferenceServerException

LOAD_TIMEOUT_S = 600.0
CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ModelState:
    name: str
    version: str
    state: str
    reason: str


class ModelControl:
    def __init__(self, grpc_url: str, secret: NodeSecret) -> None:
        try:
            import tritonclient.grpc as grpcclient
        except ImportError as err:
            raise ServingError(f"tritonclient is not importable ({err})",
                               hint="install the serving extra: pip install 'hpc-tf[serving]'") from None
        self._mod = grpcclient
        self.url = grpc_url
        self.client = grpcclient.InferenceServerClient(url=grpc_url)
        self._headers = secret.grpc_headers()

    def close(self) -> None:
        self.client.close()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, headers=self._headers, **kwargs)
        except InferenceServerException as err:
            raise call_error(what, self.url, err) from None

    def server_ready(self) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self.client.is_server_ready(headers=self._headers, client_timeout=5))
        except InferenceServerException:
            return False

    def load(self, model: str, deadline: float) -> None:
        """Load (or reload) ``model`` from the repository; returns when loaded, raises on failure or at
        the deadline (a ``time.monotonic()`` value)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServingError(f"no time left to load '{model}'")
        self._call(f"loading '{model}'", self.client.load_model, model, client_timeout=remaining)

    def unload(self, model: str) -> None:
        self._call(f"unloading '{model}'", self.client.unload_model, model, client_timeout=CALL_TIMEOUT_S)

    def wait_ready(self, model: str, version: int, deadline: float) -> float:
        """Seconds until ``model`` version ``version`` answers ready; ServingError at the deadline."""
        from tritonclient.utils import InferenceServerException

        t0 = time.monotonic()
        while True:
            remaining = deadline - time.monotonic()
            try:
                if self.client.is_model_ready(model, str(version), headers=self._headers,
                                              client_timeout=max(0.1, min(5.0, remaining))):
                    return time.monotonic() - t0
            except InferenceServerException:
                pass
            if remaining <= 0:
                raise ServingError(f"'{model}' version {version} was not ready before the deadline")
            time.sleep(0.1)

    def index(self) -> list[ModelState]:
        answer = self._call("reading the model index", self.client.get_model_repository_index,
                            as_json=True, client_timeout=CALL_TIMEOUT_S)
        return [ModelState(m.get("name", ""), m.get("version", ""), m.get("state", ""), m.get("reason", ""))
                for m in answer.get("models", [])]

    def infer(self, model: str, inputs: dict[str, Any], version: int | None = None,
              timeout: float = CALL_TIMEOUT_S) -> tuple[dict[str, Any], str]:
        """Outputs by name and the version that answered."""
        from tritonclient.utils import np_to_triton_dtype

        grpc = self._mod
        tensors = []
        for name, array in inputs.items():
            tensor = grpc.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = self._call(f"inference on '{model}'", self.client.infer, model, tensors,
                            model_version="" if version is None else str(version), client_timeout=timeout)
        response = result.get_response()
        outputs = {out.name: result.as_numpy(out.name) for out in response.outputs}
        return outputs, str(response.model_version)


def call_error(what: str, url: str, err: InferenceServerException) -> ServingError:
    """One line for a failed call: refused for want of the owner's secret, a node that does not answer
    (what still works), or Triton's own message."""
    text = str(err.message() or "")
    if "restricted" in text:
        return ServingError(f"{what} refused by the serving node at {url}: it does not accept this user's key",
                            hint="only the user who started the node controls it; if that is you, the key file "
                                 "was replaced since (another hpc-tf serve up): restart the node")
    if err.status() == "StatusCode.UNAVAILABLE":  # gRPC's word for "could not reach the server"
        return not_answering(url, what)
    return ServingError(f"{what} failed at {url}: {text}")


def not_answering(url: str, what: str | None = None) -> ServingError:
    """A lost serving node, in one line: which part, and what still works."""
    return ServingError(f"{what + ': ' if what else ''}the serving node at {url} is not answering; the model "
                        "repository and its published versions are intact (start a new node: hpc-tf serve up)")
