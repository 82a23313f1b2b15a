"""Where the model runs, behind one small interface.

A backend is anything with a ``metadata`` attribute (the served model's
`modelmeta.ModelMetadata`) and ``predict(inputs) -> outputs``, where both are
dicts of numpy arrays keyed by the signature's tensor names. The function
never knows more than that; `create_backend` picks one from the settings and
imports its dependencies (TensorFlow for the in-process one) only then.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from functions.config import Settings
from modelmeta import ModelMetadata


class Backend(Protocol):
    metadata: ModelMetadata

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once on a batch. Raises `functions.errors.ServiceError`s."""
        ...


def create_backend(settings: Settings) -> Backend:
    if settings.model_uri.lower().startswith("s3://"):
        # A model kept in S3 is fetched into a local cache first (boto3 only then).
        from functions.storage import resolve_model_uri

        settings = resolve_model_uri(settings)
    if settings.backend == "inprocess":
        from functions.backends.inprocess import InProcessBackend

        return InProcessBackend(settings.model_uri)
    if settings.backend in ("tfserving-rest", "tfserving-grpc"):
        # TF Serving over the network: no TensorFlow in this process.
        from functions.backends.remote import create_remote_backend

        return create_remote_backend(settings)
    if settings.backend == "litert":
        # The bare model in the LiteRT runtime, images preprocessed in Python: no TensorFlow.
        from functions.backends.litert import LiteRTBackend

        return LiteRTBackend(settings.model_uri, settings.litert_flavour)
    raise ValueError(f"unknown backend {settings.backend!r}")  # Settings.validate prevents it
