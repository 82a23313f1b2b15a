"""The bench's HTTP client against a real loopback server: counts, turns and refusals.

Nothing here is timed: only what is sent and what is done with the answers.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import client
from bench.client import BenchError, Request


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the servers the bench measures
    wbufsize = -1  # headers and body in one send, or Nagle and delayed ACKs add 40 ms
    script: list[int] = []
    bodies: list[bytes] = []
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            type(self).bodies.append(body)
            status = type(self).script.pop(0) if type(self).script else 200
        answer = json.dumps({"predictions": [{"class_id": 3}]} if status == 200
                            else {"error": {"code": "x", "message": "nope"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        self.wfile.flush()

    def do_GET(self):  # noqa: N802 - the http.server API
        with self.lock:
            type(self).bodies.append(f"GET {self.path}".encode())
        answer = b'{"status": "ready"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Recorder.script, Recorder.bodies = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


REQUEST = Request("/", b'{"image": "abc"}', {"Content-Type": "application/json"})


def test_interleaved_takes_turns_in_shuffled_orders_after_the_warmup():
    calls = []
    samplers = {name: (lambda n=name: calls.append(n) or 0.5) for name in "abcd"}
    out = client.interleaved(samplers, count=40, warmup=1)
    assert calls[:4] == list("abcd")  # the warm-up, in order
    cycles = [calls[i:i + 4] for i in range(4, len(calls), 4)]
    assert all(sorted(cycle) == list("abcd") for cycle in cycles)  # each cycle takes turns
    assert out == {name: [0.5] * 40 for name in "abcd"}
    # nobody always follows the same side: each is preceded by every other one
    timed = calls[4:]
    for name in "abcd":
        before = {timed[i - 1] for i in range(1, len(timed)) if timed[i] == name}
        assert before >= set("abcd") - {name}
    # the same orders every run
    again: list[str] = []
    client.interleaved({n: (lambda n=n: again.append(n) or 0.5) for n in "abcd"}, 40, 1)
    assert again == calls


def test_sampler_sends_the_request_and_checks_the_answer(server):
    seen = []
    request = Request(REQUEST.path, REQUEST.body, REQUEST.headers,
                      check=lambda body: seen.append(json.loads(body)))
    sample = client.Sampler(server, request)
    try:
        assert sample() > 0
        assert sample() > 0
    finally:
        sample.close()
    assert Recorder.bodies == [REQUEST.body] * 2
    assert seen == [{"predictions": [{"class_id": 3}]}] * 2


def test_a_get_request_sends_no_body(server):
    sample = client.Sampler(server, Request("/healthz", b"", {}, method="GET"))
    try:
        sample()
    finally:
        sample.close()
    assert Recorder.bodies == [b"GET /healthz"]


def test_a_non_200_stops_the_measurement_with_the_servers_words(server):
    Recorder.script = [503]
    with pytest.raises(BenchError, match=r'the function answered 503: b\'{"error"'):
        client.post_once(server, REQUEST, "the function")


def test_a_check_that_fails_stops_the_measurement(server):
    def check(body):
        raise BenchError("no prediction")

    with pytest.raises(BenchError, match="no prediction"):
        client.post_once(server, Request("/", b"{}", {}, check=check))


@pytest.mark.parametrize("concurrency", [1, 4, 8])
def test_burst_sends_exactly_the_total_plus_one_untimed_per_client(server, concurrency):
    result = client.burst(server, REQUEST, concurrency, total=24)
    assert (result.concurrency, result.requests) == (concurrency, 24)
    assert result.seconds > 0
    assert len(Recorder.bodies) == 24 + concurrency


def test_burst_reports_a_failing_request(server):
    Recorder.script = [200, 200, 500]
    with pytest.raises(BenchError, match="failed under concurrency 2: server answered 500"):
        client.burst(server, REQUEST, 2, total=10)


def test_burst_needs_at_least_one_request_per_client(server):
    with pytest.raises(BenchError, match="concurrency <= total"):
        client.burst(server, REQUEST, 8, total=4)


def test_wait_until_ok_retries_while_loading(server):
    Recorder.script = [503, 503, 200]
    client.wait_until_ok(server, REQUEST, deadline=_far(), alive=lambda: True)
    assert len(Recorder.bodies) == 3


def test_wait_until_ok_gives_up_on_a_refusal_or_a_dead_server(server):
    Recorder.script = [404]
    with pytest.raises(BenchError, match="answered 404 on start-up"):
        client.wait_until_ok(server, REQUEST, deadline=_far(), alive=lambda: True)
    with pytest.raises(BenchError, match="exited before answering"):
        client.wait_until_ok(server, REQUEST, deadline=_far(), alive=lambda: False)


def _far() -> float:
    import time

    return time.perf_counter() + 30


class Framing(BaseHTTPRequestHandler):
    """Answers in the framings a server may choose: chunked, or closing the connection."""

    protocol_version = "HTTP/1.1"
    wbufsize = -1

    def do_GET(self):  # noqa: N802 - the http.server API
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b'{"a": ', b'"chunked"}'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b'{"a": "until close"}')
            self.close_connection = True
        self.wfile.flush()

    def log_message(self, *args):
        pass


def test_connection_reads_chunked_and_close_delimited_answers_and_reconnects():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Framing)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                     daemon=True).start()
    conn = client.Connection(httpd.server_address[1], timeout=5)
    try:
        chunked = Request("/chunked", b"", {}, method="GET")
        assert conn.post(chunked) == (200, b'{"a": "chunked"}')
        assert conn.post(chunked) == (200, b'{"a": "chunked"}')  # same connection, kept
        closing = Request("/close", b"", {}, method="GET")
        assert conn.post(closing) == (200, b'{"a": "until close"}')
        assert conn.post(chunked) == (200, b'{"a": "chunked"}')  # a new connection
    finally:
        conn.close()
        httpd.shutdown()
        httpd.server_close()
