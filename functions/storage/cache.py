"""The local cache of models fetched from an object store, the same for S3 and Cloud Storage.

    <MODEL_CACHE_DIR>/<source>/           one per bucket and prefix
        .lock                             held (exclusive) by the one process downloading
        <fingerprint>/                    a complete copy, with .source.json saying from where
        <fingerprint>.lock                held (shared) by every process using that copy
        .partial-<pid>-<random>/          a download under way, renamed when complete

The fingerprint hashes every object's path, size and version (S3's ETag, Cloud Storage's
generation): an unchanged prefix is a cache hit after one LIST request, a changed object
makes a new copy (unchanged files are hard-linked from the old one, so only what changed is
downloaded). A copy appears only through an atomic rename after every file was checked
(size, and the store's checksum), so a process never loads a half-written model; processes
that start together wait for the first one's download instead of repeating it. Copies that
no process uses any more are deleted after a new one is complete.

What differs between stores (listing, one download, their errors) sits behind `Store`.
"""

from __future__ import annotations

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
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from functions.errors import ModelNotReady
from modelmeta import METADATA_PATH

log = logging.getLogger(__name__)

MAX_OBJECTS = 10_000
"""A SavedModel is a handful of files; more than this under a prefix is a wrong prefix."""
DOWNLOAD_ATTEMPTS = 3
"""Tries per object when the connection drops mid-body (each one starts over)."""
SOURCE_FILE = ".source.json"

_in_use: dict[Path, int] = {}
"""Copies this process uses, with the open descriptor of the shared lock that says so.
They are kept for the life of the process: a loaded model is never deleted under it."""


@dataclass(frozen=True)
class Location:
    """A bucket and a prefix in one store; `parse` reads ``SCHEME://bucket/prefix``."""

    scheme: str
    """``s3://`` or ``gs://``."""
    bucket: str
    prefix: str
    """Empty (the whole bucket) or ending with "/": MODEL_URI always names a directory."""

    @classmethod
    def parse(cls, uri: str, scheme: str, bucket_pattern: str) -> Location:
        """`ValueError` with a message saying how to write it if `uri` is malformed."""
        if not uri.lower().startswith(scheme):
            raise ValueError(f"{uri!r} is not an {scheme} URI")
        bucket, _, prefix = uri[len(scheme):].partition("/")
        if not re.fullmatch(bucket_pattern, bucket):
            raise ValueError(f"{uri!r} does not name a bucket: write {scheme}BUCKET/PREFIX/")
        prefix = prefix.strip("/")
        return cls(scheme, bucket, prefix + "/" if prefix else "")

    def __str__(self) -> str:
        return f"{self.scheme}{self.bucket}/{self.prefix}"

    def object_uri(self, key: str) -> str:
        return f"{self.scheme}{self.bucket}/{key}"


@dataclass(frozen=True)
class RemoteObject:
    key: str
    relative: str
    """The key below the prefix: the file's path inside the model directory."""
    size: int
    version: str
    """What changes when the content does: S3's ETag, Cloud Storage's generation."""
    checksum: str = ""
    """The store's content hash as listed, if it has one beside `version` (Cloud Storage's
    CRC32C); S3's single-part ETag is its MD5 and is checked from `version`."""


class Incomplete(Exception):
    """One download attempt broke off or delivered other bytes than listed: worth a retry."""


class Store(Protocol):
    """One object store at one location: what the cache needs from it."""

    location: Location
    kind: str
    """The store's name in messages: "S3", "Cloud Storage"."""
    version_field: str
    """The name `RemoteObject.version` has in .source.json: "etag", "generation"."""

    def list(self) -> list[RemoteObject]:
        """Every object under the prefix, folder markers skipped; `ModelNotReady` else."""
        ...

    def download(self, obj: RemoteObject, target: Path) -> str | None:
        """Write `obj` to `target`, checked; the store's version id of what was written.

        Raises `Incomplete` for a try worth repeating, `ModelNotReady` for a failure that
        another try cannot fix, OSError for the local disk."""
        ...


def relative_key(location: Location, key: str) -> str:
    """The path of `key` inside the model directory; `ModelNotReady` if it would escape."""
    relative = key[len(location.prefix):]
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(p in ("..", ".") for p in parts) \
            or "\\" in relative or "\0" in relative:
        raise ModelNotReady(f"the object key {key!r} under {location} cannot be a file "
                            "inside the model directory")
    return relative


def too_many(location: Location, count: int) -> None:
    if count > MAX_OBJECTS:
        raise ModelNotReady(f"{location} holds more than {MAX_OBJECTS:,} objects; "
                            "MODEL_URI must name one SavedModel directory")


