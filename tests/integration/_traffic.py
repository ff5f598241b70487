"""Continuous gRPC and HTTP inference traffic against one Triton endpoint (a node or the router), for the
rollover and router tests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import numpy as np


class Traffic:
    """gRPC and HTTP clients (``clients`` of each) sending the same request continuously; counts failures
    (and when they happened, ``time.monotonic()``) and the answering models and versions.

    Bounded: each protocol stops after ``max_requests`` requests or ``max_seconds``, whichever comes first.
    """

    def __init__(self, endpoint: dict[str, Any], x: np.ndarray, model: str = "mlp", input_name: str = "features",
                 max_requests: int = 20_000, max_seconds: float = 180, clients: int = 1) -> None:
        self.endpoint, self.x, self.model, self.input_name = endpoint, x, model, input_name
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.failed_at: list[float] = []
        self.versions: Counter[str] = Counter()
        self.models: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.lock = threading.Lock()  # the counters are shared by the clients' threads
        self.threads = [threading.Thread(target=target) for _ in range(clients) for target in (self._grpc, self._http)]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _loop(self, protocol: str, client: Any, make_input: Any) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            with self.lock:
                if self.sent[protocol] >= self.max_requests:
                    break
                self.sent[protocol] += 1
            inp = make_input(self.input_name, list(self.x.shape), "FP32")
            inp.set_data_from_numpy(self.x)
            try:
                if protocol == "http":
                    result = client.infer(self.model, [inp])  # network_timeout bounds it
                    answer = result.get_response()
                    model, version = answer["model_name"], answer["model_version"]
                else:
                    result = client.infer(self.model, [inp], client_timeout=30)
                    model, version = result.get_response().model_name, result.get_response().model_version
                with self.lock:
                    self.versions[str(version)] += 1
                    self.models[str(model)] += 1
            except Exception as err:
                with self.lock:
                    self.failures.append(f"{protocol}: {err!r}")
                    self.failed_at.append(time.monotonic())
            time.sleep(0.002)

    def _grpc(self) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(f"{self.endpoint['host']}:{self.endpoint['grpc_port']}")
        self._loop("grpc", client, grpcclient.InferInput)
        client.close()

    def _http(self) -> None:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(f"{self.endpoint['host']}:{self.endpoint['http_port']}",
                                                  network_timeout=30)
        self._loop("http", client, httpclient.InferInput)
        client.close()
