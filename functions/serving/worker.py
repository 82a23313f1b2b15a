"""gunicorn's threaded worker, with each request read whole before a thread is taken.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as a byte arrives,
and the thread then waits on the socket for the rest: eight clients sending a header byte
a second hold eight threads, and nobody else is answered. Here the worker's own event
loop (the selector gunicorn already runs) reads every request into a buffer, with
`functions.serving.request_scan` saying when it is whole, and only then gives it to a
thread, which parses it from memory (gunicorn's parser, unchanged) and runs the function.
A connection waiting for bytes costs a buffer and a file descriptor, never a thread.

A client sending requests back to back (a mini-program's queue of photos, a proxy reusing
its connection, a load test) would pay two hand-offs per request that way: the answer's
thread back to the event loop, the loop to a thread again, 0.3 ms a request on 2 cores.
So after an answer on a kept-alive connection the thread waits up to KEEPALIVE_LINGER_MS
(2 ms) for the next request and serves it itself, but only if it has arrived whole (the
same scan says so, on bytes peeked from the socket) and no other request is waiting for a
thread. Anything else (nothing yet, half a request, a refusal) goes back to the event loop
as before, so a slow client still holds no thread for longer than that.

What a request gets while it is read:

    arrives whole within REQUEST_READ_TIMEOUT       a thread runs it
    the deadline passes first                       408 request_timeout, connection closed
    client closes before Content-Length is reached  400 bad_request (the body is short)
    malformed chunked framing                       400 bad_request
    Content-Length over MAX_BODY_BYTES              413 at once, the body never read
    request line or head over the limits            414 / 431

Every answer is the function's JSON error (`functions.errors.render`), and so is every
error gunicorn's parser raises later (`handle_error`). All buffered bodies together are
kept under `BUFFER_BUDGET` bytes: past it, reading pauses (TCP pushes back on the
clients) until requests leave the buffer. TLS is not terminated here: the platforms and
proxies in front do it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import selectors
import socket
import threading
import time
from collections import deque
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import TConn, ThreadWorker

from functions.config import ConfigError, Settings
from functions.errors import (
    INTERNAL,
    BadRequest,
    HeaderFieldsTooLarge,
    ModelNotReady,
    PayloadTooLarge,
    RequestTimeout,
    ServiceError,
    UriTooLong,
    clip,
    render,
)
from functions.serving.request_scan import (
    COMPLETE,
    MALFORMED,
    TOO_LARGE,
    Limits,
    RequestScan,
    Verdict,
)

log = logging.getLogger("functions")

BUFFER_BUDGET_BODIES = 4
"""All buffered requests together may hold this many MAX_BODY_BYTES bodies."""
LINGER_SECONDS = 2.0
"""How long a refused connection is drained before it is closed, so the client reads the
answer instead of a reset."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
PEEK_BYTES = 65536
"""Most bytes a lingering thread looks at for the next request: a typical photo request
fits; a larger one is read by the event loop, as any request that is not whole yet."""
_PEEK_NOW = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)
"""As a plain int: combining the flags per call is enum code, a few µs a request."""


