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


class AnswerReader:
    """Answers read one after another from a connection, keeping what arrives early (the
    next answer to a pipelined request) for the next call."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def answer(self) -> Answer:
        while b"\r\n\r\n" not in self.buffer:
            if not self._more():
                raise AssertionError(f"connection closed without an answer: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if status == 100:  # an interim answer: the real one follows
            return self.answer()
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "-1"))
        while length < 0 or len(self.buffer) < length:
            if not self._more():
                break
        if length < 0:
            body, self.buffer = self.buffer, b""
        else:
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Answer(status, headers, body)


def read_answer(sock: socket.socket) -> Answer:
    return AnswerReader(sock).answer()
