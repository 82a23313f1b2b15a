"""The peer: the same wrapped MobileNetV2 SavedModel behind BentoML, with a base64 JSON API.

Runs only inside the bench's own virtualenv (``build/bench/peer-venv``, made by
`bench.peer`), never in the project's: BentoML brings its own pinned world.

    POST /predict  {"image": "<standard base64 of a JPEG or PNG>"}
    ->  {"class_id": 3, "score": 0.0021, "top_k": [[3, 0.0021], ...]}
    POST /predict_batch  {"images": ["<base64>", ...]}
    ->  [{"class_id": 3, ...}, ...]   (one model call for all of them)

It does what our function does for the same request, as plainly as BentoML
allows: decode the base64, feed the bytes to the wrapped model (which decodes
and resizes in the graph), and answer the top 5. The service gets the same
concurrency as ours (one worker process, eight request threads: gunicorn's
``threads = 4 x cores`` on this 2-core machine) and no per-request access log
(ours writes none either), so the comparison is of the servers, not of their
settings.
"""

from __future__ import annotations

import base64
import binascii
import os

import bentoml
import numpy as np

TOP_K = 5
THREADS = int(os.environ.get("PEER_THREADS", "8"))


@bentoml.service(workers=1, threads=THREADS, logging={"access": {"enabled": False}})
class MobileNet:
    def __init__(self) -> None:
        import tensorflow as tf

        self._tf = tf
        model_dir = os.environ["PEER_MODEL_DIR"]
        self._model = tf.saved_model.load(model_dir)
        self._fn = self._model.signatures["serving_default"]
        self._input = os.environ.get("PEER_INPUT", "image_bytes")
        self._output = os.environ.get("PEER_OUTPUT", "probabilities")

    @bentoml.api
    def predict(self, image: str) -> dict:
        return self._answer([image])[0]

    @bentoml.api
    def predict_batch(self, images: list[str]) -> list[dict]:
        return self._answer(images)

    def _answer(self, images: list[str]) -> list[dict]:
        try:
            data = [base64.b64decode(image, validate=True) for image in images]
        except (binascii.Error, ValueError) as exc:
            raise bentoml.exceptions.InvalidArgument(f"image is not base64: {exc}") from exc
        tf = self._tf
        batch = self._fn(**{self._input: tf.constant(data)})[self._output].numpy()
        answers = []
        for scores in batch:
            order = np.argsort(-scores, kind="stable")[:TOP_K]
            answers.append({"class_id": int(order[0]), "score": round(float(scores[order[0]]), 6),
                            "top_k": [[int(i), round(float(scores[i]), 6)] for i in order]})
        return answers