class BufferedConn(TConn):
    """A connection and the request being read on it."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.scan: RequestScan | None = None
        self.pending = b""
        self.deadline = 0.0
        self.ready = False
        self.registered = False
        self.continued = False

    def init(self) -> None:
        super().init()
        if self.pending and self.parser is not None:
            self.parser.unreader.unread(self.pending)
            self.pending = b""


class BufferingWorker(ThreadWorker):
    """``gthread`` with requests read in the event loop; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            settings = Settings.from_env()
        except ConfigError:
            settings = Settings()  # the app answers every request with what is wrong
        self.read_timeout = settings.request_read_timeout
        self.limits = Limits(request_line=self.cfg.limit_request_line or 8190,
                             fields=self.cfg.limit_request_fields,
                             field_size=self.cfg.limit_request_field_size or 8190,
                             max_body=settings.max_body_bytes)
        self.buffer_budget = BUFFER_BUDGET_BODIES * settings.max_body_bytes
        self.buffered = 0
        self.reading: dict[BufferedConn, None] = {}
        self.paused: deque[BufferedConn] = deque()
        self.lingering: dict[socket.socket, float] = {}
        self.linger_ms = settings.keepalive_linger_ms
        self.queued = 0
        """Whole requests handed to the thread pool and not yet taken by a thread."""
        self.queued_lock = threading.Lock()

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl:
            raise RuntimeError("functions.serving does not terminate TLS; put it behind a "
                               "proxy or platform that does")

    # -- connections in ------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.enqueue_req(BufferedConn(self.cfg, client, address, listener.getsockname()))

    def enqueue_req(self, conn: BufferedConn) -> None:
        """Every way gthread hands a connection on passes here: a whole request goes to a
        thread; anything else is read in the event loop until it is whole."""
        if conn.ready:
            conn.ready = False
            with self.queued_lock:
                self.queued += 1
            super().enqueue_req(conn)
            return
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.scan = RequestScan(self.limits)
        conn.deadline = time.monotonic() + self.read_timeout
        conn.continued = False
        conn.sock.setblocking(False)
        self.reading[conn] = None
        if leftover and self._take(conn, leftover):
            return
        if not self._readable(conn):  # a kept-alive connection is here because it is
            self._watch(conn)         # readable: its request is usually all there already

    # -- reading -------------------------------------------------------------------------

    def _watch(self, conn: BufferedConn) -> None:
        if not conn.registered:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
            conn.registered = True

    def _unwatch(self, conn: BufferedConn) -> None:
        if conn.registered:
            self.poller.unregister(conn.sock)
            conn.registered = False

    def _readable(self, conn: BufferedConn, _sock: Any = None) -> bool:
        """Read what has arrived; False while the request is still being read and the
        connection should be watched for more."""
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._close(conn)
            return True
        if not data:
            self._ended_early(conn)
            return True
        if self._take(conn, data):
            return True
        if self.buffered > self.buffer_budget:
            self._unwatch(conn)  # resumed by `_resume` once buffers drain
            self.paused.append(conn)
            return True
        return False

    def _take(self, conn: BufferedConn, data: bytes) -> bool:
        """Add bytes to the request; True once the connection has left the reading state."""
        assert conn.scan is not None
        self.buffered += len(data)
        verdict = conn.scan.feed(data)
        if verdict.state == COMPLETE:
            self._dispatch(conn)
            return True
        if verdict.state in (TOO_LARGE, MALFORMED):
            self._refuse(conn, _error_for(verdict))
            return True
        if verdict.expects_continue and not conn.continued:
            conn.continued = True
            with contextlib.suppress(OSError):
                conn.sock.send(CONTINUE)
        return False

    def _dispatch(self, conn: BufferedConn) -> None:
        assert conn.scan is not None
        data = bytes(conn.scan.buffer)
        self._stop_reading(conn)
        if conn.parser is not None:
            conn.parser.unreader.unread(data)
        else:
            conn.pending = data
        conn.data_ready = True  # gthread must not wait on the socket: it is all here
        conn.ready = True
        conn.sock.setblocking(True)
        self.enqueue_req(conn)

    def _stop_reading(self, conn: BufferedConn) -> None:
        self._unwatch(conn)
        self.reading.pop(conn, None)
        if conn in self.paused:
            self.paused.remove(conn)
        if conn.scan is not None:
            self.buffered -= len(conn.scan.buffer)
            conn.scan = None
        self._resume()

    def _resume(self) -> None:
        while self.paused and self.buffered <= self.buffer_budget:
            self._watch(self.paused.popleft())

    def _ended_early(self, conn: BufferedConn) -> None:
        """The client closed its side before the request was whole."""
        scan = conn.scan
        if scan is None or not scan.buffer:
            self._close(conn)  # an idle connection, closed: nothing to answer
        elif scan.head_end < 0:
            self._refuse(conn, BadRequest("the connection closed before the request's head "
                                          "was complete"))
        elif scan.body_length >= 0:
            self._refuse(conn, BadRequest(
                f"the request body ended after {scan.received_body} of the "
                f"{scan.body_length} bytes its Content-Length announced"))
        else:
            self._refuse(conn, BadRequest("the chunked request body ended before its last "
                                          "chunk"))

    # -- deadlines (gthread calls murder_pending once a loop turn) -----------------------

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        for conn in [c for c in self.reading if c.deadline <= now or not self.alive]:
            scan = conn.scan
            if scan is None or not scan.buffer:
                self._close(conn)
            elif not self.alive:
                self._refuse(conn, ModelNotReady("the server is restarting; retry now",
                                                 headers={"Retry-After": "1"}))
            else:
                self._refuse(conn, RequestTimeout(
                    f"the request did not arrive whole within {self.read_timeout:g} s "
                    "(REQUEST_READ_TIMEOUT)"))
        for sock, until in list(self.lingering.items()):
            if until <= now:
                self._forget(sock)

    # -- answering without a thread ------------------------------------------------------

    def _refuse(self, conn: BufferedConn, error: ServiceError) -> None:
        self._stop_reading(conn)
        log.info("refused a request while reading it: %d %s", error.status, error.message)
        try:
            conn.sock.setblocking(False)
            conn.sock.send(response_bytes(error))
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self.lingering[conn.sock] = time.monotonic() + LINGER_SECONDS
        self.poller.register(conn.sock, selectors.EVENT_READ, self._drain)

    def _drain(self, sock: socket.socket) -> None:
        try:
            if sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        if self.lingering.pop(sock, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.poller.unregister(sock)
            sock.close()
            self.nr_conns -= 1

    def _close(self, conn: BufferedConn) -> None:
        self._stop_reading(conn)
        self.nr_conns -= 1
        conn.close()

    # -- in the thread -------------------------------------------------------------------

    def handle(self, conn: BufferedConn) -> Any:
        """Serve the request, then the client's next ones for as long as each arrives whole
        within KEEPALIVE_LINGER_MS of the answer before it (see the module docstring)."""
        with self.queued_lock:
            self.queued -= 1
        keepalive = super().handle(conn)
        while keepalive is True and self._next_request_arrived(conn):
            keepalive = super().handle(conn)
        return keepalive

    def _next_request_arrived(self, conn: BufferedConn) -> bool:
        """True once the connection's next request is whole in the parser's buffer, taken
        within KEEPALIVE_LINGER_MS; False hands the connection back to the event loop."""
        if not self.linger_ms or not self.alive or self.queued or conn.parser is None \
                or conn.parser.unreader.buf.getvalue():
            return False  # others wait for a thread, or the loop has pipelined bytes to scan
        data = whole_request(conn.sock, self.limits, self.linger_ms)
        if data is None:
            return False
        conn.parser.unreader.unread(data)
        return True

    def handle_request(self, req: Any, conn: Any) -> Any:
        """Writing the answer is bounded too: a client that stops reading it loses the
        connection after REQUEST_READ_TIMEOUT instead of holding the thread."""
        conn.sock.settimeout(self.read_timeout)
        return super().handle_request(req, conn)

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException
                     ) -> None:
        """gunicorn's parse errors as the function's JSON errors; anything else a 500."""
        error = parse_error(exc)
        if error is INTERNAL:
            self.log.exception("error handling a request")
        else:
            self.log.info("invalid request from %s: %s", (addr or ("",))[0], exc)
        try:
            client.settimeout(LINGER_SECONDS)
            client.sendall(response_bytes(error))
        except OSError:
            self.log.debug("could not send the error answer")


