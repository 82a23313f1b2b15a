"""Images sent as WeChat cloud file ids: ``{"image": {"file_id": "cloud://ENV.BUCKET/path"}}``.

``wx.cloud.callContainer`` carries at most 100 KB per request and waits at most 15 s, so a
photo cannot ride inline: the mini-program uploads it with ``wx.cloud.uploadFile`` and sends
the file id instead (also as items of ``images``). This module turns those ids into bytes:

    file ids ─▶ POST {WECHAT_API_URL}/tcb/batchdownloadfile   one call for every id
             ─▶ GET download_url                              each file, size-capped
             ─▶ the same checks as any image (request.parse / request.images)

Inside WeChat Cloud Run, with its open-API service turned on, the container calls
``http://api.weixin.qq.com`` without an access token (the platform signs the call);
elsewhere ``WECHAT_APPID`` and ``WECHAT_APPSECRET`` get one from ``cgi-bin/stable_token``,
kept until shortly before it expires. Only ids of ``CLOUD_ENV`` are accepted: the function
never fetches another environment's files for a caller. One deadline,
``CLOUD_FILE_TIMEOUT``, covers the token, the resolution and every download, so the whole
request fits in callContainer's 15 s.

Every failure is a `ServiceError` with the id in its message: a malformed id or one without
a configured environment is 400, another environment's file 403, a file that does not
exist 404, an open API that fails 502 and one that is too slow 504.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from functions.config import Settings
from functions.errors import (
    BadGateway,
    BadRequest,
    Forbidden,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    clip,
)

FILE_ID = re.compile(r"cloud://([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.([A-Za-z0-9_.-]{1,128})/(.+)")
"""``cloud://{env}.{bucket}/{path}``, as ``wx.cloud.uploadFile`` returns it."""
MAX_AGE_SECONDS = 600
"""How long the download URLs WeChat hands out stay valid: only for this request."""
CHUNK_BYTES = 64 * 1024
TOKEN_MARGIN_SECONDS = 300
"""A cached access token is renewed this long before WeChat says it expires."""
FILE_NOT_FOUND = -503003  # STORAGE_FILE_NONEXIST, CloudBase's storage error codes
NO_PERMISSION = -503002  # STORAGE_EXCEED_AUTHORITY
_TOKEN_ERRORS = {40001, 40014, 41001, 42001}


@dataclass(frozen=True)
class CloudFile:
    """An image named by its cloud file id, not yet fetched."""

    file_id: str
    env: str


def cloud_file(value: dict[str, Any], where: str) -> CloudFile:
    """``{"file_id": "cloud://..."}`` from a JSON body, checked for its shape only."""
    if set(value) != {"file_id"}:
        others = ", ".join(clip(key, 20) for key in sorted(value) if key != "file_id")
        raise BadRequest(f'{where} must be {{"file_id": "cloud://..."}} alone; '
                         f"remove {clip(others, 60)}")
    file_id = value["file_id"]
    if not isinstance(file_id, str) or not file_id.strip():
        raise BadRequest(f"{where}.file_id must be a cloud file id string "
                         "(cloud://ENV.BUCKET/path, as wx.cloud.uploadFile returns it)")
    match = FILE_ID.fullmatch(file_id.strip())
    if match is None:
        raise BadRequest(f"{where}.file_id {_shown(file_id)} is not a cloud file id; expected "
                         "cloud://ENV.BUCKET/path, as wx.cloud.uploadFile returns it")
    return CloudFile(match.group(0), match.group(1))


Pending = tuple[str, bytes | str | CloudFile]
"""An image as the body gave it: where, then file bytes, base64 text or a cloud file id."""


def fetch_cloud_files(pending: list[Pending], settings: Settings
                      ) -> list[tuple[str, bytes | str]]:
    """`pending` with every `CloudFile` replaced by the file's bytes (one batch resolution)."""
    wanted = [(where, item) for where, item in pending if isinstance(item, CloudFile)]
    if not wanted:
        return [(where, item) for where, item in pending if not isinstance(item, CloudFile)]
    env = settings.cloud_env
    if not env:
        raise BadRequest(f"{wanted[0][0]} is a cloud file id, but this function has no cloud "
                         "environment configured (CLOUD_ENV); send the image inline")
    for where, item in wanted:
        if item.env != env:
            raise Forbidden(f"{where}: {_shown(item.file_id)} belongs to the cloud environment "
                            f"{clip(item.env)}; this function accepts files of {env} only")
    deadline = time.monotonic() + settings.cloud_file_timeout
    urls = _download_urls(settings, [item.file_id for _, item in wanted], deadline)
    fetched: dict[str, bytes] = {}
    for where, item in wanted:
        if item.file_id not in fetched:
            fetched[item.file_id] = _download(urls[item.file_id], where, item.file_id,
                                              settings.max_body_bytes, deadline, settings)
    return [(where, fetched[item.file_id] if isinstance(item, CloudFile) else item)
            for where, item in pending]


# -- the open API --------------------------------------------------------------------------


