"""Who may call the function: API keys, signed requests, WeChat app ids, Cloud Run identity.

Everything is off by default (the demo is open). Turn on what fits:

* ``API_KEYS``: the client sends ``X-API-Key: <key>`` (or ``Authorization: Bearer <key>``).
  Several keys may be valid at once, so a key can be rotated without downtime. Keys are
  compared in constant time, and every key is compared, so timing tells nothing.
* ``HMAC_KEYS`` (``id:secret,...``): the client signs each request (see `string_to_sign`)
  and sends ``X-Key-Id``, ``X-Timestamp``, ``X-Nonce`` and ``X-Signature``. A request is
  accepted once, within ``HMAC_WINDOW_SECONDS`` of its timestamp; a replay of the same
  nonce is refused. Each accepted nonce is remembered until its timestamp leaves the
  window, whatever else arrives meanwhile: when ``HMAC_MAX_NONCES`` live nonces are held,
  further signed requests get 503 ``overloaded`` (with ``Retry-After``) instead of pushing
  a live nonce out, so a captured request can never be replayed inside its window. Size it
  from rate x window: 100,000 nonces carry 333 signed requests a second at the default
  300 s window. The memory is per process: a replay to another instance within the window
  is only stopped by keeping the window short.
* ``TRUST_WECHAT_CLOUDRUN``: behind WeChat Cloud Run's gateway (``wx.cloud.callContainer``)
  the platform sets ``X-WX-SOURCE`` and ``X-WX-OPENID``; such requests count as
  authenticated. Only turn it on when the service is reachable through that gateway alone.
* ``ALLOWED_APPIDS``: a filter on the app id in WeChat's ``Referer``
  (``https://servicewechat.com/{appid}/{version}/page-frame.html``). Anyone can forge a
  Referer, so this keeps honest traffic from other mini-programs out; it is not security.
  The ``X-WX-APPID`` header counts only on a trusted Cloud Run call (the gateway sets it
  there); anywhere else it is ignored.

When API keys or HMAC keys are configured, a request must pass one of them (or carry a
trusted Cloud Run identity); the app id filter applies on top.

Credentials are compared exactly as sent: no whitespace is trimmed from keys, bearer
tokens or signatures, and a header value of any length or alphabet gets a 401 (or 403),
never an error of the server's own.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import math
import re
import threading
import time
from dataclasses import dataclass

from functions.errors import Forbidden, Overloaded, Unauthorized
from functions.httpio import HttpRequest

REFERER_APPID = re.compile(r"https://servicewechat\.com/(wx[0-9a-zA-Z]{6,32})/")
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
TIMESTAMP = re.compile(r"[0-9]{1,12}")
SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
KEY_ID = re.compile(r"[\x21-\x7e]{1,64}")
MAX_NONCES = 100_000
WX_APPID = re.compile(r"wx[0-9a-zA-Z]{6,32}")
WX_SOURCE = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class AuthSettings:
    api_keys: tuple[str, ...] = ()
    hmac_keys: tuple[tuple[str, str], ...] = ()
    hmac_window_seconds: int = 300
    allowed_appids: tuple[str, ...] = ()
    trust_wechat_cloudrun: bool = False
    max_nonces: int = MAX_NONCES

    @property
    def requires_credentials(self) -> bool:
        return bool(self.api_keys or self.hmac_keys or self.trust_wechat_cloudrun)


def string_to_sign(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """What a client signs with HMAC-SHA256: method, path, timestamp, nonce, body hash.

    The body hash binds the signature to the image, so a captured signature cannot be
    reused for another request; the path excludes the query string.
    """
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), path, timestamp, nonce, digest]).encode("utf-8")


def sign(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The hex signature a client sends as ``X-Signature`` (tests and Python clients)."""
    message = string_to_sign(method, path, timestamp, nonce, body)
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


