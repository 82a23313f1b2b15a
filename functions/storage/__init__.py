"""Models kept in S3 or Cloud Storage, fetched into a local cache at cold start.

``MODEL_URI=s3://bucket/prefix/`` or ``gs://bucket/prefix/`` names a prepared SavedModel
directory (the one holding ``saved_model.pb``, ``variables/`` and
``assets.extra/model_metadata.json``). `resolve_model_uri` lists it, downloads what is not
cached yet into MODEL_CACHE_DIR (on Lambda, ``/tmp``) and returns the local directory the
backend loads. The cache rules are the same for both stores (`cache`); each store's client
library is imported only when a URI of its scheme is used (`s3`: boto3, `gcs`:
google-cloud-storage).

Every failure becomes a `ModelNotReady` (503) whose message says what to fix, and the
function answers it on every request until the load is retried.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path
from typing import Any

from functions.config import REMOTE_BACKENDS, Settings
from functions.errors import ModelNotReady
from functions.storage.cache import SOURCE_FILE, Store, fetch
from modelmeta import METADATA_PATH

SCHEMES = ("s3://", "gs://")

__all__ = ["SCHEMES", "SOURCE_FILE", "fetch_model", "is_remote_uri", "offload_response",
           "resolve_model_uri"]


def is_remote_uri(uri: str | None) -> bool:
    """True for a URI of an object store this module fetches from."""
    return bool(uri) and str(uri).lower().startswith(SCHEMES)


def resolve_model_uri(settings: Settings) -> Settings:
    """Settings whose model paths are local: a remote MODEL_URI is fetched into the cache.

    A TF Serving backend needs only the model's metadata from MODEL_URI (unless
    MODEL_METADATA names it), so only that file is fetched for it.
    """
    if not is_remote_uri(settings.model_uri):
        return settings
    if settings.backend in REMOTE_BACKENDS:
        if settings.model_metadata:
            return settings
        local = fetch_model(settings.model_uri, settings.model_cache_dir,
                            only=(METADATA_PATH,), lock_timeout=settings.model_lock_timeout)
        return dataclasses.replace(settings, model_metadata=str(local / METADATA_PATH))
    local = fetch_model(settings.model_uri, settings.model_cache_dir,
                        require="saved_model.pb" if settings.backend == "inprocess" else None,
                        lock_timeout=settings.model_lock_timeout)
    return dataclasses.replace(settings, model_uri=str(local))


def fetch_model(uri: str, cache_dir: str | Path, *, only: Collection[str] | None = None,
                require: str | None = "saved_model.pb", lock_timeout: float = 600.0,
                client: Any = None) -> Path:
    """The local copy of the model directory at `uri`, downloaded unless cached.

    `only` limits the copy to those paths (relative to the prefix); `require` is a file the
    directory must hold to be the right one; `client` is the store's client (boto3's S3
    client, google-cloud-storage's Client), made the usual way if omitted. Raises
    `ModelNotReady` for a missing bucket, prefix or object, refused credentials, an
    unreachable endpoint, a full disk or a download that stays incomplete.
    """
    return fetch(_store(uri, client), cache_dir, only=only, require=require,
                 lock_timeout=lock_timeout)


def offload_response(body: bytes, content_type: str, uri: str, expires_in: int,
                     client: Any = None) -> str:
    """Store a response too large to return in S3; a presigned GET URL for it."""
    from functions.storage.s3 import offload_response as to_s3

    return to_s3(body, content_type, uri, expires_in, client)


def _store(uri: str, client: Any) -> Store:
    scheme = uri[:5].lower()
    try:
        if scheme == "gs://":
            from functions.storage import gcs

            return gcs.GcsStore(gcs.parse(uri), client)
        from functions.storage import s3

        return s3.S3Store(s3.parse(uri), client)
    except ValueError as exc:
        raise ModelNotReady(f"MODEL_URI: {exc}") from exc
