"""The bench's HTTP client: sequential timings and fixed-size concurrent runs, on loopback.

Plain `http.client` with one keep-alive connection per client thread: the
lightest client the standard library has, so that on a 2-core machine the
client takes as little CPU from the server as possible. Every loop is bounded
by a request count and every socket by a timeout; every answer must be a 200
with the JSON the server promises, or the run stops with the server's words.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HOST = "127.0.0.1"
REQUEST_TIMEOUT = 120.0


class BenchError(RuntimeError):
    """A measurement could not be taken: a server refused, answered wrong or never came up."""


@dataclass(frozen=True)
class Request:
    """One predict request, sent the same way every time."""

    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    check: Callable[[bytes], None] | None = None
    """Raises if a 200's body is not the answer expected."""
    method: str = "POST"


class Connection:
    """A keep-alive HTTP/1.1 connection that reconnects once if the server closed it while idle.

    Requests go out as one prebuilt buffer and answers are read by ``Content-Length`` (or
    chunks) straight off the socket: `http.client` parses every answer's headers with the
    email package, about 100 µs of the client's CPU a request on these cores, which the
    latency rows would count against the server and the throughput rows take from it.
    """

    def __init__(self, port: int, timeout: float = REQUEST_TIMEOUT) -> None:
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._wire: dict[int, tuple[Request, bytes]] = {}

    def _bytes(self, request: Request) -> bytes:
        cached = self._wire.get(id(request))
        if cached is not None and cached[0] is request:
            return cached[1]
        head = [f"{request.method} {request.path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        head += [f"{name}: {value}" for name, value in request.headers.items()]
        body = request.body if request.method != "GET" else b""
        if request.method != "GET":
            head.append(f"Content-Length: {len(body)}")
        wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        self._wire[id(request)] = (request, wire)
        return wire

    def post(self, request: Request) -> tuple[int, bytes]:
        """Send ``request`` (a POST unless it says otherwise); the status and body."""
        wire = self._bytes(request)
        for attempt in (1, 2):
            fresh = self._sock is None
            if self._sock is None:
                self._sock = socket.create_connection((HOST, self.port), timeout=self.timeout)
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._buffer = b""
            try:
                self._sock.sendall(wire)
                return self._read_response()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2 or fresh:
                    raise
        raise AssertionError("unreachable")

    def _fill(self) -> None:
        assert self._sock is not None
        data = self._sock.recv(262144)
        if not data:
            raise http.client.RemoteDisconnected("the server closed the connection")
        self._buffer += data

    def _take(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _read_response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise http.client.BadStatusLine(lines[0])
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int(self._line().split(b";")[0], 16):
                chunks.append(self._take(size))
                self._take(2)
            while self._line():  # trailers, up to the blank line
                pass
            body = b"".join(chunks)
        else:  # no length: the body runs to the end of the connection
            try:
                while True:
                    self._fill()
            except http.client.RemoteDisconnected:
                pass
            body, self._buffer = self._buffer, b""
            self.close()
            return status, body
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""


def ok_body(status: int, body: bytes, request: Request, what: str) -> bytes:
    if status != 200:
        raise BenchError(f"{what} answered {status}: {body[:300]!r}")
    if request.check is not None:
        request.check(body)
    return body


def post_once(port: int, request: Request, what: str = "server") -> bytes:
    conn = Connection(port)
    try:
        status, body = conn.post(request)
    finally:
        conn.close()
    return ok_body(status, body, request, what)


class Sampler:
    """Times one request at a time on a kept-open connection: one sample per call."""

    def __init__(self, port: int, request: Request, what: str = "server") -> None:
        self._conn = Connection(port)
        self._request = request
        self._what = what

    def __call__(self) -> float:
        started = time.perf_counter()
        status, body = self._conn.post(self._request)
        seconds = time.perf_counter() - started
        ok_body(status, body, self._request, self._what)
        return seconds

    def close(self) -> None:
        self._conn.close()


def interleaved(samplers: dict[str, Callable[[], float]], count: int,
                warmup: int) -> dict[str, list[float]]:
    """``count`` samples of each sampler, taken in turn, in a fresh order each cycle
    (a seeded shuffle: the same orders every run).

    Taking turns request by request, rather than one block after another,
    means that when other work on the machine slows everything for a second,
    every side of the comparison is slowed alike. Shuffling means no side always
    comes right after the same other one: a request that follows a TensorFlow
    call in another process finds that process's threads still spinning on the
    cores and the caches full of its model, and with a fixed order one side
    would pay that every time (measured: 1.6 ms of a 25 ms p50).
    """
    names = list(samplers)
    order = random.Random(0)
    for _ in range(warmup):
        for sample in samplers.values():
            sample()
    out: dict[str, list[float]] = {name: [] for name in samplers}
    for _ in range(count):
        order.shuffle(names)
        for name in names:
            out[name].append(samplers[name]())
    return out


@dataclass(frozen=True)
class Burst:
    """``requests`` answered by ``concurrency`` clients in ``seconds`` of wall time."""

    concurrency: int
    requests: int
    seconds: float


def burst(port: int, request: Request, concurrency: int, total: int,
          what: str = "server") -> Burst:
    """Send ``total`` requests from ``concurrency`` threads; time first send to last answer.

    Each thread opens its connection and sends one untimed request first, so the
    timed part never includes a TCP handshake or a cold thread in the server.
    """
    if concurrency < 1 or total < concurrency:
        raise BenchError(f"a burst needs 1 <= concurrency <= total, got {concurrency}, {total}")
    remaining = [total]
    lock = threading.Lock()
    ready = threading.Barrier(concurrency + 1)
    go = threading.Event()
    errors: list[BaseException] = []

    def take() -> bool:
        with lock:
            if remaining[0] <= 0 or errors:
                return False
            remaining[0] -= 1
            return True

    def client() -> None:
        conn = Connection(port)
        try:
            try:
                ok_body(*conn.post(request), request, what)
            finally:
                ready.wait(timeout=REQUEST_TIMEOUT)
            go.wait(timeout=REQUEST_TIMEOUT)
            while take():
                ok_body(*conn.post(request), request, what)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, name=f"bench-client-{i}", daemon=True)
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=REQUEST_TIMEOUT)
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join(timeout=REQUEST_TIMEOUT * total)
    seconds = time.perf_counter() - started
    if errors:
        raise BenchError(f"{what} failed under concurrency {concurrency}: {errors[0]}") \
            from errors[0]
    if any(thread.is_alive() for thread in threads):
        raise BenchError(f"{what} did not answer {total} requests in time")
    return Burst(concurrency=concurrency, requests=total, seconds=seconds)


