"""How much of an HTTP/1.1 request has arrived, read incrementally from its bytes.

The server's worker (`functions.serving.worker`) buffers each request in its event loop
and hands it to a thread only once it is whole; `RequestScan` tells it when that is, or
that the request can be answered at once without a thread:

* the head ends at the first empty line (CRLF CRLF); a request line or a head over the
  limits is `TOO_LARGE` (414, 431), before the rest is waited for;
* ``Content-Length: N`` is whole after N body bytes; over ``max_body`` it is `TOO_LARGE`
  (413) at once, without reading the body;
* ``Transfer-Encoding: chunked`` is followed chunk by chunk to the last chunk and its
  trailers; a malformed size line or a missing CRLF after a chunk is `MALFORMED` (400);
  more than ``max_body`` bytes of chunk data is `TOO_LARGE`;
* anything unusual in the framing (two lengths, a length and chunked, a coding other
  than chunked) is handed on as `COMPLETE`: gunicorn's own parser then refuses it, with
  every byte of the head already in hand, so no thread waits for the network.

The scan is no HTTP parser: it only finds where a request ends. gunicorn parses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NEED_MORE = "need_more"
COMPLETE = "complete"
TOO_LARGE = "too_large"
MALFORMED = "malformed"

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_CHUNK_LINE = 4096
"""A chunk size line with its extensions; gunicorn refuses long extensions too."""


@dataclass(frozen=True)
class Limits:
    request_line: int = 8190
    """gunicorn's ``limit_request_line`` (its largest allowed value)."""
    fields: int = 100
    field_size: int = 8190
    max_body: int = 6_000_000

    @property
    def head(self) -> int:
        """Bytes a head may take: the request line and every allowed field, with CRLFs."""
        return self.request_line + 2 + self.fields * (self.field_size + 2) + 2


@dataclass
class Verdict:
    state: str
    status: int = 0
    """For TOO_LARGE and MALFORMED: the HTTP status to answer with."""
    message: str = ""
    expects_continue: bool = False
    """The head asked for ``100 Continue`` before the body is sent."""


class RequestScan:
    """Feed it the bytes of one connection as they arrive; `feed` says where it stands."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.buffer = bytearray()
        self.head_end = -1
        self.body_length = -1
        """Content-Length, once the head is read; -1 for chunked or no body."""
        self._searched = 0
        self._chunked = False
        self._chunk_pos = 0
        self._chunk_data = 0
        self._trailers = False
        self.expects_continue = False

    @property
    def received_body(self) -> int:
        return max(0, len(self.buffer) - self.head_end) if self.head_end >= 0 else 0

    def feed(self, data: bytes) -> Verdict:
        self.buffer += data
        if self.head_end < 0:
            verdict = self._scan_head()
            if verdict is not None:
                return verdict
        if self._chunked:
            return self._scan_chunks()
        if len(self.buffer) - self.head_end >= max(self.body_length, 0):
            return Verdict(COMPLETE)
        return Verdict(NEED_MORE, expects_continue=self.expects_continue)

    def _scan_head(self) -> Verdict | None:
        end = self.buffer.find(b"\r\n\r\n", max(0, self._searched - 3))
        if end < 0:
            self._searched = len(self.buffer)
            line_end = self.buffer.find(b"\r\n")
            if (line_end < 0 and len(self.buffer) > self.limits.request_line + 2) or \
                    line_end > self.limits.request_line:
                return Verdict(TOO_LARGE, 414, f"the request line is longer than "
                                                f"{self.limits.request_line:,} bytes")
            if len(self.buffer) > self.limits.head:
                return Verdict(TOO_LARGE, 431, "the request's header fields are larger than "
                                               f"{self.limits.head:,} bytes in all")
            return Verdict(NEED_MORE)
        self.head_end = end + 4
        line_end = self.buffer.find(b"\r\n")
        if line_end > self.limits.request_line:
            return Verdict(TOO_LARGE, 414, f"the request line is longer than "
                                            f"{self.limits.request_line:,} bytes")
        lengths: list[bytes] = []
        codings: list[bytes] = []
        for line in bytes(self.buffer[line_end + 2:end]).split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if not colon:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
            elif name == b"expect" and value.strip().lower() == b"100-continue":
                self.expects_continue = True
        if codings:
            if lengths or codings != [b"chunked"]:
                return Verdict(COMPLETE)  # gunicorn refuses these framings itself
            self._chunked = True
            self._chunk_pos = self.head_end
            return None
        if not lengths:
            self.body_length = 0
            return Verdict(COMPLETE)
        if len(lengths) > 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
            return Verdict(COMPLETE)  # gunicorn refuses a bad or repeated length
        self.body_length = int(lengths[0])
        if self.body_length > self.limits.max_body:
            return Verdict(TOO_LARGE, 413, f"request body is {self.body_length} bytes; the "
                                           f"limit is {self.limits.max_body} bytes "
                                           "(MAX_BODY_BYTES)")
        return None

    def _scan_chunks(self) -> Verdict:
        buf = self.buffer
        while True:
            if self._trailers:  # after the last chunk: trailer fields up to an empty line
                if buf.startswith(b"\r\n", self._chunk_pos):
                    return Verdict(COMPLETE)
                end = buf.find(b"\r\n\r\n", self._chunk_pos)
                if end >= 0:
                    return Verdict(COMPLETE)
                if len(buf) - self._chunk_pos > self.limits.head:
                    return Verdict(TOO_LARGE, 431, "the chunked body's trailer fields are "
                                                   "too large")
                return Verdict(NEED_MORE)
            line_end = buf.find(b"\r\n", self._chunk_pos)
            if line_end < 0:
                if len(buf) - self._chunk_pos > _MAX_CHUNK_LINE:
                    return _malformed("a chunk size line is too long")
                return Verdict(NEED_MORE, expects_continue=self.expects_continue)
            if line_end - self._chunk_pos > _MAX_CHUNK_LINE:
                return _malformed("a chunk size line is too long")
            line = bytes(buf[self._chunk_pos:line_end])
            size_text = line.split(b";", 1)[0]
            if not _HEX.fullmatch(size_text):
                shown = size_text[:20].decode("latin-1")
                return _malformed(f"the chunk size {shown!r} is not a hexadecimal number")
            size = int(size_text, 16)
            if size == 0:
                self._trailers = True
                self._chunk_pos = line_end + 2
                continue
            self._chunk_data += size
            if self._chunk_data > self.limits.max_body:
                return Verdict(TOO_LARGE, 413, f"the chunked request body is over "
                                               f"{self.limits.max_body} bytes; the limit is "
                                               f"{self.limits.max_body} bytes (MAX_BODY_BYTES)")
            data_end = line_end + 2 + size
            if len(buf) < data_end + 2:
                self._chunk_data -= size  # counted again once the chunk is whole
                return Verdict(NEED_MORE)
            if buf[data_end:data_end + 2] != b"\r\n":
                return _malformed("a chunk is not followed by CRLF where its size says "
                                  "it ends")
            self._chunk_pos = data_end + 2


def _malformed(what: str) -> Verdict:
    return Verdict(MALFORMED, 400, f"the chunked request body is malformed: {what}")
