"""Where a request's time goes inside the function, layer by layer, in one process.

    python -m bench.breakdown ORIGINAL SERVED --image photo.jpg [--count 150]

Each stage adds one layer of ours to the one before, and the stages take turns
call by call, so their differences are the cost of each layer:

    direct       the original model's concrete function on the decoded tensor
    constants    the same with its variables frozen into constants, as `modelprep
                 wrap` writes small models (`FREEZE_AUTO_LIMIT`): what that saves
    graph        the wrapped model on the JPEG bytes: adds the in-graph decoding,
                 resize and normalisation (`modelprep.input_ops`) to ``constants``
                 or ``direct``, whichever holds the weights as the wrapped model does
    backend      `InProcessBackend.predict`: adds numpy-to-tensor and back
    app          `App.handle` on a JSON base64 request, called as the servers call
                 it: adds parsing, the EXIF check, post-processing and the JSON
                 answer. The request's log line and metrics run after the timer
                 stops, as the servers write them once the answer is sent
    preprocess   the preprocessing graph alone, for reference

What HTTP adds on top (gunicorn and the WSGI binding, loopback) is the
difference between ``app`` and the latency row measured through the server.
Prints one JSON line: per stage, the p50 of each round in milliseconds, and
``weights``: ``constants`` or ``variables``, as the wrapped model holds them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

STAGES = ("direct", "constants", "graph", "backend", "app", "preprocess")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original")
    parser.add_argument("served")
    parser.add_argument("--image", required=True)
    parser.add_argument("--input", default="images")
    parser.add_argument("--count", type=int, default=100, help="calls per stage per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    from bench import payloads
    from bench.stats import median
    from functions.app import App
    from functions.backends.inprocess import InProcessBackend
    from functions.config import Settings
    from functions.httpio import Headers, HttpRequest
    from modelmeta import ModelMetadata
    from modelprep.input_ops import image_batch

    with open(args.image, "rb") as f:
        data = f.read()
    metadata = ModelMetadata.load(args.served)
    spec = metadata.image_input
    pixels = payloads.normalized(np.asarray(_decode(data)), spec.image.normalization.mode)
    tensor = tf.constant(pixels[None].astype(np.float32))
    source = tf.saved_model.load(args.original)  # held: its variables die with it
    original = source.signatures["serving_default"]
    constants = convert_variables_to_constants_v2(original)
    wrapped = tf.saved_model.load(args.served).signatures["serving_default"]
    backend = InProcessBackend(args.served)
    app = App(Settings(model_uri=args.served))
    body = payloads.base64_json(data)
    request = HttpRequest(method="POST", path="/", headers=Headers(body.headers),
                          body=body.body)
    preprocess = tf.function(lambda images: image_batch(images, spec.image))
    batch = np.array([data], dtype=object)

    after_answer: list = []

    def run_app() -> None:
        response = app.handle(request, defer=after_answer.append)
        if response.status != 200:
            raise RuntimeError(f"App.handle answered {response.status}: {response.body[:200]!r}")

    calls = {
        "direct": lambda: {k: v.numpy() for k, v in original(**{args.input: tensor}).items()},
        "constants": lambda: [t.numpy() for t in constants(tensor)],
        "graph": lambda: {k: v.numpy() for k, v in wrapped(**{spec.name: tf.constant(
            batch)}).items()},
        "backend": lambda: backend.predict({spec.name: batch}),
        "app": run_app,
        "preprocess": lambda: preprocess(tf.constant(batch)).numpy(),
    }
    for call in calls.values():  # trace and warm every path first
        for _ in range(3):
            call()
    for job in after_answer:
        job()
    after_answer.clear()
    p50_ms: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        seconds: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.count):
            for name, call in calls.items():
                started = time.perf_counter()
                call()
                seconds[name].append(time.perf_counter() - started)
                while after_answer:  # the log line, as a server writes it: untimed
                    after_answer.pop()()
        for name, values in seconds.items():
            p50_ms[name].append(median(values) * 1000)
    weights = metadata.source.get("weights", "variables")
    print(json.dumps({"p50_ms": p50_ms, "count": args.count, "weights": weights}))
    return 0


def _decode(data: bytes):
    import io

    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")


if __name__ == "__main__":
    sys.exit(main())
