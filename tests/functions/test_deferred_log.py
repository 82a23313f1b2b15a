"""Both WSGI bindings write a request's log line once its answer is sent, not before.

The WSGI server calls the body's ``close()`` after sending it (PEP 3333); werkzeug's test
client with ``buffered=False`` holds the body open until ``close()``, as a real server
does while it writes, so the test sees the two moments apart. In process, no model
loaded (``/livez`` needs none).
"""

from __future__ import annotations

import logging

import pytest

from functions.platforms import wsgi
from tests.conftest import WSGI_BINDINGS, wsgi_client

TRACE = "0af7651916cd43dd8448eb211c80319c"
HEADERS = {"X-Request-Id": "req-deferred-1",
           "traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(params=WSGI_BINDINGS)
def client(monkeypatch, request):
    monkeypatch.setenv("PRELOAD", "false")
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    with wsgi_client(request.param) as test_client:
        yield test_client


@pytest.fixture
def lines():
    handler = Lines()
    logger = logging.getLogger("functions")
    level = logger.level  # an app built earlier in this process may have set another
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


def _request_lines(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if getattr(r, "path", None) == "/livez"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_log_line_is_written_when_the_body_is_closed(client, lines, method):
    response = client.open("/livez", method=method, headers=HEADERS, buffered=False)
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == "req-deferred-1"
    assert _request_lines(lines) == []  # the answer is out; its line is not yet
    response.close()
    [line] = _request_lines(lines)
    assert line.getMessage() == f"{method} /livez 200"
    assert (line.request_id, line.status, line.method) == ("req-deferred-1", 200, method)
    assert line.bytes_out == len(response.get_data()) or method == "HEAD"
    response.close()  # a second close writes nothing more
    assert len(_request_lines(lines)) == 1


def test_the_deferred_line_keeps_the_requests_trace(client, lines):
    client.get("/livez", headers=HEADERS).close()
    [line] = _request_lines(lines)
    assert line.trace_id == TRACE and line.span_id == "b7ad6b7169203331"


def test_a_failing_deferred_work_is_logged_and_the_rest_still_runs(lines):
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("disk full")

    body = wsgi.SentBody([b"answer"], [broken, lambda: ran.append("metrics")])
    assert list(body) == [b"answer"]
    body.close()
    assert ran == ["metrics"]
    [failure] = [r for r in lines if r.getMessage() == "after the response"]
    assert failure.exc_info[1].args == ("disk full",)
