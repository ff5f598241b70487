"""What another user of the cluster tries against someone else's router (run as that user, on another
node): ``python _router_intruder.py HOST HTTP_PORT GRPC_PORT MODEL``. Prints one JSON object: each
call's outcome as ``{"ok": bool, "detail": str}``."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from tests.integration._intruder import grpc, http

SPLIT = {"variants": [{"model": "evil", "version": None, "weight": 1}]}
REPLICA = {"host": "10.77.0.66", "http_port": 8000, "grpc_port": 8001}


def main(host: str, http_port: str, grpc_port: str, model: str) -> dict[str, Any]:
    base = f"http://{host}:{http_port}"
    guessed = {"hpc-tf-key": "guess"}
    out = {
        "http ready": http(base, "GET", "/v2/health/ready"),
        "state": http(base, "GET", "/hpc-tf/router/state"),
        "state, guessed key": http(base, "GET", "/hpc-tf/router/state", headers=guessed),
        "set split": http(base, "PUT", f"/hpc-tf/router/splits/{model}", SPLIT),
        "set split, guessed key": http(base, "PUT", f"/hpc-tf/router/splits/{model}", SPLIT, guessed),
        "add replica": http(base, "POST", "/hpc-tf/router/replicas", REPLICA),
        "scale": http(base, "PUT", "/hpc-tf/router/service", {"replicas": 3}),
        "start canary": http(base, "PUT", f"/hpc-tf/router/canaries/{model}", {"version": 2}),
        "drain replica": http(base, "POST", "/hpc-tf/router/replicas/any/drain"),
        "delete split": http(base, "DELETE", f"/hpc-tf/router/splits/{model}"),
        "http load": http(base, "POST", f"/v2/repository/models/{model}/load", {}),
        "http unload": http(base, "POST", f"/v2/repository/models/{model}/unload", {}),
        "http config": http(base, "GET", f"/v2/models/{model}/config"),
    }
    client = grpcclient.InferenceServerClient(f"{host}:{grpc_port}")
    tensor = grpcclient.InferInput("features", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    out |= {
        "grpc infer": grpc(client.infer, model, [tensor]),
        "grpc load": grpc(client.load_model, model),
        "grpc unload": grpc(client.unload_model, model),
        "grpc config": grpc(client.get_model_config, model),
    }
    client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
