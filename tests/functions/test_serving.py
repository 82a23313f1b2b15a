"""The project's server (`python -m functions.serving`, as `make serve` runs it) against what
an outside attacker sent: megabyte request lines, malformed chunking, short bodies, slow
clients by the dozen, decoding bombs, and a worker that grew. Real gunicorn, the real demo
model, raw sockets on loopback; many generated variants of each class, and never a 5xx.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import encode, start_server, stop_server
from tests.functions.serving_helpers import (
    AnswerReader,
    exchange,
    port_of,
    read_answer,
    rss_mib,
    worker_pid,
)
from tests.functions.test_decode_work import repeated_scans, with_frames

pytestmark = pytest.mark.slow

READ_TIMEOUT = 3.0
def examples(count: int) -> settings:
    return settings(max_examples=count, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def served(demo_model, tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("serving"), {
        "MODEL_URI": str(demo_model.served), "REQUEST_READ_TIMEOUT": str(READ_TIMEOUT),
        "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING"})
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def digit(digits):
    return int(digits.y_test[0]), encode(digits.x_test[0])


def post_head(length: int | None = None, *, chunked: bool = False, path: str = "/") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: fn\r\nContent-Type: image/png\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return (head + "\r\n").encode()


def assert_json_error(answer, status: int, code: str) -> str:
    assert answer.status == status, answer
    error = answer.json()["error"]
    assert error["code"] == code, error
    return error["message"]


# -- request lines and heads -------------------------------------------------------------


@examples(25)
@given(size=st.one_of(st.integers(8191, 70_000), st.sampled_from([1_000_000, 3_000_000])))
def test_request_lines_over_the_limit_are_a_json_414_at_once(served, size):
    line = b"GET /" + b"a" * size + b" HTTP/1.1\r\nHost: fn\r\n\r\n"
    started = time.monotonic()
    answer = exchange(served, line)
    assert time.monotonic() - started < 1.0
    assert assert_json_error(answer, 414, "uri_too_long") == \
        "the request line is longer than 8,190 bytes"


def test_a_long_but_allowed_request_line_reaches_the_function(served):
    answer = exchange(served, b"GET /" + b"a" * 8100 + b" HTTP/1.1\r\nHost: fn\r\n\r\n")
    assert assert_json_error(answer, 404, "not_found").startswith("no such path")


def test_megabyte_request_lines_do_not_slow_anyone_else(served):
    line = b"GET /" + b"a" * 3_000_000 + b" HTTP/1.1\r\nHost: fn\r\n\r\n"
    stop = threading.Event()

    def attack() -> None:
        while not stop.is_set():
            exchange(served, line)

    with ThreadPoolExecutor(4) as pool:
        attackers = [pool.submit(attack) for _ in range(4)]
        took = []
        for _ in range(15):
            started = time.monotonic()
            assert served.get("/livez", timeout=10).status_code == 200
            took.append(time.monotonic() - started)
        stop.set()
        for attacker in attackers:
            attacker.result()
    assert max(took) < 0.5, took


@pytest.mark.parametrize(("fields", "size"), [(101, 10), (5, 8191), (1, 100_000)])
def test_too_many_or_too_large_header_fields_are_a_json_431(served, fields, size):
    head = b"GET /livez HTTP/1.1\r\n" + b"".join(
        b"X-F%d: %s\r\n" % (i, b"v" * size) for i in range(fields)) + b"\r\n"
    assert_json_error(exchange(served, head), 431, "header_fields_too_large")


# -- bodies: chunked and short -----------------------------------------------------------


def chunks(data: bytes, sizes: list[int]) -> bytes:
    out, pos = b"", 0
    for size in sizes:
        piece = data[pos:pos + size]
        if piece:
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
            pos += len(piece)
    if pos < len(data):
        out += b"%x\r\n%s\r\n" % (len(data) - pos, data[pos:])
    return out + b"0\r\n\r\n"


@examples(30)
@given(sizes=st.lists(st.integers(1, 400), max_size=6))
def test_chunked_uploads_in_any_pieces_are_answered(served, digit, sizes):
    label, png = digit
    answer = exchange(served, post_head(chunked=True) + chunks(png, sizes))
    assert answer.status == 200, answer
    assert answer.json()["predictions"][0]["class_id"] == label


@examples(60)
@given(breakage=st.one_of(
    st.binary(min_size=1, max_size=10).filter(lambda b: b"\r" not in b and b"\n" not in b
                                                and b";" not in b and not all(
                                                    c in b"0123456789abcdefABCDEF" for c in b)),
    st.sampled_from([b"3\r\nabcX\r\n", b"2\r\nabcdef", b"ffffffffffffffffff\r\n"])),
    half_close=st.booleans())
def test_malformed_chunked_bodies_are_a_json_400(served, breakage, half_close):
    if b"\r\n" not in breakage:
        breakage += b"\r\nabc\r\n0\r\n\r\n"
    answer = exchange(served, post_head(chunked=True) + breakage, half_close=half_close)
    assert answer.status in (400, 413), answer
    assert answer.json()["error"]["code"] in ("bad_request", "payload_too_large")
    assert answer.headers["connection"] == "close"


@examples(40)
@given(declared=st.integers(2, 5_000_000), sent=st.floats(0, 0.999))
def test_bodies_shorter_than_their_content_length_are_refused(served, digit, declared, sent):
    _, png = digit
    body = (png * (declared // len(png) + 1))[:int(declared * sent)]
    answer = exchange(served, post_head(declared) + body, half_close=True)
    message = assert_json_error(answer, 400, "bad_request")
    assert message == (f"the request body ended after {len(body)} of the {declared} bytes "
                       "its Content-Length announced")


def test_a_declared_body_over_the_limit_is_a_413_before_it_is_sent(served):
    answer = exchange(served, post_head(6_000_001))
    assert assert_json_error(answer, 413, "payload_too_large") == (
        "request body is 6000001 bytes; the limit is 6000000 bytes (MAX_BODY_BYTES)")


def test_expect_100_continue_gets_its_interim_answer(served, digit):
    label, png = digit
    with socket.create_connection(("127.0.0.1", port_of(served)), timeout=10) as sock:
        sock.sendall(post_head(len(png))[:-2] + b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(png)
        answer = read_answer(sock)
    assert answer.json()["predictions"][0]["class_id"] == label


def test_pipelined_requests_are_answered_and_a_partial_one_holds_no_thread(served):
    with socket.create_connection(("127.0.0.1", port_of(served)), timeout=10) as sock:
        answers = AnswerReader(sock)
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: fn\r\n\r\n" * 2 + b"GET /liv")
        first, second = answers.answer(), answers.answer()
        assert (first.status, second.status) == (200, 200)
        started = time.monotonic()
        assert served.get("/livez", timeout=10).status_code == 200  # another client
        assert time.monotonic() - started < 1.0
        sock.sendall(b"ez HTTP/1.1\r\nHost: fn\r\n\r\n")
        assert answers.answer().json() == {"status": "alive"}


# -- the next request on a kept-alive connection (KEEPALIVE_LINGER_MS) -------------------

SENDINGS = ["whole", "head, then the body 10 ms later", "in pieces 0.5 ms apart", "pipelined",
            "chunked", "expect 100-continue"]


@examples(25)
@given(sendings=st.lists(st.sampled_from(SENDINGS), min_size=3, max_size=8))
def test_requests_sent_right_after_each_answer_are_all_answered(served, digit, sendings):
    """However the next request arrives after an answer (whole, which the answering thread
    takes itself, or not yet whole, which goes back to the event loop), it is answered."""
    label, png = digit
    request = post_head(len(png)) + png
    with socket.create_connection(("127.0.0.1", port_of(served)), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answers = AnswerReader(sock)
        expected = []
        for sending in sendings:
            if sending == "whole":
                sock.sendall(request)
            elif sending.startswith("head"):
                sock.sendall(post_head(len(png)))
                time.sleep(0.01)
                sock.sendall(png)
            elif sending.startswith("in pieces"):
                for start in range(0, len(request), 97):
                    sock.sendall(request[start:start + 97])
                    time.sleep(0.0005)
            elif sending == "pipelined":
                sock.sendall(request + b"GET /livez HTTP/1.1\r\nHost: fn\r\n\r\n")
                expected.append("prediction")
            elif sending == "chunked":
                sock.sendall(post_head(chunked=True) + chunks(png, [50, 7, 300]))
            else:
                sock.sendall(post_head(len(png))[:-2] + b"Expect: 100-continue\r\n\r\n")
                assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
                sock.sendall(png)
            expected.append("alive" if sending == "pipelined" else "prediction")
            while expected:
                answer = answers.answer()
                assert answer.status == 200, (sending, answer)
                if expected.pop(0) == "alive":
                    assert answer.json() == {"status": "alive"}
                else:
                    assert answer.json()["predictions"][0]["class_id"] == label


@pytest.mark.parametrize("after", ["half a head", "a head and half its body", "a bad length",
                                   "malformed chunks", "closing"])
def test_a_client_turning_slow_or_wrong_after_an_answer_holds_no_thread(served, digit, after):
    """Twenty kept-alive clients (more than the worker's 8 threads) each get an answer and
    then send the start of a request and stall, a refused one, or close: the next client is
    answered at once, and each stalled one gets its 408 after REQUEST_READ_TIMEOUT."""
    label, png = digit
    nexts = {"half a head": b"POST / HTTP/1.1\r\nHo",
             "a head and half its body": post_head(len(png)) + png[:len(png) // 2],
             "a bad length": post_head(6_000_001),
             "malformed chunks": post_head(chunked=True) + b"zz\r\nabc\r\n0\r\n\r\n",
             "closing": b""}
    sockets = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port_of(served)), timeout=10)
            sockets.append(sock)
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: fn\r\n\r\n")
            assert read_answer(sock).status == 200
            if nexts[after]:
                sock.sendall(nexts[after])
            else:
                sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        response = served.post(files={"file": ("d.png", png, "image/png")}, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["class_id"] == label
        assert time.monotonic() - started < 1.0
        expected = {"half a head": (408, "request_timeout"),
                    "a head and half its body": (408, "request_timeout"),
                    "a bad length": (413, "payload_too_large"),
                    "malformed chunks": (400, "bad_request")}.get(after)
        for sock in sockets:
            sock.settimeout(READ_TIMEOUT + 5)
            if expected is None:
                assert sock.recv(100) == b""  # closed, nothing answered
            else:
                assert_json_error(read_answer(sock), *expected)
    finally:
        for sock in sockets:
            sock.close()


# -- slow clients ------------------------------------------------------------------------


class SlowClients:
    """``count`` connections, each trickling its request a byte at a time (or silent)."""

    def __init__(self, served, count: int, kind: str) -> None:
        self.stop = threading.Event()
        self.sockets: list[socket.socket] = []
        starts = {"header": b"POST / HTTP/1.1\r\nHost: fn\r\n",
                  "body": post_head(100_000), "silent": b""}
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port_of(served)), timeout=30)
            if starts[kind]:
                sock.sendall(starts[kind])
            self.sockets.append(sock)
        self.thread = threading.Thread(target=self._trickle, args=(kind,), daemon=True)
        self.thread.start()

    def _trickle(self, kind: str) -> None:
        while not self.stop.wait(0.5):
            if kind == "silent":
                continue
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.send(b"X" if kind == "header" else b"\0")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


@pytest.mark.parametrize("kind", ["header", "body", "silent"])
def test_fifty_slow_connections_starve_nobody(served, digit, kind):
    label, png = digit
    slow = SlowClients(served, 50, kind)
    try:
        live, predicted = [], []
        for _ in range(10):
            started = time.monotonic()
            assert served.get("/livez", timeout=10).status_code == 200
            live.append(time.monotonic() - started)
            started = time.monotonic()
            response = served.post(files={"file": ("d.png", png, "image/png")}, timeout=10)
            predicted.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["class_id"] == label
    finally:
        slow.close()
    assert max(live) < 1.0 and max(predicted) < 1.0, (live, predicted)


def test_a_request_that_does_not_arrive_in_time_is_a_json_408(served):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port_of(served)), timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: fn\r\n")
        for _ in range(int(READ_TIMEOUT * 4) + 8):  # a header byte every 0.25 s
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.25)
            if time.monotonic() - started > READ_TIMEOUT + 1.5:
                break
        answer = read_answer(sock)
    took = time.monotonic() - started
    assert assert_json_error(answer, 408, "request_timeout") == (
        f"the request did not arrive whole within {READ_TIMEOUT:g} s (REQUEST_READ_TIMEOUT)")
    assert READ_TIMEOUT <= took < READ_TIMEOUT + 2.0


# -- decoding bombs through the server ---------------------------------------------------


def flat_gif(width: int, height: int, seed: int) -> bytes:
    pixels = np.full((height, width), 40 + seed * 30, np.uint8)
    pixels[height // 3: 2 * height // 3, width // 3: 2 * width // 3] = 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "GIF")
    return buf.getvalue()


def flat_progressive_jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, "JPEG", progressive=True)
    return buf.getvalue()


def bombs() -> list[tuple[str, bytes, int]]:
    """(what, file, expected status): the attacker's classes, several variants each."""
    cases = []
    for frames in (50, 300, 600):
        for size in (300, 700):
            cases.append((f"GIF {frames} frames of {size}x{size}",
                          with_frames(flat_gif(size, size, frames % 3), frames), 200))
    for huge in ((65535, 65535), (20000, 20000)):
        cases.append((f"GIF with a later frame of {huge}",
                      with_frames(flat_gif(200, 200, 1), 2, huge_later=huge), 200))
    for scans in (500, 3000, 20000):
        for size in (1000, 4000):
            cases.append((f"JPEG {size}x{size} with {scans} scans",
                          repeated_scans(flat_progressive_jpeg(size, size), scans), 413))
    return cases


def test_decoding_bombs_are_refused_or_served_from_the_first_frame_quickly(served):
    session = requests.Session()
    for _ in range(20):  # warm: the worker's steady memory, before any bomb
        session.post(served.url, files={"file": ("g.gif", flat_gif(300, 300, 0))}, timeout=30)
    pid = worker_pid(served)
    before = rss_mib(pid)
    for what, data, status in bombs():
        assert len(data) < 6_000_000, what
        timings = []
        for _ in range(2):
            started = time.monotonic()
            response = session.post(served.url, data=data, timeout=30,
                                    headers={"Content-Type": "application/octet-stream"})
            timings.append(time.monotonic() - started)
            assert response.status_code == status, (what, response.text)
        assert min(timings) < 0.1, (what, timings)
    growth = rss_mib(pid) - before
    assert worker_pid(served) == pid
    assert growth < 50, f"worker RSS grew {growth:.0f} MiB"


# -- the memory ceiling ------------------------------------------------------------------


def test_a_worker_past_the_memory_ceiling_is_replaced_after_its_request(demo_model, digit,
                                                                        tmp_path):
    label, png = digit
    server = start_server(tmp_path, {"MODEL_URI": str(demo_model.served),
                                      "WORKER_MAX_RSS_MB": "1", "LOG_FORMAT": "text"})
    try:
        seen = set()
        for _ in range(2):
            response = server.post(files={"file": ("d.png", png, "image/png")}, timeout=120)
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["class_id"] == label
            time.sleep(0.5)
            seen.add(worker_pid(server))
        assert len(seen) == 2  # each answered POST left a fresh worker behind
        log = server.log.read_text()
        assert "over WORKER_MAX_RSS_MB=1: replacing it after this request" in log
    finally:
        stop_server(server)


def test_no_answer_above_was_a_5xx(served):
    """The server's log for the whole module: the function logs every 5xx it answers
    ("answered 5xx") and the worker every error it could not map ("error handling")."""
    log = served.log.read_text()
    assert "answered 5" not in log and "error handling a request" not in log, log[-2000:]
    assert "Traceback" not in log, log[-2000:]
