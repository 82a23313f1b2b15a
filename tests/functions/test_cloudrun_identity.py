"""The access log of calls through WeChat Cloud Run: the caller's openid hashed, never raw.

In process over the fake backend of test_app.py; the gateway's headers are set as WeChat
Cloud Run's gateway sets them for ``wx.cloud.callContainer`` (X-WX-OPENID, X-WX-APPID,
X-WX-SOURCE). The log lines are read as the JSON formatter writes them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging

import pytest

from functions import logs
from functions.auth import AuthSettings, openid_digest
from tests.functions.test_app import B64, call, make_app

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
GATEWAY = {"X-WX-OPENID": OPENID, "X-WX-APPID": "wx0123456789abcdef",
           "X-WX-SOURCE": "wx_client", "X-WX-ENV": "prod-7g3xk2"}


@pytest.fixture
def log_lines():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("functions")
    level = logger.level
    logger.addHandler(handler)

    def lines():
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    def after_app_made():
        """App() sets the level from LOG_LEVEL (ERROR in these tests): INFO from here."""
        logger.setLevel(logging.INFO)
        return lines

    yield after_app_made
    logger.removeHandler(handler)
    logger.setLevel(level)


def access_line(lines):
    (line,) = [entry for entry in lines if entry.get("path") == "/predict"]
    return line


def test_a_trusted_call_logs_the_openid_hashed_and_the_app(log_lines):
    app = make_app(auth=AuthSettings(trust_wechat_cloudrun=True))
    log_lines = log_lines()
    response, _ = call(app, path="/predict", body={"image": B64}, headers=GATEWAY)
    assert response.status == 200
    line = access_line(log_lines())
    assert line["openid_sha256"] == hashlib.sha256(OPENID.encode()).hexdigest()[:16]
    assert (line["appid"], line["wx_source"]) == ("wx0123456789abcdef", "wx_client")
    assert OPENID not in json.dumps(log_lines())


def test_without_trust_the_headers_are_neither_believed_nor_logged(log_lines):
    app = make_app(auth=AuthSettings(api_keys=("k1",)))
    log_lines = log_lines()
    response, _ = call(app, path="/predict", body={"image": B64}, headers=GATEWAY)
    assert response.status == 401
    line = access_line(log_lines())
    assert "openid_sha256" not in line and "appid" not in line
    assert OPENID not in json.dumps(log_lines())


def test_the_same_user_gets_the_same_digest_and_another_a_different_one():
    assert openid_digest(OPENID) == openid_digest(OPENID)
    assert openid_digest(OPENID) != openid_digest(OPENID[:-1] + "p")
    assert len(openid_digest(OPENID)) == 16
