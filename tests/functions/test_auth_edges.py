"""Authentication at its edges: any header value is a 401 or 403 (never a 500), replays
are refused whatever traffic came between, credentials are compared exactly as sent, and
``X-WX-APPID`` counts only on a trusted WeChat Cloud Run call.

Through `App.handle` over the fake backend of test_app.py, and `Authenticator` itself for
the 100,000-nonce run (the same code, without building 100,000 HTTP answers).
"""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.auth import Authenticator, AuthSettings, NonceStore, sign
from functions.errors import Overloaded, Unauthorized
from functions.httpio import Headers, HttpRequest
from tests.functions.test_app import B64, make_app

SECRET = "s3cret-for-tests"
BODY = json.dumps({"image": B64}).encode()
APPID = "wx1234567890abcdef"


def keyed(**auth) -> object:
    return make_app(auth=AuthSettings(**auth))


LOCKED = keyed(api_keys=("k1-0123456789",), hmac_keys=(("app1", SECRET),),
               hmac_window_seconds=60, allowed_appids=(APPID,), trust_wechat_cloudrun=True)
REFERER = f"https://servicewechat.com/{APPID}/3/page-frame.html"


def post(app, headers: dict[str, str], body: bytes = BODY, path: str = "/"):
    response = app.handle(HttpRequest("POST", path, Headers(
        {"Content-Type": "application/json", **headers}), body))
    return response.status, json.loads(response.body)


def signed(*, ts: int | None = None, nonce: str = "nonce-0123456789abcdef",
           body: bytes = BODY, key_id: str = "app1") -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {"X-Key-Id": key_id, "X-Timestamp": stamp, "X-Nonce": nonce,
            "X-Signature": sign(SECRET, "POST", "/", stamp, nonce, body), "Referer": REFERER}


HEADER_VALUES = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=80),
    st.text(alphabet="0123456789٣²３𝟑", min_size=1, max_size=60),
    st.builds(lambda c, n: c * n, st.sampled_from(["9", "a", "é", "\ud800", " "]),
              st.integers(1, 200_000)),
)
HEADER_NAMES = ["X-Timestamp", "X-Signature", "X-Nonce", "X-Key-Id", "X-API-Key",
                "Authorization", "Referer", "X-WX-APPID", "X-WX-OPENID"]


@settings(max_examples=500, deadline=None)
@given(name=st.sampled_from(HEADER_NAMES), value=HEADER_VALUES)
def test_any_value_of_any_auth_header_is_401_or_403(name, value):
    """A valid signed request with one header replaced: refused unless the value is still
    right (or the header does not take part in the decision)."""
    original = signed(nonce=f"n-{time.monotonic_ns():020d}")
    headers = {**original, name: value}
    if name in ("X-API-Key", "Authorization"):
        headers = {"Referer": REFERER, name: value}
    status, body = post(LOCKED, headers)
    if status == 200:
        assert name in ("X-WX-APPID", "X-WX-OPENID") or value == original.get(name), value
    else:
        assert status in (401, 403), body
        assert body["error"]["code"] in ("unauthorized", "forbidden")


@pytest.mark.parametrize("timestamp", ["٣٣٣٣٣٣٣٣٣٣", "²", "1" * 5000, "9" * 13, "-1", "+5",
                                       "1e9", "1_700_000_000", "", "0x10"])
def test_timestamps_that_are_not_ascii_seconds_are_401(timestamp):
    headers = signed()
    headers["X-Timestamp"] = timestamp
    status, body = post(LOCKED, headers)
    assert (status, body["error"]["message"]) == (
        401, "X-Timestamp must be the Unix time in seconds")


