"""functions.backends.batching: requests queued behind a running call share the next one.

The inner backend is a stand-in that records its calls and can be held mid-call, so the
tests decide exactly which requests arrive while the model is busy; the real models go
through the same wrapper in every server test (it is on by default).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from functions.backends.batching import BatchingBackend
from functions.errors import InvalidImage, ServiceError
from modelmeta import ImageSpec, InputSpec, ModelMetadata, OutputSpec

METADATA = ModelMetadata(
    "echo", (InputSpec("image_bytes", "image_bytes", "string", (-1,),
                       image=ImageSpec(8, 8, 1)),),
    (OutputSpec("scores", "probabilities", "float32", (-1, 2)),))


class Recording:
    """Echoes each image's first byte as its score; `gate` holds a call until released."""

    metadata = METADATA

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def predict(self, inputs):
        items = list(inputs["image_bytes"])
        self.calls.append(items)
        self.entered.set()
        self.gate.wait(5)
        if b"bad" in items:
            raise InvalidImage("the image data is corrupt or truncated and could not be decoded")
        if b"boom" in items:
            raise ServiceError("the model ran out of memory on this request")
        return {"scores": np.array([[item[0], 0] for item in items], np.float32)}


def batch(*items: bytes) -> dict[str, np.ndarray]:
    return {"image_bytes": np.array(items, dtype=object)}


def test_a_lone_request_runs_at_once_alone():
    inner = Recording()
    backend = BatchingBackend(inner, max_images=8)
    started = time.monotonic()
    out = backend.predict(batch(b"a", b"b"))
    assert time.monotonic() - started < 0.5
    assert inner.calls == [[b"a", b"b"]]
    assert out["scores"][:, 0].tolist() == [ord("a"), ord("b")]


def run_queued(backend, inner, requests):
    """Hold the model busy with a first request, queue `requests` behind it, release."""
    inner.gate.clear()
    results: dict[int, object] = {}

    def worker(i, payload):
        try:
            results[i] = backend.predict(payload)
        except ServiceError as exc:
            results[i] = exc

    first = threading.Thread(target=worker, args=(-1, batch(b"0")))
    first.start()
    assert inner.entered.wait(5)
    threads = []
    for i, payload in enumerate(requests):
        thread = threading.Thread(target=worker, args=(i, payload))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # arrive in order
    inner.gate.set()
    for thread in [first, *threads]:
        thread.join(5)
    return results


def test_requests_arriving_while_busy_share_the_next_call_and_get_their_own_rows():
    inner = Recording()
    backend = BatchingBackend(inner, max_images=8)
    results = run_queued(backend, inner, [batch(b"a"), batch(b"b", b"c"), batch(b"d")])
    assert inner.calls == [[b"0"], [b"a", b"b", b"c", b"d"]]
    assert results[0]["scores"][:, 0].tolist() == [ord("a")]
    assert results[1]["scores"][:, 0].tolist() == [ord("b"), ord("c")]
    assert results[2]["scores"][:, 0].tolist() == [ord("d")]


def test_a_call_never_exceeds_max_images():
    inner = Recording()
    backend = BatchingBackend(inner, max_images=3)
    results = run_queued(backend, inner, [batch(b"a", b"b"), batch(b"c", b"d"), batch(b"e")])
    assert inner.calls == [[b"0"], [b"a", b"b"], [b"c", b"d", b"e"]]
    assert results[2]["scores"][:, 0].tolist() == [ord("e")]


def test_a_bad_image_fails_only_its_own_request():
    inner = Recording()
    backend = BatchingBackend(inner, max_images=8)
    results = run_queued(backend, inner, [batch(b"a"), batch(b"bad"), batch(b"c")])
    assert isinstance(results[1], InvalidImage)
    assert results[0]["scores"][:, 0].tolist() == [ord("a")]
    assert results[2]["scores"][:, 0].tolist() == [ord("c")]
    assert [b"bad"] in inner.calls  # retried alone to find the culprit


def test_any_other_failure_reaches_every_request_of_the_call():
    inner = Recording()
    backend = BatchingBackend(inner, max_images=8)
    results = run_queued(backend, inner, [batch(b"a"), batch(b"boom")])
    assert all(isinstance(results[i], ServiceError) for i in (0, 1))
    assert inner.calls == [[b"0"], [b"a", b"boom"]]