class Authenticator:
    def __init__(self, settings: AuthSettings, clock=time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._nonces = NonceStore(settings.max_nonces)

    def check(self, request: HttpRequest) -> None:
        """Return if the request may proceed; raise `Unauthorized` or `Forbidden` if not."""
        s = self.settings
        if s.allowed_appids:
            self._check_appid(request)
        if not s.requires_credentials:
            return
        headers = request.headers
        if self._cloudrun_identity(request):
            return
        if s.hmac_keys and "x-signature" in headers:
            self._check_signature(request)
            return
        key = headers.get("x-api-key") or _bearer(headers.get("authorization", ""))
        if s.api_keys and key:
            if _matches_any(key, s.api_keys):
                return
            raise Unauthorized("the API key is not valid")
        raise Unauthorized(self._what_to_send(), headers={"WWW-Authenticate": "ApiKey"})

    def log_fields(self, request: HttpRequest) -> dict[str, str]:
        """What the access log line says about a caller that WeChat Cloud Run vouches for.

        The openid is personal data: it is logged as ``openid_sha256`` (the first 16 hex digits
        of its SHA-256), enough to follow one user's requests across lines, never raw. Only
        with TRUST_WECHAT_CLOUDRUN, the one case where the gateway, not the client, set it.
        """
        if not self._cloudrun_identity(request):
            return {}
        headers = request.headers
        fields = {"openid_sha256": openid_digest(headers.get("x-wx-openid", ""))}
        appid = headers.get("x-wx-appid", "")
        if WX_APPID.fullmatch(appid):
            fields["appid"] = appid
        source = headers.get("x-wx-source", "")
        if WX_SOURCE.fullmatch(source):
            fields["wx_source"] = source
        return fields

    def _cloudrun_identity(self, request: HttpRequest) -> bool:
        """True for a call that WeChat Cloud Run's gateway vouches for (when trusted)."""
        headers = request.headers
        return bool(self.settings.trust_wechat_cloudrun and headers.get("x-wx-openid")
                    and headers.get("x-wx-source"))

    def _what_to_send(self) -> str:
        ways = []
        if self.settings.api_keys:
            ways.append("an X-API-Key header")
        if self.settings.hmac_keys:
            ways.append("a signed request (X-Key-Id, X-Timestamp, X-Nonce, X-Signature)")
        if self.settings.trust_wechat_cloudrun:
            ways.append("a call through WeChat Cloud Run (wx.cloud.callContainer)")
        return "authentication required: send " + " or ".join(ways)

    def _check_appid(self, request: HttpRequest) -> None:
        match = REFERER_APPID.match(request.headers.get("referer", ""))
        appid = match.group(1) if match else None
        if appid is None and self._cloudrun_identity(request):
            appid = request.headers.get("x-wx-appid")  # set by the gateway, not the client
        if appid not in self.settings.allowed_appids:
            raise Forbidden("this mini-program is not allowed to call the function"
                            if appid else "requests must come from an allowed mini-program")

    def _check_signature(self, request: HttpRequest) -> None:
        headers = request.headers
        key_id = headers.get("x-key-id", "")
        secrets = dict(self.settings.hmac_keys)
        if not KEY_ID.fullmatch(key_id) or key_id not in secrets:
            raise Unauthorized("unknown X-Key-Id")
        timestamp = headers.get("x-timestamp", "")
        nonce = headers.get("x-nonce", "")
        signature = headers.get("x-signature", "")
        if not TIMESTAMP.fullmatch(timestamp):
            raise Unauthorized("X-Timestamp must be the Unix time in seconds")
        if not NONCE.fullmatch(nonce):
            raise Unauthorized("X-Nonce must be 16 to 64 characters of [A-Za-z0-9_-]")
        if not SIGNATURE.fullmatch(signature):
            raise Unauthorized("X-Signature must be 64 hex digits (HMAC-SHA256)")
        now = self._clock()
        window = self.settings.hmac_window_seconds
        skew = abs(now - int(timestamp))
        if skew > window:
            raise Unauthorized(f"X-Timestamp is {int(skew)} s away from the server's clock; "
                               f"the window is {window} s")
        want = sign(secrets[key_id], request.method, request.path, timestamp, nonce,
                    request.body)
        if not hmac.compare_digest(want, signature.lower()):
            raise Unauthorized("the signature does not match the request")
        if not self._nonces.add(f"{key_id}:{nonce}", int(timestamp) + window, now):
            raise Unauthorized("this request was already received (replayed nonce)")


def openid_digest(openid: str) -> str:
    """The form an openid takes in logs: 16 hex digits of its SHA-256."""
    return hashlib.sha256(openid.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _bearer(value: str) -> str:
    """The token of ``Authorization: Bearer <token>``, exactly as sent (scheme in any case)."""
    scheme, space, token = value.partition(" ")
    return token if space and scheme.lower() == "bearer" else ""


def _matches_any(key: str, keys: tuple[str, ...]) -> bool:
    given = key.encode("utf-8", "surrogatepass")
    found = False
    for candidate in keys:  # no early exit: every key costs the same time
        found |= hmac.compare_digest(given, candidate.encode("utf-8"))
    return found


class NonceStore:
    """Nonces of accepted signed requests, each kept until its request's window closes.

    Nothing live is ever forgotten to make room: when ``capacity`` unexpired nonces are
    held, `add` raises `Overloaded` (503 with ``Retry-After``: when the oldest expires).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, nonce: str, expires: float, now: float) -> bool:
        """Remember ``nonce`` until ``expires``; False if it is already remembered."""
        with self._lock:
            while self._heap and self._heap[0][0] < now:
                _, old = heapq.heappop(self._heap)
                self._expiry.pop(old, None)
            if nonce in self._expiry:
                return False
            if len(self._expiry) >= self.capacity:
                wait = max(1, math.ceil(self._heap[0][0] - now))
                raise Overloaded(f"too many signed requests within the signature window "
                                 f"({self.capacity:,} nonces held); retry in {wait} s",
                                 headers={"Retry-After": str(wait)})
            self._expiry[nonce] = expires
            heapq.heappush(self._heap, (expires, nonce))
            return True