@pytest.mark.parametrize("pad", [" ", "\t", "  ", "\n", "\u00a0", "\u3000"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_credentials_padded_with_whitespace_are_refused(pad, where):
    def padded(value: str) -> str:
        return pad + value if where == "before" else value + pad

    headers = signed(nonce=f"pad-{time.monotonic_ns():020d}")
    headers["X-Signature"] = padded(headers["X-Signature"])
    assert post(LOCKED, headers)[0] == 401
    for api_headers in ({"X-API-Key": padded("k1-0123456789")},
                        {"Authorization": "Bearer " + padded("k1-0123456789")},
                        {"Authorization": "Bearer  k1-0123456789"}):
        status, body = post(LOCKED, {"Referer": REFERER, **api_headers})
        assert (status, body["error"]["code"]) == (401, "unauthorized")
    # and unpadded, the same credentials pass
    assert post(LOCKED, {"Referer": REFERER, "X-API-Key": "k1-0123456789"})[0] == 200
    assert post(LOCKED, {"Referer": REFERER, "Authorization": "bearer k1-0123456789"})[0] == 200


def test_upper_case_hex_signatures_pass_and_other_lengths_do_not():
    headers = signed(nonce=f"hex-{time.monotonic_ns():020d}")
    headers["X-Signature"] = headers["X-Signature"].upper()
    assert post(LOCKED, headers)[0] == 200
    headers = signed(nonce=f"hex-{time.monotonic_ns():020d}")
    headers["X-Signature"] = headers["X-Signature"] + "0"
    status, body = post(LOCKED, headers)
    assert (status, body["error"]["message"]) == (
        401, "X-Signature must be 64 hex digits (HMAC-SHA256)")


def test_a_nonce_followed_by_a_newline_is_not_a_valid_nonce():
    headers = signed(nonce="nonce-0123456789abcdef\n")
    status, body = post(LOCKED, headers)
    assert (status, body["error"]["message"]) == (
        401, "X-Nonce must be 16 to 64 characters of [A-Za-z0-9_-]")


@pytest.mark.slow
def test_a_captured_request_cannot_be_replayed_after_100000_other_nonces():
    """The attack: capture one signed request, flood 100,000 fresh ones, replay it."""
    now = [1_800_000_000.0]
    auth = Authenticator(AuthSettings(hmac_keys=(("app1", SECRET),), hmac_window_seconds=300),
                         clock=lambda: now[0])
    stamp = str(int(now[0]))

    def request(nonce: str) -> HttpRequest:
        return HttpRequest("POST", "/", Headers({
            "X-Key-Id": "app1", "X-Timestamp": stamp, "X-Nonce": nonce,
            "X-Signature": sign(SECRET, "POST", "/", stamp, nonce, b"")}))

    captured = request("captured-0123456789")
    auth.check(captured)
    refused = 0
    for i in range(100_000):
        try:
            auth.check(request(f"flood-{i:012d}"))
        except Overloaded:
            refused += 1
    assert refused == 1  # the store holds 100,000: the captured one and 99,999 others
    with pytest.raises(Unauthorized, match="replayed nonce"):
        auth.check(captured)
    now[0] += 301  # the window has closed: the nonce may go, and so may the request
    with pytest.raises(Unauthorized, match="away from the server's clock"):
        auth.check(captured)
    stamp = str(int(now[0]))
    auth.check(request("fresh-after-the-window"))  # room again once old nonces expire


def test_a_full_nonce_store_answers_503_with_retry_after():
    app = keyed(hmac_keys=(("app1", SECRET),), hmac_window_seconds=60, max_nonces=20)
    stamp = int(time.time())
    for i in range(20):
        assert post(app, signed(ts=stamp, nonce=f"fill-{i:016d}"))[0] == 200
    response = app.handle(HttpRequest("POST", "/", Headers(
        {"Content-Type": "application/json", **signed(ts=stamp, nonce="one-more-0123456789")}),
        BODY))
    body = json.loads(response.body)
    assert response.status == 503
    assert body["error"]["code"] == "overloaded"
    assert body["error"]["message"].startswith("too many signed requests within the "
                                               "signature window (20 nonces held); retry in ")
    assert 1 <= int(response.headers["Retry-After"]) <= 61
    status, body = post(app, signed(ts=stamp, nonce="fill-0000000000000003"))
    assert (status, body["error"]["message"]) == (
        401, "this request was already received (replayed nonce)")


def test_nonces_live_until_their_own_window_closes():
    store = NonceStore(capacity=3)
    assert store.add("a", expires=100, now=50)
    assert store.add("b", expires=60, now=50)
    assert not store.add("a", expires=100, now=99)
    assert store.add("c", expires=70, now=65)  # b expired at 60 and is gone
    assert len(store) == 2
    assert not store.add("a", expires=100, now=100)
    assert store.add("a", expires=200, now=101)


def test_x_wx_appid_counts_only_on_a_trusted_cloud_run_call():
    filtered = keyed(allowed_appids=(APPID,))
    status, body = post(filtered, {"X-WX-APPID": APPID})
    assert (status, body["error"]["message"]) == (
        403, "requests must come from an allowed mini-program")
    status, _ = post(filtered, {"X-WX-APPID": APPID, "X-WX-SOURCE": "wx_client",
                                "X-WX-OPENID": "oABC"})
    assert status == 403  # Cloud Run identity not trusted here: the headers mean nothing
    trusting = keyed(allowed_appids=(APPID,), trust_wechat_cloudrun=True)
    cloudrun = {"X-WX-SOURCE": "wx_client", "X-WX-OPENID": "oABC"}
    assert post(trusting, {**cloudrun, "X-WX-APPID": APPID})[0] == 200
    status, body = post(trusting, {**cloudrun, "X-WX-APPID": "wxffffffffffffffff"})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert post(trusting, {"X-WX-APPID": APPID})[0] == 403
