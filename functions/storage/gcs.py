"""Cloud Storage for the model cache: ``MODEL_URI=gs://bucket/prefix/``.

google-cloud-storage is imported only here and only when a ``gs://`` URI is used. It finds
credentials the usual way: on Cloud Functions and Cloud Run, the service account the
function runs as; elsewhere GOOGLE_APPLICATION_CREDENTIALS or ``gcloud auth
application-default login``; with STORAGE_EMULATOR_HOST set, an emulator and no credentials.

The cache is keyed by each object's generation, which Cloud Storage changes on every write.
An object is downloaded at the generation listed (a later overwrite cannot slip into the
copy) and checked against its listed size and CRC32C.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, BinaryIO

from functions.errors import ModelNotReady, ServiceError
from functions.storage.cache import Incomplete, Location, RemoteObject, relative_key, too_many

SCHEME = "gs://"
BUCKET = r"[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]"
LIST_TIMEOUT = 30.0
"""Seconds for listing, retries of transient failures included."""
READ_TIMEOUT = 60.0
"""Seconds without a byte before a download try is given up."""


def parse(uri: str) -> Location:
    """``gs://bucket/prefix`` to a location; `ValueError` with a message if malformed."""
    return Location.parse(uri, SCHEME, BUCKET)


def gcs_client() -> Any:
    from google.cloud import storage

    # project=None: reading objects needs no project, and none may be configured.
    return storage.Client(project=None)


class GcsStore:
    """A prefix of a Cloud Storage bucket, read with google-cloud-storage."""

    kind = "Cloud Storage"
    version_field = "generation"

    def __init__(self, location: Location, client: Any = None) -> None:
        self.location = location
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = gcs_client()
            except Exception as exc:
                raise gcs_failure(exc, f"connecting to {self.location}", self.location) from exc
        return self._client

    def list(self) -> list[RemoteObject]:
        from google.api_core.retry import Retry

        location = self.location
        found: list[RemoteObject] = []
        try:
            blobs = self.client.list_blobs(location.bucket, prefix=location.prefix,
                                           timeout=(10, READ_TIMEOUT),
                                           retry=Retry(timeout=LIST_TIMEOUT))
            for blob in blobs:
                if blob.name.endswith("/"):
                    continue
                found.append(RemoteObject(blob.name, relative_key(location, blob.name),
                                          int(blob.size or 0), str(blob.generation),
                                          str(blob.crc32c or "")))
                too_many(location, len(found))
        except ServiceError:
            raise
        except Exception as exc:
            raise gcs_failure(exc, f"listing {location}", location) from exc
        return found

    def download(self, obj: RemoteObject, target: Path) -> str | None:
        import requests
        from google.api_core import exceptions as api

        location = self.location
        blob = self.client.bucket(location.bucket).blob(obj.key, generation=int(obj.version))
        with open(target, "wb") as out:
            checked = _Checked(out)
            try:
                # Retried by the cache, which starts each try over; checked here, not by
                # the library, against what was listed.
                blob.download_to_file(checked, checksum=None, retry=None,
                                      timeout=(10, READ_TIMEOUT))
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError, api.ServerError,
                    api.TooManyRequests) as exc:
                raise Incomplete(f"the connection broke after {checked.size:,} of "
                                 f"{obj.size:,} bytes: {type(exc).__name__}") from exc
            except Exception as exc:
                raise gcs_failure(exc, f"downloading {location.object_uri(obj.key)}",
                                  location) from exc
        if checked.size != obj.size:
            raise Incomplete(f"got {checked.size:,} of {obj.size:,} bytes")
        if obj.checksum and checked.crc32c() != obj.checksum:
            raise Incomplete("its content does not match its CRC32C")
        return obj.version


class _Checked:
    """A file the download writes through, counting bytes and computing their CRC32C."""

    def __init__(self, out: BinaryIO) -> None:
        import google_crc32c

        self._out = out
        self._crc = google_crc32c.Checksum()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._crc.update(data)
        self.size += len(data)
        return self._out.write(data)

    def crc32c(self) -> str:
        """The CRC32C as Cloud Storage lists it: base64 of the big-endian 4 bytes."""
        return base64.b64encode(self._crc.digest()).decode()


def gcs_failure(exc: Exception, doing: str, location: Location) -> ModelNotReady:
    """A google-cloud-storage / google-auth failure as a message that says what to fix."""
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(exc, auth.DefaultCredentialsError):
        return ModelNotReady(f"{doing} failed: no Google credentials were found; run the "
                             "function as a service account that may read the bucket, or set "
                             "GOOGLE_APPLICATION_CREDENTIALS")
    if isinstance(exc, (auth.RefreshError, api.Unauthorized)):
        return ModelNotReady(f"{doing} failed: Cloud Storage refused the credentials "
                             f"({_short(exc)}); check the function's service account")
    if isinstance(exc, api.Forbidden):
        return ModelNotReady(f"{doing} failed: access denied; the function's service account "
                             f"needs roles/storage.objectViewer on gs://{location.bucket}")
    if isinstance(exc, api.NotFound):
        if doing.startswith("listing"):
            return ModelNotReady(f"{doing} failed: the bucket {location.bucket!r} does not "
                                 "exist; check MODEL_URI")
        return ModelNotReady(f"{doing} failed: the object changed or was deleted after it was "
                             "listed; retry once the model's upload is complete")
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, api.RetryError)):
        return ModelNotReady(f"{doing} failed: cannot connect to Cloud Storage "
                             f"({type(exc).__name__}); check the network (and "
                             "STORAGE_EMULATOR_HOST, if set)")
    if isinstance(exc, api.GoogleAPICallError):
        return ModelNotReady(f"{doing} failed: Cloud Storage answered {exc.code}: "
                             f"{_short(exc)}")
    return ModelNotReady(f"{doing} failed: {type(exc).__name__}: {str(exc)[:200]}")


def _short(exc: Exception) -> str:
    from google.api_core import exceptions as api

    if isinstance(exc, api.GoogleAPICallError):
        return str(exc.message)[:200]
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
