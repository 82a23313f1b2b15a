"""Concurrent requests merged into model calls, up to a few calls at once, without making
any request wait for a timer.

A model answers a batch of images faster than the same images one call at a time, and
on several cores two calls at once do more than one: on 2 cores the bench MobileNetV2,
TensorFlow with one intra-op thread, does 65 images/s called back to back, 129 from two
callers at once and 145 on batches of 4 from two callers. So up to ``calls`` model calls
run at once; a request that arrives while all of them are busy queues, and the first
call to finish takes every queued request (up to ``max_images``) into its next call. There
is no timer: a request that finds a call free runs at once, alone, so a lone client
(concurrency 1) pays nothing.

    request A ─▶ a call is free: A runs now ─────────────────────▶ A answered
    request B ─▶ a call is free: B runs now (calls=2) ───────────▶ B answered
    requests C, D, E arrive while A and B run ─▶ queue ─▶ one call [C, D, E] ─▶ each answered

The thread of the oldest waiting request runs the next call, so no thread serves more
than one call and no extra thread exists. Inputs are concatenated along the batch axis
and the outputs split back by each request's image count. If the merged call refuses
an image (`InvalidImage`), each request is retried alone, so only the request holding
the bad image gets the error.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from functions import metrics
from functions.backends import Backend
from functions.errors import InvalidImage


@dataclass(eq=False)
class _Call:
    inputs: dict[str, np.ndarray]
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    """Set when this request's thread must run the next merged call (its own among it)."""
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    merged: int = 0
    """Images in the model call that served this request (its own and the others')."""


class BatchingBackend:
    """`Backend` over another one: at most ``calls`` model calls at once, each merging the
    requests that queued while all were busy (up to ``max_images`` images)."""

    def __init__(self, inner: Backend, max_images: int, calls: int = 1) -> None:
        self.inner = inner
        self.metadata = inner.metadata
        self.max_images = max_images
        self.calls = max(1, calls)
        self._lock = threading.Lock()
        self._queue: deque[_Call] = deque()
        self._running = 0

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size = len(next(iter(inputs.values()))) if inputs else 0
        call = _Call(inputs, size)  # a full one (max_images or more) runs alone, in turn
        with self._lock:
            if self._running < self.calls:
                self._running += 1
                call.lead = True
            else:
                self._queue.append(call)
        if not call.lead:
            call.done.wait()  # until answered, or handed a free call to lead
        if call.lead:
            self._run(call)
        if call.error is not None:
            raise call.error
        assert call.outputs is not None
        batches = metrics.current().batches
        if batches and call.merged:
            batches[-1] = call.merged  # the images per model call, merged ones included
        return call.outputs

    def _run(self, own: _Call) -> None:
        """Run ``own`` with the oldest queued requests as one call; then hand this call's
        slot to the oldest request still queued, or free it."""
        with self._lock:
            batch = [own]
            total = own.size
            while self._queue and total + self._queue[0].size <= self.max_images:
                total += self._queue[0].size
                batch.append(self._queue.popleft())
        try:
            self._serve(batch)
        finally:
            with self._lock:
                follower = self._queue.popleft() if self._queue else None
                if follower is not None:
                    follower.lead = True  # out of the queue: no other call can take it
                else:
                    self._running -= 1
            for call in batch[1:]:
                call.done.set()
            if follower is not None:
                follower.done.set()

    def _serve(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            _settle(batch[0], self.inner)
            return
        merged = {name: np.concatenate([c.inputs[name] for c in batch])
                  for name in batch[0].inputs}
        try:
            outputs = self.inner.predict(merged)
        except InvalidImage:
            for call in batch:  # find whose image it was: each alone
                _settle(call, self.inner)
            return
        except BaseException as exc:  # every request of the call gets the same failure
            for call in batch:
                call.error = exc
            return
        if any(len(value) != total_images(batch) for value in outputs.values()):
            for call in batch:  # an output without a batch axis cannot be split: one by one
                _settle(call, self.inner)
            return
        start = 0
        for call in batch:
            call.merged = total_images(batch)
            call.outputs = {name: value[start:start + call.size]
                            for name, value in outputs.items()}
            start += call.size


def total_images(batch: list[_Call]) -> int:
    return sum(call.size for call in batch)


def _settle(call: _Call, backend: Backend) -> None:
    try:
        call.outputs = backend.predict(call.inputs)
    except BaseException as exc:
        call.error = exc
