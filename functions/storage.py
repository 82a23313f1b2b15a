"""Models kept in S3, fetched into a local cache at cold start; large results written back.

``MODEL_URI=s3://bucket/prefix/`` names a prepared SavedModel directory in S3 (the one
holding ``saved_model.pb``, ``variables/`` and ``assets.extra/model_metadata.json``).
`resolve_model_uri` lists it, downloads what is not cached yet into MODEL_CACHE_DIR (on
Lambda, ``/tmp``) and returns the local directory the backend loads:

    <MODEL_CACHE_DIR>/<source>/           one per bucket and prefix
        .lock                             held (exclusive) by the one process downloading
        <fingerprint>/                    a complete copy, with .source.json saying from where
        <fingerprint>.lock                held (shared) by every process using that copy
        .partial-<pid>-<random>/          a download under way, renamed when complete

The fingerprint hashes every object's key, size and ETag: an unchanged prefix is a cache
hit after one LIST request, a changed object makes a new copy (unchanged files are
hard-linked from the old one, so only what changed is downloaded). A copy appears only
through an atomic rename after every file was checked against the listed size (and MD5,
where the ETag is one), so a process never loads a half-written model; processes that
start together wait for the first one's download instead of repeating it. Copies that no
process uses any more are deleted after a new one is complete.

boto3 is imported only here and only when an ``s3://`` URI is used; it finds credentials
and the endpoint the usual way (the function's role; AWS_ENDPOINT_URL_S3 for an
S3-compatible store). Every failure becomes a `ModelNotReady` (503) whose message says
what to fix, and the function answers it on every request until a new cold start.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from functions.config import REMOTE_BACKENDS, Settings
from functions.errors import ModelNotReady, ServiceError
from modelmeta import METADATA_PATH

log = logging.getLogger(__name__)

S3_SCHEME = "s3://"
MAX_OBJECTS = 10_000
"""A SavedModel is a handful of files; more than this under a prefix is a wrong prefix."""
DOWNLOAD_ATTEMPTS = 3
"""Tries per object when the connection drops mid-body (each one starts over)."""
CHUNK_BYTES = 1 << 20
SOURCE_FILE = ".source.json"
_SINGLE_PART_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                     "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId",
                     "UnrecognizedClientException"}

_in_use: dict[Path, int] = {}
"""Copies this process uses, with the open descriptor of the shared lock that says so.
They are kept for the life of the process: a loaded model is never deleted under it."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    """Empty (the whole bucket) or ending with "/": MODEL_URI always names a directory."""

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """``s3://bucket/prefix`` to a location; `ValueError` with a message if malformed."""
        if not is_s3_uri(uri):
            raise ValueError(f"{uri!r} is not an s3:// URI")
        bucket, _, prefix = uri[len(S3_SCHEME):].partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-_]{1,254}", bucket):
            raise ValueError(f"{uri!r} does not name a bucket: write s3://BUCKET/PREFIX/")
        prefix = prefix.strip("/")
        return cls(bucket, prefix + "/" if prefix else "")

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class RemoteObject:
    key: str
    relative: str
    size: int
    etag: str


def is_s3_uri(uri: str | None) -> bool:
    return bool(uri) and str(uri).lower().startswith(S3_SCHEME)


