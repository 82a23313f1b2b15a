"""The backend BACKEND names, built from the settings with its imports done only then.

Each backend imports its own dependencies when chosen: TensorFlow for ``inprocess``,
requests or grpc for the TF Serving ones, the LiteRT runtime for ``litert``. A thin
function that calls TF Serving therefore never imports TensorFlow.
"""

from __future__ import annotations

from functions.backends import Backend
from functions.config import REMOTE_BACKENDS, Settings


def create_backend(settings: Settings) -> Backend:
    if settings.model_uri.lower().startswith(("s3://", "gs://")):
        # A model kept in S3 or Cloud Storage is fetched into a local cache first (its
        # client library imported only then).
        from functions.storage import resolve_model_uri

        settings = resolve_model_uri(settings)
    if settings.backend == "inprocess":
        from functions.backends.inprocess import InProcessBackend

        return _merging(InProcessBackend(settings.model_uri,
                                         settings.intra_op_thread_count()),
                        settings, settings.model_call_count())
    if settings.backend in REMOTE_BACKENDS:
        # TF Serving over the network: no TensorFlow in this process.
        return _remote_backend(settings)
    if settings.backend == "litert":
        # The bare model in the LiteRT runtime, images preprocessed in Python: no TensorFlow.
        from functions.backends.litert import LiteRTBackend

        return _merging(LiteRTBackend(settings.model_uri, settings.litert_flavour,
                                      settings.litert_allow_unverified), settings, calls=1)
    raise ValueError(f"unknown backend {settings.backend!r}")  # Settings.validate prevents it


def _merging(backend: Backend, settings: Settings, calls: int) -> Backend:
    """At most ``calls`` model calls at once, each merging the requests queued behind them
    (TF Serving batches on its own side)."""
    from functions.backends.batching import BatchingBackend

    return BatchingBackend(backend, settings.batch_max_images, calls)


def _remote_backend(settings: Settings) -> Backend:
    """The backend BACKEND names, for the model MODEL_NAME / MODEL_VERSION(_LABEL) name."""
    from functions.backends.remote import Target, load_metadata

    metadata = load_metadata(settings)
    target = Target(
        model_name=settings.model_name or metadata.name,
        version=int(settings.model_version) if settings.model_version else None,
        label=settings.model_version_label,
        signature=metadata.signature,
    )
    if settings.backend == "tfserving-rest":
        from functions.backends.tfserving_rest import RestBackend

        return RestBackend(metadata, target, settings.tfserving_url or "http://127.0.0.1:8501",
                           request_format=settings.tfserving_rest_format,
                           timeout=settings.request_timeout, retries=settings.upstream_retries,
                           max_reply_bytes=settings.max_upstream_reply_bytes)
    from functions.backends.tfserving_grpc import GrpcBackend

    return GrpcBackend(metadata, target, settings.tfserving_url or "127.0.0.1:8500",
                       timeout=settings.request_timeout, retries=settings.upstream_retries,
                       max_reply_bytes=settings.max_upstream_reply_bytes)
