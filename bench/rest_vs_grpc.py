"""REST against gRPC on the local model server: what one call of the thin function costs.

    .venv/bin/python -m bench.rest_vs_grpc [--rounds 5] [--requests 100]

Starts infra.modelserver on loopback with the demo digits model (built once into build/,
not timed) and sends the same PNG digit, one call after the other on a kept-alive
connection, taking turns round by round:

- REST as the server answers now (``{"instances": [{"b64": ...}]}`` with requests);
- REST with http.server's defaults, status line and headers written apart from the body
  on a socket with Nagle's algorithm on: each reply then waits for the client's delayed
  ACK (about 40 ms on Linux) on every call after the first on a connection;
- gRPC Predict with tensorflow-serving-api's stubs.

The table shows the median over rounds of each round's p50 and p99, in milliseconds.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.stats import median, percentile


def _png_digit() -> bytes:
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[0] * (255 / 16)).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").resize((28, 28)).save(buffer, format="PNG")
    return buffer.getvalue()


def _timings(call: Callable[[], object], count: int) -> list[float]:
    timings = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100, help="calls per path per round")
    options = parser.parse_args(argv)

    import grpc
    import requests
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from infra.modelserver.repository import ModelEntry
    from infra.modelserver.server import ModelServer, ServerOptions
    from modelprep.demo import build_demo

    served = build_demo().served
    png = _png_digit()
    body = json.dumps({"instances": [{"b64": base64.b64encode(png).decode()}]})
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[png])
    tensor.tensor_shape.dim.add(size=1)
    request.inputs["image_bytes"].CopyFrom(tensor)

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "digits"
        repo.mkdir()
        (repo / "1").symlink_to(served, target_is_directory=True)
        server = ModelServer(ServerOptions(port=0, rest_api_port=0, models=(
            ModelEntry(name="digits", base_path=repo),))).start()
        handler = server.rest.httpd.RequestHandlerClass
        url = f"{server.rest_url}/v1/models/digits:predict"
        try:
            now, before = requests.Session(), requests.Session()
            answer = now.post(url, data=body, timeout=30).json()["predictions"][0]
            # Connections opened while the handler has http.server's defaults keep them.
            saved = handler.disable_nagle_algorithm, handler.wbufsize
            handler.disable_nagle_algorithm, handler.wbufsize = False, 0
            before.post(url, data=body, timeout=30).raise_for_status()
            handler.disable_nagle_algorithm, handler.wbufsize = saved
            channel = grpc.insecure_channel(server.grpc_target)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            scores = list(stub.Predict(request, timeout=30).outputs["scores"].float_val)
            assert max(range(10), key=scores.__getitem__) == \
                max(range(10), key=answer.__getitem__), "REST and gRPC disagree"

            paths: dict[str, Callable[[], object]] = {
                "REST, one write on a TCP_NODELAY socket (now)":
                    lambda: now.post(url, data=body, timeout=30).raise_for_status(),
                "REST, http.server's defaults (before)":
                    lambda: before.post(url, data=body, timeout=30).raise_for_status(),
                "gRPC Predict": lambda: stub.Predict(request, timeout=30),
            }
            rounds: dict[str, list[list[float]]] = {name: [] for name in paths}
            for _ in range(options.rounds):
                for name, call in paths.items():
                    rounds[name].append(_timings(call, options.requests))
            channel.close()
            now.close()
            before.close()
        finally:
            server.stop()

    grpc_p50 = median([percentile(t, 50) for t in rounds["gRPC Predict"]])
    print(f"{options.rounds} rounds x {options.requests} calls, demo digits model, loopback\n")
    print("| path | p50 ms | p99 ms | p50 / gRPC p50 |")
    print("|---|---:|---:|---:|")
    for name, runs in rounds.items():
        p50 = median([percentile(t, 50) for t in runs])
        p99 = median([percentile(t, 99) for t in runs])
        print(f"| {name} | {p50 * 1000:.2f} | {p99 * 1000:.2f} | {p50 / grpc_p50:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
