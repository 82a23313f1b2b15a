"""S3 (and S3-compatible stores) for the model cache, and large responses written back.

boto3 is imported only here and only when an ``s3://`` URI is used; it finds credentials
and the endpoint the usual way (the function's role; AWS_ENDPOINT_URL_S3 for an
S3-compatible store). An object is downloaded with ``If-Match`` its listed ETag and checked
against its listed size and, for a single-part upload not encrypted with KMS or a customer
key, against the MD5 that ETag is.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from pathlib import Path
from typing import Any

from functions.errors import ModelNotReady, ServiceError
from functions.storage.cache import Incomplete, Location, RemoteObject, relative_key, too_many

SCHEME = "s3://"
BUCKET = r"[a-z0-9][a-z0-9.\-_]{1,254}"
CHUNK_BYTES = 1 << 20
_SINGLE_PART_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                     "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId",
                     "UnrecognizedClientException"}


def parse(uri: str) -> Location:
    """``s3://bucket/prefix`` to a location; `ValueError` with a message if malformed."""
    return Location.parse(uri, SCHEME, BUCKET)


def s3_client(read_timeout: float = 60.0) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=10, read_timeout=read_timeout, signature_version="s3v4",
                    retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client("s3", config=config)


class S3Store:
    """A prefix of an S3 bucket, read with boto3 (`client`, or one made the usual way)."""

    kind = "S3"
    version_field = "etag"

    def __init__(self, location: Location, client: Any = None) -> None:
        self.location = location
        self.client = client or s3_client()

    def list(self) -> list[RemoteObject]:
        location = self.location
        found: list[RemoteObject] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=location.bucket, Prefix=location.prefix)
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    if key.endswith("/"):
                        continue
                    found.append(RemoteObject(key, relative_key(location, key),
                                              int(item["Size"]), str(item.get("ETag", ""))))
                    too_many(location, len(found))
        except ServiceError:
            raise
        except Exception as exc:
            raise s3_failure(exc, f"listing {location}", location) from exc
        return found

    def download(self, obj: RemoteObject, target: Path) -> str | None:
        from botocore.exceptions import (
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )

        location = self.location
        written = 0
        try:
            response = self.client.get_object(Bucket=location.bucket, Key=obj.key,
                                              IfMatch=obj.version)
            md5 = hashlib.md5(usedforsecurity=False) if _md5_applies(obj, response) else None
            with open(target, "wb") as out:
                for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                    out.write(chunk)
                    written += len(chunk)
                    if md5 is not None:
                        md5.update(chunk)
        except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError,
                ConnectionClosedError) as exc:
            raise Incomplete(f"the connection broke after {written:,} of {obj.size:,} bytes: "
                             f"{type(exc).__name__}") from exc
        except OSError:
            raise
        except Exception as exc:
            raise s3_failure(exc, f"downloading {location.object_uri(obj.key)}",
                             location) from exc
        expected = _SINGLE_PART_ETAG.match(obj.version)
        if written != obj.size:
            raise Incomplete(f"got {written:,} of {obj.size:,} bytes")
        if md5 is not None and expected and md5.hexdigest() != expected.group(1):
            raise Incomplete("its content does not match its ETag (MD5)")
        return response.get("VersionId")


def _md5_applies(obj: RemoteObject, response: dict[str, Any]) -> bool:
    """A single-part upload's ETag is its MD5, unless the object is encrypted with KMS or a
    customer key."""
    encryption = str(response.get("ServerSideEncryption", ""))
    return bool(_SINGLE_PART_ETAG.match(obj.version)) and not encryption.startswith("aws:kms") \
        and "SSECustomerAlgorithm" not in response


def offload_response(body: bytes, content_type: str, uri: str, expires_in: int,
                     client: Any = None) -> str:
    """Store a response too large to return; a presigned GET URL for it."""
    try:
        location = parse(uri)
    except ValueError as exc:
        raise ServiceError(f"RESPONSE_OFFLOAD_URI: {exc}") from exc
    key = f"{location.prefix}{time.strftime('%Y/%m/%d')}/{uuid.uuid4().hex}"
    client = client or s3_client()
    try:
        client.put_object(Bucket=location.bucket, Key=key, Body=body, ContentType=content_type)
        return str(client.generate_presigned_url(
            "get_object", Params={"Bucket": location.bucket, "Key": key}, ExpiresIn=expires_in))
    except Exception as exc:
        failure = s3_failure(exc, f"storing the response in {location}", location,
                             "RESPONSE_OFFLOAD_URI")
        raise ServiceError(f"the response is too large to return directly, and {failure.message}"
                           ) from exc


def s3_failure(exc: Exception, doing: str, location: Location,
               setting: str = "MODEL_URI") -> ModelNotReady:
    """A boto3/botocore failure as a message that says what to fix."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ModelNotReady(f"{doing} failed: no AWS credentials were found; give the "
                             "function a role that may read the bucket, or set "
                             "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, EndpointConnectionError):
        return ModelNotReady(f"{doing} failed: cannot connect to S3 ({exc}); check the region, "
                             "the network and AWS_ENDPOINT_URL_S3")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "unknown"
        message = str(error.get("Message", ""))[:200]
        if code in _CREDENTIAL_CODES:
            return ModelNotReady(f"{doing} failed: S3 refused the credentials ({code}: "
                                 f"{message}); check the function's role or its AWS keys")
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return ModelNotReady(f"{doing} failed: access denied; the function's role needs "
                                 f"s3:ListBucket on {location.bucket} and s3:GetObject on "
                                 f"{location}*")
        if code == "NoSuchBucket":
            return ModelNotReady(f"{doing} failed: the bucket {location.bucket!r} does not "
                                 f"exist; check {setting}")
        if code in ("NoSuchKey", "404"):
            return ModelNotReady(f"{doing} failed: the object was deleted after it was listed; "
                                 "retry once the model's upload is complete")
        if code in ("PreconditionFailed", "412"):
            return ModelNotReady(f"{doing} failed: the object changed while it was being "
                                 "downloaded; retry once the model's upload is complete")
        return ModelNotReady(f"{doing} failed: S3 answered {code}: {message}")
    return ModelNotReady(f"{doing} failed: {type(exc).__name__}: {str(exc)[:200]}")