def whole_request(sock: socket.socket, limits: Limits, wait_ms: float) -> bytes | None:
    """The bytes waiting on ``sock`` once they hold a whole request (and maybe the start of
    the next), if they arrive within ``wait_ms``; else None, with nothing taken from the
    socket: not yet whole, over a limit, malformed or closed is the event loop's to read
    and answer. The bytes are peeked first and taken only once the scan calls them whole."""
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    if not poll.poll(wait_ms):
        return None
    try:
        peeked = sock.recv(PEEK_BYTES, _PEEK_NOW)
    except OSError:
        return None
    if not peeked or RequestScan(limits).feed(peeked).state != COMPLETE:
        return None
    taken = bytearray()
    try:
        while len(taken) < len(peeked):  # already in the socket's buffer: no wait
            chunk = sock.recv(len(peeked) - len(taken))
            if not chunk:
                return None
            taken += chunk
    except OSError:
        return None  # the connection broke: the event loop sees it and closes it
    return bytes(taken)


def parse_error(exc: BaseException) -> ServiceError:
    """What a client gets for an error gunicorn's parser raised."""
    if isinstance(exc, http_errors.LimitRequestLine):
        return UriTooLong(f"the request line is longer than the server's limit ({exc})")
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return HeaderFieldsTooLarge(f"the request's header fields are over the server's "
                                    f"limits ({clip(str(exc), 80)})")
    if isinstance(exc, (http_errors.InvalidChunkSize, http_errors.ChunkMissingTerminator,
                        http_errors.InvalidChunkExtension)):
        return BadRequest(f"the chunked request body is malformed ({clip(str(exc), 80)})")
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        return BadRequest(f"the request's Transfer-Encoding is not supported; send "
                          f"Content-Length or chunked ({clip(str(exc), 80)})")
    if isinstance(exc, http_errors.ParseException):
        return BadRequest(f"the request is not valid HTTP/1.1: {clip(str(exc), 120)}")
    return INTERNAL


def _error_for(verdict: Verdict) -> ServiceError:
    if verdict.status == 413:
        return PayloadTooLarge(verdict.message)
    if verdict.status == 414:
        return UriTooLong(verdict.message)
    if verdict.status == 431:
        return HeaderFieldsTooLarge(verdict.message)
    return BadRequest(verdict.message)


def response_bytes(error: ServiceError) -> bytes:
    """A whole HTTP/1.1 answer carrying the error's JSON, closing the connection."""
    response = render(error)
    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Error"
    headers = {**response.headers, "Content-Length": str(len(response.body)),
               "Connection": "close"}
    head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    return head.encode("latin-1") + response.body
