"""Raw HTTP to the project's server (`python -m functions.serving`, started by
`tests.conftest.start_server`): what the framing and slow-client tests send that `requests`
will not, and where the worker and its memory are."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Server


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def worker_pid(server: Server) -> int:
    """The one worker gunicorn forked (WORKERS=1): where the model and the memory are."""
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)


def exchange(server: Server, data: bytes, *, half_close: bool = False,
             timeout: float = 15) -> Answer:
    """Send raw bytes on a fresh connection; read the answer until the server closes or
    the announced Content-Length is in."""
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before it has read everything
        return read_answer(sock)


def read_answer(sock: socket.socket) -> Answer:
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed without an answer: {raw!r}")
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    if status == 100:  # an interim answer: the real one follows
        return read_answer_after(sock, body)
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(status, headers, body[:length] if length >= 0 else body)


def read_answer_after(sock: socket.socket, rest: bytes) -> Answer:
    class Replay:
        def __init__(self) -> None:
            self.rest = rest

        def recv(self, size: int) -> bytes:
            if self.rest:
                out, self.rest = self.rest, b""
                return out
            return sock.recv(size)

    return read_answer(Replay())  # type: ignore[arg-type]
