"""Where a request ends (functions/serving/request_scan.py), on generated requests fed in
every split: whole exactly at its last byte, refused as soon as its framing says so."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.serving.request_scan import (
    COMPLETE,
    MALFORMED,
    NEED_MORE,
    TOO_LARGE,
    Limits,
    RequestScan,
)

LIMITS = Limits(max_body=10_000)


def feed_in_pieces(data: bytes, cuts: list[int]) -> list[str]:
    """The verdict after each piece."""
    scan = RequestScan(LIMITS)
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {len(data)})
    states, start = [], 0
    for end in points:
        if end == start:
            continue
        states.append(scan.feed(data[start:end]).state)
        start = end
    return states


def chunked(body: bytes, sizes: list[int], extension: bytes = b"", trailers: bytes = b"") -> bytes:
    out, pos = b"", 0
    for size in sizes:
        piece = body[pos:pos + size]
        if not piece:
            break
        out += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
        pos += len(piece)
    if pos < len(body):
        out += b"%x\r\n%s\r\n" % (len(body) - pos, body[pos:])
    return out + b"0\r\n" + trailers + b"\r\n"


HEAD = b"POST /predict HTTP/1.1\r\nHost: fn\r\nContent-Type: image/png\r\n"


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 4000), max_size=12),
       pipelined=st.booleans())
def test_content_length_requests_are_whole_at_their_last_byte(body, cuts, pipelined):
    request = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    states = feed_in_pieces(request, cuts)
    assert states[-1] == COMPLETE
    assert set(states[:-1]) <= {NEED_MORE}
    if pipelined:  # the next request's bytes arriving with this one change nothing
        assert feed_in_pieces(request + b"GET /livez HTTP/1.1\r\n", cuts)[-1] == COMPLETE


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=3000), sizes=st.lists(st.integers(1, 700), max_size=8),
       cuts=st.lists(st.integers(0, 5000), max_size=12),
       extension=st.sampled_from([b"", b";a=b", b";x"]),
       trailers=st.sampled_from([b"", b"X-Trailer: 1\r\n"]))
def test_chunked_requests_are_whole_after_the_last_chunk_and_trailers(body, sizes, cuts,
                                                                      extension, trailers):
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, sizes, extension,
                                                                      trailers)
    states = feed_in_pieces(request, cuts)
    assert states[-1] == COMPLETE
    assert set(states[:-1]) <= {NEED_MORE}


@settings(max_examples=200, deadline=None)
@given(size_line=st.binary(min_size=1, max_size=12).filter(
    lambda b: b"\r" not in b and b"\n" not in b and b";" not in b
    and not all(c in b"0123456789abcdefABCDEF" for c in b)))
def test_a_size_line_that_is_not_hex_is_malformed(size_line):
    scan = RequestScan(LIMITS)
    verdict = scan.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\nabc")
    assert (verdict.state, verdict.status) == (MALFORMED, 400)
    assert verdict.message.startswith("the chunked request body is malformed: the chunk size ")


@pytest.mark.parametrize("body", [b"3\r\nabcX\r\n", b"3\r\nabcdef\r\n0\r\n\r\n",
                                  b"1" * 5000, b"3;" + b"e" * 5000 + b"\r\n"])
def test_other_malformed_chunking(body):
    verdict = RequestScan(LIMITS).feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert (verdict.state, verdict.status) == (MALFORMED, 400)


@pytest.mark.parametrize(("length", "state"), [(10_000, NEED_MORE), (10_001, TOO_LARGE),
                                               (10**30, COMPLETE)])
def test_declared_bodies_over_the_limit_are_refused_before_they_arrive(length, state):
    verdict = RequestScan(LIMITS).feed(HEAD + b"Content-Length: %d\r\n\r\n" % length)
    assert verdict.state == state  # 10**30 digits: gunicorn refuses that length itself
    if state == TOO_LARGE:
        assert (verdict.status, verdict.message) == (
            413, "request body is 10001 bytes; the limit is 10000 bytes (MAX_BODY_BYTES)")


def test_chunked_bodies_over_the_limit_are_refused_as_they_arrive():
    scan = RequestScan(LIMITS)
    verdict = scan.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"1388\r\n")
    assert verdict.state == NEED_MORE
    verdict = scan.feed(b"x" * 5000 + b"\r\n1389\r\n")
    assert (verdict.state, verdict.status) == (TOO_LARGE, 413)


@pytest.mark.parametrize("size", [8190, 8191, 100_000, 3_000_000])
def test_request_lines_over_the_limit_are_414_before_their_end(size):
    line = b"GET /" + b"a" * (size - 15) + b" HTTP/1.1"
    scan = RequestScan(LIMITS)
    verdict = scan.feed(line[:min(len(line), 9000)])  # the rest never needs to arrive
    if len(line) <= 8190:
        assert verdict.state == NEED_MORE
    else:
        assert (verdict.state, verdict.status) == (TOO_LARGE, 414)


def test_heads_over_the_limit_are_431():
    scan = RequestScan(Limits(fields=3, field_size=100))
    verdict = scan.feed(b"GET / HTTP/1.1\r\n" + b"X-A: " + b"b" * 9000)
    assert (verdict.state, verdict.status) == (TOO_LARGE, 431)


@pytest.mark.parametrize("framing", [
    b"Content-Length: 3\r\nContent-Length: 4\r\n", b"Content-Length: 3\r\nTransfer-Encoding: "
    b"chunked\r\n", b"Transfer-Encoding: gzip, chunked\r\n", b"Content-Length: -1\r\n",
    b"Content-Length: 0x10\r\n", b"Transfer-Encoding: identity\r\n"])
def test_ambiguous_framing_goes_to_gunicorn_at_once(framing):
    """gunicorn refuses these itself (request smuggling shapes); the whole head is there."""
    assert RequestScan(LIMITS).feed(HEAD + framing + b"\r\n").state == COMPLETE


def test_expect_100_continue_is_noticed():
    scan = RequestScan(LIMITS)
    verdict = scan.feed(HEAD + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert verdict.state == NEED_MORE and verdict.expects_continue
    assert scan.feed(b"12345").state == COMPLETE
