"""HTTP exchanges that end by their deadline, however slowly the other side sends.

A timeout in `requests` bounds each socket operation, not the exchange: a server that
answers one byte a second never lets a read time out, and holds the caller for as long
as it likes (10x ``REQUEST_TIMEOUT`` and more, measured). Here every exchange (connect,
send, status line, headers, the whole body) runs under a watchdog: when the deadline
passes, the connection's socket is shut down from the watchdog's thread, which wakes the
blocked read or write at once, and the exchange reports `DeadlineWatch.expired`.

    session = deadline_session(pool_size=32)
    with watch(seconds_left) as exchange:
        response = session.get(url, timeout=(seconds_left, seconds_left), stream=True)
        ...  # read the body
    if exchange.expired: ...  # whatever the read raised, the deadline is why

The connections an exchange uses are recorded by the session's connection pools through
a context variable, so concurrent exchanges on one session never touch each other's
sockets. TLS connections are shut down the same way (the TCP socket under the TLS layer).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_RECHECK_SECONDS = 0.05
"""How soon an expired watch looks again for a connection still being opened."""


class DeadlineWatch:
    """The connections of one exchange, and whether its deadline passed."""

    def __init__(self) -> None:
        self.expired = False
        self.finished = False
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, connection: Any) -> None:
        with self._lock:
            self._connections.append(connection)
            expired = self.expired
        if expired:
            _shut(connection)

    def start(self, seconds: float) -> None:
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def finish(self) -> None:
        with self._lock:
            self.finished = True
        if self._timer is not None:
            self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            if self.finished:
                return
            self.expired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)
        # A connection still being opened has no socket yet: look again shortly (its
        # connect timeout ends it by the deadline anyway; this catches a connect that
        # succeeds just before and would go on reading at the other side's pace).
        self._timer = threading.Timer(_RECHECK_SECONDS, self._expire)
        self._timer.daemon = True
        self._timer.start()


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


_CURRENT: ContextVar[DeadlineWatch | None] = ContextVar("http_deadline_watch", default=None)


@contextlib.contextmanager
def watch(seconds: float) -> Iterator[DeadlineWatch]:
    """Run the exchanges of this block under one deadline ``seconds`` from now."""
    exchange = DeadlineWatch()
    token = _CURRENT.set(exchange)
    exchange.start(seconds)
    try:
        yield exchange
    finally:
        exchange.finish()
        _CURRENT.reset(token)


class _Watched:
    """Mixed into a connection pool: each connection it hands out joins the current watch."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        connection = super()._get_conn(timeout)  # type: ignore[misc]
        exchange = _CURRENT.get()
        if exchange is not None:
            exchange.add(connection)
        return connection


class _WatchedHTTPConnectionPool(_Watched, HTTPConnectionPool):
    pass


class _WatchedHTTPSConnectionPool(_Watched, HTTPSConnectionPool):
    pass


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


def deadline_session(pool_size: int) -> requests.Session:
    """A session whose connections `watch` can shut down. Pass ``allow_redirects=False``
    to each request: a 3xx from a model server is an answer, not a hop to follow."""
    session = requests.Session()
    adapter = _WatchedAdapter(pool_connections=1, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
