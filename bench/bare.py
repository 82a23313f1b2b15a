"""The model itself, with nothing of ours around it: the baseline of every timed row.

    python -m bench.bare MODEL_DIR --input images --shape 1,224,224,3 \
        --image photo.jpg --normalization symmetric [--serve]

A bare script: import TensorFlow, load the SavedModel, call its signature once
on a tensor, print one JSON line ``{"event": "ready", ...}``. That is the cold
start baseline. With ``--bytes`` the input is the encoded file itself, for a
wrapped model (a diagnostic: how much of a cold start the in-graph decoding
costs, apart from the server).

With ``--serve`` it then stays up and answers commands on stdin, one JSON
object per line, so the runner can time the direct call in the same rounds as
the HTTP requests, back to back:

    {"cmd": "time", "count": 100, "warmup": 5}   -> {"seconds": [...]}
    {"cmd": "burst", "count": 64}                -> {"seconds": 2.31, "count": 64}
    {"cmd": "threads", "count": 64, "threads": 4}  -> {"seconds": 0.52, "count": 64}
    {"cmd": "batch", "count": 8, "batch": 8, "threads": 2}  -> {"seconds": 0.41, "count": 64}
    {"cmd": "exit"}                              (or end of input)

``threads`` shares ``count`` calls among that many threads calling the same concrete
function at once (TensorFlow runs them concurrently); ``batch`` makes ``count`` calls of
one tensor of ``batch`` copies of the image (shared by ``threads`` threads, default 1)
and answers the images done. With
``burst`` (the sequential calls) they give the model's own best throughput on this
machine, the baseline of the throughput rows.

The image is decoded and normalised before any timing, with Pillow and numpy
(the same pixels TensorFlow's decoder gives: both use libjpeg's accurate DCT),
so a timed call is exactly one call of the concrete function on the
already-decoded tensor, plus reading its result out.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable


def _pixels(path: str, shape: list[int], normalization: str):
    import numpy as np
    from PIL import Image

    image = Image.open(path)
    channels = 1 if (len(shape) == 2 or shape[-1] == 1) else 3
    image = image.convert("L" if channels == 1 else "RGB")
    values = np.asarray(image, dtype=np.float32)
    if normalization == "unit":
        values = values / 255.0
    elif normalization == "symmetric":
        values = values / 127.5 - 1.0
    return values.reshape(shape)


def _summary(outputs) -> dict:
    """The first output's top class and score, to check every path gives the same answer."""
    import numpy as np

    name = sorted(outputs)[0]
    value = outputs[name].numpy().reshape(-1)
    top = int(np.argmax(value))
    return {"output": name, "top": top, "score": float(value[top])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the model alone, for baselines")
    parser.add_argument("model")
    parser.add_argument("--input", required=True, help="the signature's input name")
    parser.add_argument("--shape", default="", help="decoded input shape, e.g. 1,224,224,3")
    parser.add_argument("--image", required=True)
    parser.add_argument("--normalization", default="unit", choices=["unit", "symmetric", "raw"])
    parser.add_argument("--bytes", action="store_true",
                        help="feed the encoded file (a wrapped model) instead of pixels")
    parser.add_argument("--signature", default="serving_default")
    parser.add_argument("--serve", action="store_true", help="then answer timing commands")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    import tensorflow as tf

    t1 = time.perf_counter()
    fn = tf.saved_model.load(args.model).signatures[args.signature]
    t2 = time.perf_counter()
    if args.bytes:
        with open(args.image, "rb") as f:
            tensor = tf.constant([f.read()])
    else:
        shape = [int(d) for d in args.shape.split(",")]
        tensor = tf.constant(_pixels(args.image, shape, args.normalization))
    feed = {args.input: tensor}
    first = _summary(fn(**feed))
    t3 = time.perf_counter()
    _say({"event": "ready", "import_s": t1 - t0, "load_s": t2 - t1, "first_call_s": t3 - t2,
          **first})
    if not args.serve:
        return 0

    def call(inputs: dict = feed) -> dict:
        return {name: value.numpy() for name, value in fn(**inputs).items()}

    batches: dict[int, dict] = {}
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "exit":
            break
        if command["cmd"] == "time":
            for _ in range(int(command.get("warmup", 0))):
                call()
            seconds = []
            for _ in range(int(command["count"])):
                started = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - started)
            _say({"seconds": seconds})
        elif command["cmd"] == "burst":
            count = int(command["count"])
            call()
            started = time.perf_counter()
            for _ in range(count):
                call()
            _say({"seconds": time.perf_counter() - started, "count": count})
        elif command["cmd"] == "threads":
            count = int(command["count"])
            _say({"seconds": _threaded(call, count, int(command["threads"])), "count": count})
        elif command["cmd"] == "batch":
            size, calls = int(command["batch"]), int(command["count"])
            if size not in batches:  # built and warmed once per size
                batches[size] = {args.input: tf.concat([tensor] * size, axis=0)}
                call(batches[size])
            batched = batches[size]
            threads = int(command.get("threads", 1))
            if threads > 1:
                seconds = _threaded(lambda b=batched: call(b), calls, threads)
            else:
                started = time.perf_counter()
                for _ in range(calls):
                    call(batched)
                seconds = time.perf_counter() - started
            _say({"seconds": seconds, "count": calls * size})
        else:
            _say({"error": f"unknown command {command['cmd']!r}"})
    return 0


def _threaded(call: Callable[[], object], count: int, threads: int) -> float:
    """Wall seconds for ``count`` calls shared by ``threads`` threads, first call to last
    answer; each thread makes one untimed call first, so no thread starts cold."""
    remaining = [count]
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)
    go = threading.Event()

    def worker() -> None:
        call()
        ready.wait()
        go.wait()
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            call()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    go.set()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
