"""The REST backend against a hostile model server, many variants of each fault, called
directly (no function server): every fault is a 502 or a 504 within the deadline, and the
backend works again right after.

The model server is the byte-level fake of tests/backends/fakes.py (a real TF Serving
cannot be made to drip, redirect or send NaN on cue); the backend, `requests` and its
sockets are the real ones.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.backends.remote import Target
from functions.backends.tfserving_rest import MAX_NESTING, RestBackend
from functions.errors import BadGateway, GatewayTimeout, ServiceError
from modelmeta import ImageSpec, InputSpec, ModelMetadata, OutputSpec
from tests.backends.fakes import CLASS, FakeRestServer

METADATA = ModelMetadata(
    "digits", (InputSpec("image_bytes", "image_bytes", "string", (-1,),
                         image=ImageSpec(28, 28, 1)),),
    (OutputSpec("scores", "probabilities", "float32", (-1, 10)),))
INPUTS = {"image_bytes": np.array([b"\x89PNG fake"], dtype=object)}
TIMEOUT = 0.4
CAP = 200_000
def examples(count: int) -> settings:
    return settings(max_examples=count, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fake():
    server = FakeRestServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def backend(fake):
    """A short deadline, for the replies that drip."""
    rest = RestBackend(METADATA, Target("digits"), fake.url, timeout=TIMEOUT, retries=0,
                       max_reply_bytes=CAP)
    yield rest
    rest.close()


@pytest.fixture(scope="module")
def roomy(fake):
    """A deadline no loaded machine reaches, for the replies that are wrong, not slow."""
    rest = RestBackend(METADATA, Target("digits"), fake.url, timeout=30, retries=0,
                       max_reply_bytes=CAP)
    yield rest
    rest.close()


def fails(backend, fake, reply=None, drip=None) -> tuple[ServiceError, float]:
    fake.mode = "custom" if reply is not None else "ok"
    if reply is not None:
        fake.reply = reply
    fake.drip = drip
    started = time.monotonic()
    try:
        with pytest.raises(ServiceError) as caught:
            backend.predict(INPUTS)
    finally:
        fake.drip = None
    took = time.monotonic() - started
    fake.mode = "ok"
    assert int(np.argmax(backend.predict(INPUTS)["scores"][0])) == CLASS  # works again
    return caught.value, took


def scores_json(values: list[str]) -> bytes:
    return ('{"outputs": [[' + ", ".join(values) + "]]}").encode()


@examples(60)
@given(token=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]),
       at=st.integers(0, 9))
def test_non_finite_scores_are_502(roomy, fake, token, at):
    values = ["0.1"] * 10
    values[at] = token
    error, _ = fails(roomy, fake, (200, {}, scores_json(values), False))
    assert isinstance(error, BadGateway) and error.status == 502
    assert error.message.startswith("the model server sent a reply that does not fit the "
                                    "model: ")


@examples(40)
@given(depth=st.integers(MAX_NESTING - 1, 200_000), key=st.booleans())
def test_deep_nesting_is_502_never_a_crash(roomy, fake, depth, key):
    inner = b'{"a": ' * depth + b"1" + b"}" * depth if key else \
        b"[" * depth + b"1" + b"]" * depth
    error, _ = fails(roomy, fake, (200, {}, b'{"outputs": ' + inner + b"}", False))
    assert error.status == 502


@examples(30)
@given(size=st.integers(CAP + 1, 4 * CAP), chunked=st.booleans(),
       declared=st.booleans())
def test_replies_over_the_cap_are_502(roomy, fake, size, chunked, declared):
    body = b'{"outputs": "' + b"x" * size + b'"}'
    headers = {} if chunked or declared else {"Content-Length": str(len(body))}
    error, _ = fails(roomy, fake, (200, headers, body, chunked))
    assert error.message == (f"the model server's reply is over {CAP:,} bytes "
                             "(MAX_UPSTREAM_REPLY_BYTES)")


@pytest.mark.parametrize("status", [300, 301, 302, 303, 305, 307, 308])
def test_redirects_are_502_and_never_followed(roomy, fake, status):
    elsewhere = FakeRestServer()
    try:
        error, _ = fails(roomy, fake, (status, {"Location": elsewhere.url +
                                                  "/v1/models/digits:predict"}, b"", False))
        assert error.message.startswith(f"the model server answered with a redirect (HTTP "
                                        f"{status})")
        assert elsewhere.calls == []
    finally:
        elsewhere.stop()


@examples(40)
@given(body=st.binary(max_size=300), status=st.sampled_from([200, 400, 404, 418, 500, 503]))
def test_garbage_replies_are_mapped_never_raised_raw(roomy, fake, body, status):
    error, _ = fails(roomy, fake, (status, {}, body, False))
    assert error.status in (400, 404, 502, 503)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["status", "headers", "body"])
@pytest.mark.parametrize("interval", [0.05, 0.15, 0.5])
def test_dripping_replies_end_at_the_deadline(backend, fake, stage, interval):
    error, took = fails(backend, fake, drip=(interval, stage))
    assert isinstance(error, GatewayTimeout)
    assert error.message == f"the model server did not answer within {TIMEOUT:g} s"
    assert took < TIMEOUT + 1.0  # within the deadline and a second, loaded machine or not