@pytest.mark.parametrize("threads", [4, 16])
def test_many_threads_all_answered_correctly(threads):
    inner = Recording()
    inner.gate.set()
    backend = BatchingBackend(inner, max_images=5)
    answers: dict[int, list[float]] = {}

    def worker(i):
        for round_ in range(20):
            item = bytes([65 + (i * 7 + round_) % 50])
            answers.setdefault(i, []).append(backend.predict(batch(item))["scores"][0, 0])
            assert answers[i][-1] == item[0]

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(10)
    assert sum(len(v) for v in answers.values()) == threads * 20
    assert sum(len(c) for c in inner.calls) == threads * 20
    assert max(len(c) for c in inner.calls) <= 5


def test_each_request_records_the_size_of_the_call_that_served_it():
    from functions import metrics

    inner = Recording()
    backend = BatchingBackend(inner, max_images=8)
    recorded: dict[int, list[int]] = {}
    inner.gate.clear()

    def worker(i, payload):
        measured, token = metrics.begin()
        try:
            measured.batches.append(len(payload["image_bytes"]))  # as the pipeline does
            backend.predict(payload)
            recorded[i] = measured.batches
        finally:
            metrics.end(token)

    first = threading.Thread(target=worker, args=(0, batch(b"0")))
    first.start()
    assert inner.entered.wait(5)
    others = [threading.Thread(target=worker, args=(i, batch(b"a", b"b"))) for i in (1, 2)]
    for thread in others:
        thread.start()
    time.sleep(0.1)
    inner.gate.set()
    for thread in [first, *others]:
        thread.join(5)
    assert recorded == {0: [1], 1: [4], 2: [4]}


class Concurrent(Recording):
    """Records how many calls were inside the model at once."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0
        self.most_inside = 0
        self.count_lock = threading.Lock()
        self.both_in = threading.Event()

    def predict(self, inputs):
        with self.count_lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            if self.inside >= 2:
                self.both_in.set()
        try:
            return super().predict(inputs)
        finally:
            with self.count_lock:
                self.inside -= 1


def test_with_two_calls_a_second_request_runs_beside_the_first_and_the_rest_merge():
    inner = Concurrent()
    backend = BatchingBackend(inner, max_images=8, calls=2)
    inner.gate.clear()
    results: dict[str, object] = {}

    def worker(name, payload):
        results[name] = backend.predict(payload)

    first = threading.Thread(target=worker, args=("first", batch(b"0")))
    second = threading.Thread(target=worker, args=("second", batch(b"1")))
    first.start()
    second.start()
    assert inner.both_in.wait(5)  # the second did not wait for the first
    later = [threading.Thread(target=worker, args=(name, batch(name.encode())))
             for name in ("a", "b", "c")]
    for thread in later:
        thread.start()
        time.sleep(0.05)
    assert len(inner.calls) == 2  # both calls busy: the rest queue
    inner.gate.set()
    for thread in [first, second, *later]:
        thread.join(5)
    # Both calls end together and each takes queued requests into its next call: the
    # three share at most two calls (which two is a race), never three alone.
    later_calls = inner.calls[2:]
    assert sorted(item for call in later_calls for item in call) == [b"a", b"b", b"c"]
    assert 1 <= len(later_calls) <= 2
    assert inner.most_inside == 2
    for name in ("a", "b", "c"):
        assert results[name]["scores"][:, 0].tolist() == [ord(name)]


def test_a_full_request_waits_for_a_free_call_like_any_other():
    inner = Concurrent()
    backend = BatchingBackend(inner, max_images=2, calls=1)
    results = run_queued(backend, inner, [batch(b"a", b"b", b"c"), batch(b"d")])
    assert inner.most_inside == 1  # never two model calls at once, whatever the size
    assert inner.calls == [[b"0"], [b"a", b"b", b"c"], [b"d"]]
    assert results[0]["scores"][:, 0].tolist() == [ord("a"), ord("b"), ord("c")]


@pytest.mark.parametrize("calls", [1, 2, 3])
@pytest.mark.parametrize("threads", [4, 16])
def test_never_more_calls_at_once_than_allowed_and_every_answer_its_own(calls, threads):
    inner = Concurrent()

    def slow_predict(inputs, _predict=inner.predict):
        time.sleep(0.001)
        return _predict(inputs)

    backend = BatchingBackend(inner, max_images=4, calls=calls)
    inner.predict = slow_predict  # type: ignore[method-assign]
    errors: list[str] = []

    def worker(i):
        for round_ in range(15):
            item = bytes([65 + (i * 7 + round_) % 50])
            size = 1 + (i + round_) % 3
            out = backend.predict(batch(*[item] * size))["scores"][:, 0].tolist()
            if out != [item[0]] * size:
                errors.append(f"{i}/{round_}: {out}")

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(20)
    assert errors == []
    assert 1 <= inner.most_inside <= calls
    assert sum(len(c) for c in inner.calls) == sum(
        1 + (i + r) % 3 for i in range(threads) for r in range(15))