def wait_until_ok(port: int, request: Request, deadline: float, alive: Callable[[], bool],
                  what: str = "server", poll: float = 0.01,
                  on_listen: Callable[[float], None] | None = None) -> float:
    """Block until the server answers ``request`` with a 200; return ``perf_counter()`` then.

    Polls the port for a listener every ``poll`` seconds, then sends the real
    request; a server still loading may hold it (ours does) or answer 503 (then
    it is retried). ``alive`` reports whether the server process still runs; ``on_listen``
    is told the ``perf_counter()`` of the first accepted connection.
    """
    listening = False
    while time.perf_counter() < deadline:
        if not alive():
            raise BenchError(f"{what} exited before answering")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                pass
        except OSError:
            time.sleep(poll)
            continue
        if not listening:
            listening = True
            if on_listen is not None:
                on_listen(time.perf_counter())
        conn = Connection(port, timeout=max(1.0, deadline - time.perf_counter()))
        try:
            status, body = conn.post(request)
        except (OSError, http.client.HTTPException):
            time.sleep(poll)
            continue
        finally:
            conn.close()
        if status == 200:
            now = time.perf_counter()
            ok_body(status, body, request, what)
            return now
        if status not in (502, 503):
            raise BenchError(f"{what} answered {status} on start-up: {body[:300]!r}")
        time.sleep(poll)
    raise BenchError(f"{what} did not answer 200 before the deadline")
