"""A request thread taking the client's next request itself (functions/serving/worker.py,
`whole_request`), on real loopback TCP sockets: it takes a request only once it is whole,
exactly its bytes, and leaves anything else on the socket for the event loop, untouched."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.config import ConfigError, Settings
from functions.serving.request_scan import Limits
from functions.serving.worker import PEEK_BYTES, whole_request
from tests.functions.test_request_scan import chunked

LIMITS = Limits(max_body=100_000)
WAIT_MS = 20.0


@contextmanager
def connected() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, server) ends of one loopback TCP connection, the server end blocking with a
    timeout as gunicorn leaves it after an answer."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    server.settimeout(5)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def settle(sock: socket.socket, size: int) -> None:
    """Wait until ``size`` bytes sent on loopback can be read on ``sock``."""
    deadline = time.monotonic() + 5
    while len(sock.recv(size + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)) < size:
        assert time.monotonic() < deadline, "loopback did not deliver the bytes"
        time.sleep(0.001)


def left_on(sock: socket.socket) -> bytes:
    """Everything still waiting on the socket (the client has shut its side)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def post(body: bytes, framing: str, sizes: list[int]) -> bytes:
    head = b"POST / HTTP/1.1\r\nHost: fn\r\nContent-Type: application/json\r\n"
    if framing == "chunked":
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, sizes)
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


requests = st.one_of(
    st.just(b"GET /livez HTTP/1.1\r\nHost: fn\r\n\r\n"),
    st.builds(post, st.binary(max_size=20_000), st.sampled_from(["length", "chunked"]),
              st.lists(st.integers(1, 5000), max_size=6)))


@settings(max_examples=60, deadline=None)
@given(request=requests, pipelined=st.sampled_from([b"", b"GET /liv", b"POST / HTTP/1.1\r\n"]))
def test_a_whole_request_is_taken_with_what_follows_it(request, pipelined):
    with connected() as (client, server):
        client.sendall(request + pipelined)
        settle(server, len(request + pipelined))
        assert whole_request(server, LIMITS, WAIT_MS) == request + pipelined
        client.shutdown(socket.SHUT_WR)
        assert left_on(server) == b""


@settings(max_examples=60, deadline=None)
@given(request=requests, data=st.data())
def test_part_of_a_request_is_left_on_the_socket_untouched(request, data):
    cut = data.draw(st.integers(1, len(request) - 1), label="cut")
    with connected() as (client, server):
        client.sendall(request[:cut])
        settle(server, cut)
        assert whole_request(server, LIMITS, WAIT_MS) is None
        client.shutdown(socket.SHUT_WR)
        assert left_on(server) == request[:cut]


@pytest.mark.parametrize("what, sent", [
    ("a body over the limit", b"POST / HTTP/1.1\r\nHost: fn\r\nContent-Length: 100001\r\n\r\n"),
    ("malformed chunks", b"POST / HTTP/1.1\r\nHost: fn\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"zz\r\nab\r\n0\r\n\r\n"),
    ("a request line over the limit", b"GET /" + b"a" * 9000),
    ("a request larger than a peek", post(b"x" * PEEK_BYTES, "length", [])),
    ("an interim answer awaited", b"POST / HTTP/1.1\r\nHost: fn\r\nContent-Length: 10\r\n"
                                  b"Expect: 100-continue\r\n\r\n"),
])
def test_what_the_event_loop_must_answer_is_left_to_it(what, sent):
    with connected() as (client, server):
        client.sendall(sent)
        settle(server, min(len(sent), PEEK_BYTES))
        assert whole_request(server, LIMITS, WAIT_MS) is None, what
        client.shutdown(socket.SHUT_WR)
        assert left_on(server) == sent, what


def test_nothing_within_the_wait_is_none_after_the_wait():
    with connected() as (_client, server):
        started = time.monotonic()
        assert whole_request(server, LIMITS, WAIT_MS) is None
        assert WAIT_MS / 1000 <= time.monotonic() - started < 1.0


def test_a_request_arriving_during_the_wait_is_taken():
    with connected() as (client, server):
        request = b"GET /livez HTTP/1.1\r\nHost: fn\r\n\r\n"
        sender = threading.Timer(0.005, client.sendall, args=(request,))
        sender.start()
        try:
            assert whole_request(server, LIMITS, 2000) == request
        finally:
            sender.join()


def test_a_closed_connection_is_left_to_the_event_loop():
    with connected() as (client, server):
        client.close()
        assert whole_request(server, LIMITS, WAIT_MS) is None
        assert server.recv(10) == b""


@pytest.mark.parametrize("raw, value", [(None, 2.0), ("0", 0.0), ("0.5", 0.5), (" 10 ", 10.0),
                                        ("1000", 1000.0)])
def test_the_wait_is_read_from_keepalive_linger_ms(raw, value):
    env = {} if raw is None else {"KEEPALIVE_LINGER_MS": raw}
    assert Settings.from_env(env).keepalive_linger_ms == value


@pytest.mark.parametrize("raw, message", [
    ("soon", "KEEPALIVE_LINGER_MS must be a number of milliseconds, got 'soon'"),
    ("-1", "KEEPALIVE_LINGER_MS must be between 0 and 1000 milliseconds, got '-1'"),
    ("1001", "KEEPALIVE_LINGER_MS must be between 0 and 1000 milliseconds, got '1001'"),
    ("nan", "KEEPALIVE_LINGER_MS must be between 0 and 1000 milliseconds, got 'nan'"),
])
def test_a_bad_wait_is_refused_at_start(raw, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"KEEPALIVE_LINGER_MS": raw})
    assert str(caught.value) == message