def _download_urls(settings: Settings, file_ids: list[str], deadline: float
                   ) -> dict[str, str]:
    unique = list(dict.fromkeys(file_ids))
    token = _TOKENS.get(settings, deadline)
    query = f"?access_token={urllib.parse.quote(token)}" if token else ""
    answer = _post_json(settings, f"/tcb/batchdownloadfile{query}",
                        {"env": settings.cloud_env,
                         "file_list": [{"fileid": f, "max_age": MAX_AGE_SECONDS}
                                       for f in unique]}, deadline)
    errcode = answer.get("errcode", 0)
    if errcode in _TOKEN_ERRORS and token:
        _TOKENS.forget(settings)
    if errcode != 0:
        hint = ("; turn on the open-API service of WeChat Cloud Run and allow "
                "tcb/batchdownloadfile, or set WECHAT_APPID and WECHAT_APPSECRET"
                if errcode in _TOKEN_ERRORS else "")
        raise BadGateway(f"WeChat's tcb/batchdownloadfile refused the call: errcode {errcode}, "
                         f"{clip(str(answer.get('errmsg', '')), 120)}{hint}")
    urls: dict[str, str] = {}
    for entry in answer.get("file_list") or ():
        if not isinstance(entry, dict):
            continue
        file_id = str(entry.get("fileid", ""))
        status = entry.get("status", 0)
        message = clip(str(entry.get("errmsg", "")), 120)
        if status == FILE_NOT_FOUND:
            raise NotFound(f"the cloud file {_shown(file_id)} does not exist ({message}); "
                           "upload it again with wx.cloud.uploadFile")
        if status == NO_PERMISSION:
            raise Forbidden(f"the cloud file {_shown(file_id)} may not be read by this "
                            f"function ({message}); check the storage permissions")
        if status != 0:
            raise BadGateway(f"WeChat could not resolve the cloud file {_shown(file_id)}: "
                             f"status {status}, {message}")
        url = str(entry.get("download_url", ""))
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise BadGateway(f"WeChat gave no download URL for {_shown(file_id)}")
        urls[file_id] = url
    missing = [f for f in unique if f not in urls]
    if missing:
        raise BadGateway(f"WeChat's tcb/batchdownloadfile left out {_shown(missing[0])}")
    return urls


def _post_json(settings: Settings, path: str, body: dict[str, Any], deadline: float
               ) -> dict[str, Any]:
    url = settings.wechat_api_url.rstrip("/") + path
    name = path.split("?", 1)[0].lstrip("/")
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
    raw = _read(request, name, 1 << 20, deadline, settings)
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        raise BadGateway(f"WeChat's {name} answered something that is not JSON") from exc
    if not isinstance(answer, dict):
        raise BadGateway(f"WeChat's {name} answered JSON that is not an object")
    return answer


class _TokenCache:
    """Access tokens from ``cgi-bin/stable_token``, one per app id, renewed before expiry."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, settings: Settings, deadline: float) -> str | None:
        """None inside Cloud Run (its open-API service signs the call instead)."""
        appid, secret = settings.wechat_appid, settings.wechat_appsecret
        if not (appid and secret):
            return None
        with self._lock:
            token, expires = self._tokens.get(appid, ("", 0.0))
            if token and time.monotonic() < expires:
                return token
            answer = _post_json(settings, "/cgi-bin/stable_token",
                                {"grant_type": "client_credential", "appid": appid,
                                 "secret": secret, "force_refresh": False}, deadline)
            fresh = answer.get("access_token")
            if not isinstance(fresh, str) or not fresh:
                raise BadGateway("WeChat refused an access token for WECHAT_APPID: errcode "
                                 f"{answer.get('errcode')}, "
                                 f"{clip(str(answer.get('errmsg', '')), 120)}")
            lifetime = float(answer.get("expires_in", 7200))
            self._tokens[appid] = (fresh, time.monotonic() + lifetime - TOKEN_MARGIN_SECONDS)
            return fresh

    def forget(self, settings: Settings) -> None:
        with self._lock:
            self._tokens.pop(settings.wechat_appid or "", None)


_TOKENS = _TokenCache()


# -- downloads -----------------------------------------------------------------------------


def _download(url: str, where: str, file_id: str, limit: int, deadline: float,
              settings: Settings) -> bytes:
    request = urllib.request.Request(url, method="GET")
    return _read(request, f"the download of {_shown(file_id)} ({where})", limit, deadline,
                 settings, too_large=f"{where}: the cloud file {_shown(file_id)}")


def _read(request: urllib.request.Request, what: str, limit: int, deadline: float,
          settings: Settings, too_large: str | None = None) -> bytes:
    """The response body, within `limit` bytes and before `deadline`; errors as 4xx/5xx."""
    timeout = settings.cloud_file_timeout
    try:
        with urllib.request.urlopen(request, timeout=_remaining(deadline, what, timeout)
                                    ) as response:
            length = response.headers.get("Content-Length")
            if too_large and length and length.isdigit() and int(length) > limit:
                raise PayloadTooLarge(f"{too_large} is {int(length):,} bytes; the limit is "
                                      f"{limit:,} bytes (MAX_BODY_BYTES)")
            chunks: list[bytes] = []
            size = 0
            while True:
                _remaining(deadline, what, timeout)
                chunk = response.read(CHUNK_BYTES)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    if too_large:
                        raise PayloadTooLarge(f"{too_large} is over the limit of {limit:,} "
                                              "bytes (MAX_BODY_BYTES)")
                    raise BadGateway(f"{what} answered more than {limit:,} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except ServiceError:
        raise
    except urllib.error.HTTPError as exc:
        if too_large and exc.code in (403, 404):
            raise NotFound(f"{too_large} could not be downloaded (HTTP {exc.code}); its "
                           "link may have expired or the file was deleted") from exc
        raise BadGateway(f"{what} failed: HTTP {exc.code}") from exc
    except TimeoutError as exc:
        raise _timeout(what, timeout) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise _timeout(what, timeout) from exc
        raise BadGateway(f"{what} failed: {clip(str(reason), 120)}") from exc


def _shown(file_id: str) -> str:
    """A file id in a message: whole (they run to about 100 characters), clipped if absurd."""
    return clip(file_id, 200)


def _remaining(deadline: float, what: str, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timeout(what, timeout)
    return left


def _timeout(what: str, timeout: float) -> GatewayTimeout:
    return GatewayTimeout(f"{what} did not finish within CLOUD_FILE_TIMEOUT ({timeout:g} s)")