def fetch(store: Store, cache_dir: str | Path, *, only: Collection[str] | None = None,
          require: str | None = "saved_model.pb", lock_timeout: float = 600.0) -> Path:
    """The local copy of the model directory in `store`, downloaded unless cached.

    `only` limits the copy to those paths (relative to the prefix); `require` is a file the
    directory must hold to be the right one.
    """
    location = store.location
    objects = _wanted(store, store.list(), only, require)
    root = Path(cache_dir) / _source_id(location)
    final = root / _fingerprint(objects)
    try:
        if _use(final):
            log.info("model %s: cached at %s", location, final)
            return final
        root.mkdir(parents=True, exist_ok=True)
        with _exclusive(root / ".lock", lock_timeout, str(location)):
            if not _use(final):
                _download_all(store, objects, root, final)
                _prune(root, keep=final)
                if not _use(final):
                    raise ModelNotReady(f"the copy of {location} at {final} vanished after "
                                        "download")
    except OSError as exc:
        raise ModelNotReady(f"cannot use the model cache {cache_dir}: {exc.strerror or exc}; "
                            "set MODEL_CACHE_DIR to a writable directory (on Lambda: under "
                            "/tmp)") from exc
    return final


def _wanted(store: Store, objects: list[RemoteObject], only: Collection[str] | None,
            require: str | None) -> list[RemoteObject]:
    location = store.location
    if not objects:
        raise ModelNotReady(f"there is no object under {location}; MODEL_URI must name the "
                            f"{store.kind} folder holding the prepared model (saved_model.pb, "
                            f"variables/, {METADATA_PATH})")
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


def _source_id(location: Location) -> str:
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{location.bucket}-{location.prefix}")[:60]
    digest = hashlib.sha256(str(location).encode()).hexdigest()[:12]
    return f"{readable.strip('-')}-{digest}"


def _fingerprint(objects: list[RemoteObject]) -> str:
    listing = json.dumps([[o.relative, o.size, o.version] for o in objects])
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


def _download_all(store: Store, objects: list[RemoteObject], root: Path, final: Path) -> None:
    """Download into a fresh partial directory and rename it to `final` once complete."""
    location = store.location
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
    reused = _reusable(root, store)
    downloaded = 0
    try:
        partial.mkdir()
        versions: dict[str, str | None] = {}
        for obj in objects:
            target = partial / obj.relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = reused.get((obj.relative, obj.size, obj.version))
            if source is not None and _link(source, target):
                versions[obj.key] = None
                continue
            versions[obj.key] = _download(store, obj, target)
            downloaded += obj.size
        (partial / SOURCE_FILE).write_text(json.dumps({
            "uri": str(location),
            "objects": [{"key": o.key, "size": o.size, store.version_field: o.version,
                         "version_id": versions.get(o.key)} for o in objects],
            "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=1))
        os.rename(partial, final)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    log.info("model %s: downloaded %d of %d bytes in %.2f s into %s", location, downloaded,
             total, time.monotonic() - started, final)


def _download(store: Store, obj: RemoteObject, target: Path) -> str | None:
    """`store.download`, tried again when a try breaks off; the disk filling up is final."""
    where = store.location.object_uri(obj.key)
    problem = ""
    for _attempt in range(DOWNLOAD_ATTEMPTS):
        try:
            return store.download(obj, target)
        except Incomplete as exc:
            problem = str(exc)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ModelNotReady(f"the disk filled up while downloading {where} into "
                                    f"{target.parent}; give the function more ephemeral "
                                    "storage or set MODEL_CACHE_DIR") from exc
            problem = f"{type(exc).__name__}: {exc}"
        log.warning("download of %s incomplete (%s); retrying", where, problem)
    raise ModelNotReady(f"downloading {where} failed {DOWNLOAD_ATTEMPTS} times: {problem}; "
                        "nothing was loaded, the next cold start tries again")


def _reusable(root: Path, store: Store) -> dict[tuple[str, int, str], Path]:
    """Files of complete copies already here, by (path, size, version), to hard-link."""
    files: dict[tuple[str, int, str], Path] = {}
    prefix = store.location.prefix
    for source_file in root.glob(f"*/{SOURCE_FILE}"):
        copy = source_file.parent
        try:
            source = json.loads(source_file.read_text())
            for item in source["objects"]:
                relative = item["key"][len(prefix):]
                files[(relative, int(item["size"]), str(item[store.version_field]))] = \
                    copy / relative
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return files


def _link(source: Path, target: Path) -> bool:
    try:
        os.link(source, target)
        return True
    except OSError:
        return False


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