def resolve_model_uri(settings: Settings) -> Settings:
    """Settings whose model paths are local: an s3:// MODEL_URI is fetched into the cache.

    A TF Serving backend needs only the model's metadata from MODEL_URI (unless
    MODEL_METADATA names it), so only that file is fetched for it.
    """
    if not is_s3_uri(settings.model_uri):
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

    `only` limits the copy to those paths (relative to the prefix); `require` is a
    file the directory must hold to be the right one. Raises
    `ModelNotReady` for a missing bucket, prefix or object, refused credentials, an
    unreachable endpoint, a full disk or a download that stays incomplete.
    """
    try:
        location = S3Location.parse(uri)
    except ValueError as exc:
        raise ModelNotReady(f"MODEL_URI: {exc}") from exc
    client = client or s3_client()
    objects = _wanted(location, list_objects(client, location), only, require)
    root = Path(cache_dir) / _source_id(location)
    final = root / _fingerprint(objects)
    try:
        if _use(final):
            log.info("model %s: cached at %s", location, final)
            return final
        root.mkdir(parents=True, exist_ok=True)
        with _exclusive(root / ".lock", lock_timeout, str(location)):
            if not _use(final):
                _download_all(client, location, objects, root, final)
                _prune(root, keep=final)
                if not _use(final):
                    raise ModelNotReady(f"the copy of {location} at {final} vanished after "
                                        "download")
    except OSError as exc:
        raise ModelNotReady(f"cannot use the model cache {cache_dir}: {exc.strerror or exc}; "
                            "set MODEL_CACHE_DIR to a writable directory (on Lambda: under "
                            "/tmp)") from exc
    return final


def s3_client(read_timeout: float = 60.0) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=10, read_timeout=read_timeout, signature_version="s3v4",
                    retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client("s3", config=config)


def list_objects(client: Any, location: S3Location) -> list[RemoteObject]:
    """Every object under the prefix (folder markers skipped), with size and ETag."""
    found: list[RemoteObject] = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=location.prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"]
                if key.endswith("/"):
                    continue
                found.append(RemoteObject(key, _relative(location, key), int(item["Size"]),
                                          str(item.get("ETag", ""))))
                if len(found) > MAX_OBJECTS:
                    raise ModelNotReady(f"{location} holds more than {MAX_OBJECTS:,} objects; "
                                        "MODEL_URI must name one SavedModel directory")
    except ServiceError:
        raise
    except Exception as exc:
        raise _s3_failure(exc, f"listing {location}", location) from exc
    return found


def offload_response(body: bytes, content_type: str, uri: str, expires_in: int,
                     client: Any = None) -> str:
    """Store a response too large to return; a presigned GET URL for it."""
    try:
        location = S3Location.parse(uri)
    except ValueError as exc:
        raise ServiceError(f"RESPONSE_OFFLOAD_URI: {exc}") from exc
    key = f"{location.prefix}{time.strftime('%Y/%m/%d')}/{uuid.uuid4().hex}"
    client = client or s3_client()
    try:
        client.put_object(Bucket=location.bucket, Key=key, Body=body, ContentType=content_type)
        return client.generate_presigned_url(
            "get_object", Params={"Bucket": location.bucket, "Key": key}, ExpiresIn=expires_in)
    except Exception as exc:
        failure = _s3_failure(exc, f"storing the response in {location}", location,
                              "RESPONSE_OFFLOAD_URI")
        raise ServiceError(f"the response is too large to return directly, and {failure.message}"
                           ) from exc


# -- the cache -----------------------------------------------------------------------------


def _wanted(location: S3Location, objects: list[RemoteObject], only: Collection[str] | None,
            require: str | None) -> list[RemoteObject]:
    if not objects:
        raise ModelNotReady(f"there is no object under {location}; MODEL_URI must name the "
                            "S3 folder holding the prepared model (saved_model.pb, variables/, "
                            f"{METADATA_PATH})")
    by_path = {o.relative: o for o in objects}
    if only is not None:
        missing = sorted(set(only) - set(by_path))
        if missing:
            raise ModelNotReady(f"{location} has no {', '.join(missing)}; MODEL_URI must name "
                                "a model prepared with `modelprep wrap`")
        return sorted((by_path[p] for p in only), key=lambda o: o.relative)
    if require and require not in by_path:
        deeper = sorted(p for p in by_path if p.endswith("/" + require))
        hint = (f"; it is at {location}{deeper[0][:-len(require)]}" if deeper
                else "; MODEL_URI must name the model directory itself")
        raise ModelNotReady(f"{location} holds {len(objects)} object(s) but no "
                            f"{require}{hint}")
    return sorted(objects, key=lambda o: o.relative)


def _relative(location: S3Location, key: str) -> str:
    relative = key[len(location.prefix):]
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(p in ("..", ".") for p in parts) \
            or "\\" in relative or "\0" in relative:
        raise ModelNotReady(f"the object key {key!r} under {location} cannot be a file "
                            "inside the model directory")
    return relative


def _source_id(location: S3Location) -> str:
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{location.bucket}-{location.prefix}")[:60]
    digest = hashlib.sha256(str(location).encode()).hexdigest()[:12]
    return f"{readable.strip('-')}-{digest}"


def _fingerprint(objects: list[RemoteObject]) -> str:
    listing = json.dumps([[o.relative, o.size, o.etag] for o in objects])
    return hashlib.sha256(listing.encode()).hexdigest()[:20]


def _use(copy: Path) -> bool:
    """Mark `copy` as used by this process (shared lock) if it exists; True if it does."""
    if copy in _in_use:
        if copy.is_dir():
            return True
        os.close(_in_use.pop(copy))
    if not copy.parent.is_dir():
        return False
    fd = os.open(f"{copy}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # the pruner holds it exclusively only while deleting
    if (copy / SOURCE_FILE).is_file():
        _in_use[copy] = fd
        return True
    os.close(fd)
    return False


@contextmanager
def _exclusive(path: Path, timeout: float, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path`, waiting at most `timeout` seconds for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ModelNotReady(f"another process has been downloading {what} for "
                                        f"more than {timeout:.0f} s (MODEL_LOCK_TIMEOUT); "
                                        "retry shortly", headers={"Retry-After": "5"}) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _download_all(client: Any, location: S3Location, objects: list[RemoteObject], root: Path,
                  final: Path) -> None:
    """Download into a fresh partial directory and rename it to `final` once complete."""
    for stale in root.glob(".partial-*"):  # left by a process that died mid-download
        shutil.rmtree(stale, ignore_errors=True)
    total = sum(o.size for o in objects)
    free = shutil.disk_usage(root).free
    if total > free:
        raise ModelNotReady(f"the model at {location} is {total:,} bytes but {root} has only "
                            f"{free:,} bytes free; give the function more ephemeral storage "
                            "(on Lambda: EphemeralStorage) or set MODEL_CACHE_DIR")
    partial = root / f".partial-{os.getpid()}-{secrets.token_hex(4)}"
    started = time.monotonic()
    reused = _reusable(root, location)
    downloaded = 0
    try:
        partial.mkdir()
        versions: dict[str, str | None] = {}
        for obj in objects:
            target = partial / obj.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = reused.get((obj.relative, obj.size, obj.etag))
            if source is not None and _link(source, target):
                versions[obj.key] = None
                continue
            versions[obj.key] = _download(client, location, obj, target)
            downloaded += obj.size
        (partial / SOURCE_FILE).write_text(json.dumps({
            "uri": str(location),
            "objects": [{"key": o.key, "size": o.size, "etag": o.etag,
                         "version_id": versions.get(o.key)} for o in objects],
            "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=1))
        os.rename(partial, final)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    log.info("model %s: downloaded %d of %d bytes in %.2f s into %s", location, downloaded,
             total, time.monotonic() - started, final)


def _reusable(root: Path, location: S3Location) -> dict[tuple[str, int, str], Path]:
    """Files of complete copies already here, by (path, size, ETag), to hard-link."""
    files: dict[tuple[str, int, str], Path] = {}
    for source_file in root.glob(f"*/{SOURCE_FILE}"):
        copy = source_file.parent
        try:
            source = json.loads(source_file.read_text())
            for item in source["objects"]:
                relative = item["key"][len(location.prefix):]
                files[(relative, int(item["size"]), str(item["etag"]))] = copy / relative
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return files


def _link(source: Path, target: Path) -> bool:
    try:
        os.link(source, target)
        return True
    except OSError:
        return False


def _download(client: Any, location: S3Location, obj: RemoteObject, target: Path) -> str | None:
    """Write one object to `target`, checked against its listed size and MD5; its version."""
    from botocore.exceptions import (
        ConnectionClosedError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    where = f"{S3_SCHEME}{location.bucket}/{obj.key}"
    problem = ""
    for _attempt in range(DOWNLOAD_ATTEMPTS):
        written = 0
        try:
            response = client.get_object(Bucket=location.bucket, Key=obj.key, IfMatch=obj.etag)
            md5 = hashlib.md5(usedforsecurity=False) if _md5_applies(obj, response) else None
            with open(target, "wb") as out:
                for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                    out.write(chunk)
                    written += len(chunk)
                    if md5 is not None:
                        md5.update(chunk)
            expected = _SINGLE_PART_ETAG.match(obj.etag)
            if written != obj.size:
                problem = f"got {written:,} of {obj.size:,} bytes"
            elif md5 is not None and expected and md5.hexdigest() != expected.group(1):
                problem = "its content does not match its ETag (MD5)"
            else:
                return response.get("VersionId")
        except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError,
                ConnectionClosedError) as exc:
            problem = f"the connection broke after {written:,} of {obj.size:,} bytes: " \
                      f"{type(exc).__name__}"
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ModelNotReady(f"the disk filled up while downloading {where} into "
                                    f"{target.parent}; give the function more ephemeral "
                                    "storage or set MODEL_CACHE_DIR") from exc
            problem = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            raise _s3_failure(exc, f"downloading {where}", location) from exc
        log.warning("download of %s incomplete (%s); retrying", where, problem)
    raise ModelNotReady(f"downloading {where} failed {DOWNLOAD_ATTEMPTS} times: {problem}; "
                        "nothing was loaded, the next cold start tries again")


def _md5_applies(obj: RemoteObject, response: dict[str, Any]) -> bool:
    """A single-part upload's ETag is its MD5, unless the object is encrypted with KMS or a
    customer key."""
    encryption = str(response.get("ServerSideEncryption", ""))
    return bool(_SINGLE_PART_ETAG.match(obj.etag)) and not encryption.startswith("aws:kms") \
        and "SSECustomerAlgorithm" not in response


def _prune(root: Path, keep: Path) -> None:
    """Delete the copies no process uses (no shared lock on them) except `keep`."""
    for lock_file in root.glob("*.lock"):
        copy = lock_file.with_suffix("")
        if copy == keep or lock_file.name == ".lock" or copy in _in_use:
            continue
        fd = os.open(lock_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            shutil.rmtree(copy, ignore_errors=True)
            lock_file.unlink(missing_ok=True)
            log.info("deleted the unused model copy %s", copy)
        finally:
            os.close(fd)


# -- errors --------------------------------------------------------------------------------


def _s3_failure(exc: Exception, doing: str, location: S3Location,
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
