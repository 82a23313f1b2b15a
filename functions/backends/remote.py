"""What the TF Serving backends (REST and gRPC) share, so both behave exactly alike.

A remote backend needs three things the model server cannot give it:

* the model's `modelmeta` metadata (which input takes images, what each output
  means, the labels). TF Serving serves tensors, not files, so the function reads
  ``model_metadata.json`` itself, from MODEL_METADATA or the prepared model under
  MODEL_URI: a few KB to ship with the function. What the server *can* say, the
  signature's inputs and outputs with their dtypes, is fetched from its metadata
  API on first use and checked against that file, so a function deployed with the
  metadata of another model fails with a clear 503 instead of wrong answers;
* a deadline per call (REQUEST_TIMEOUT), retries included;
* one mapping of upstream failures to client errors, shared by both wires:

    ============================================  =======================================
    model server says                              client gets
    ============================================  =======================================
    connection refused, 503 / UNAVAILABLE          retried with backoff (UPSTREAM_RETRIES),
                                                   then 503 upstream_unavailable
    404 / NOT_FOUND, unknown version label         404 model_not_found
    400 / INVALID_ARGUMENT from running the graph  400 invalid_image (as in-process)
    429 / RESOURCE_EXHAUSTED                       503 upstream_unavailable (not retried)
    deadline passed, 504 / DEADLINE_EXCEEDED       504 gateway_timeout
    any other error, or a reply that does not      502 bad_gateway
    fit the signature, holds NaN or infinity, is
    nested past any tensor, is over
    MAX_UPSTREAM_REPLY_BYTES, or redirects
    ============================================  =======================================

Constructing a backend touches no network: a model server that is down while the
function starts must not fail the function for good, only the calls made while
it is down.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from functions.config import Settings
from functions.errors import (
    BadGateway,
    GatewayTimeout,
    InvalidImage,
    ModelNotFound,
    ModelNotReady,
    ServiceError,
    UpstreamUnavailable,
)
from modelmeta import MetadataError, ModelMetadata

log = logging.getLogger(__name__)

T = TypeVar("T")

CORRUPT_IMAGE = "the image data is corrupt or truncated and could not be decoded"
"""The in-process backend's words for an image the graph refuses; kept identical."""

_REQUEST_ERRORS = ("Serving signature", "input size does not match", "output tensor alias",
                   "Missing ModelSpec", "JSON Value", "JSON Parse error", "Missing named input",
                   "Expects arg", "Metadata field", "duplicate output tensor alias")
"""Upstream 400s that say our request, not the image, is wrong: a setup problem (502)."""


@dataclass(frozen=True)
class Target:
    """Which model, version and signature to call at the model server."""

    model_name: str
    version: int | None = None
    label: str | None = None
    signature: str = "serving_default"

    def describe(self) -> str:
        where = f"model {self.model_name!r}"
        if self.version is not None:
            return f"{where} version {self.version}"
        if self.label is not None:
            return f"{where} version label {self.label!r}"
        return where


@dataclass(frozen=True)
class TensorSpec:
    dtype: str
    """TensorFlow's name: ``float32``, ``string``..."""
    shape: tuple[int, ...] | None
    """-1 for unknown dimensions; None for unknown rank."""


@dataclass(frozen=True)
class Signature:
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


class Deadline:
    """A point in time a call and all its retries must finish by."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def check(self) -> float:
        """The time left; `GatewayTimeout` if none is."""
        left = self.remaining()
        if left <= 0:
            raise timed_out(self.seconds)
        return left


def timed_out(seconds: float) -> GatewayTimeout:
    return GatewayTimeout(f"the model server did not answer within {seconds:g} s")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: 50 ms, 100 ms, 200 ms... capped at 1 s."""

    retries: int = 2
    base_delay: float = 0.05
    max_delay: float = 1.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** attempt) * random.uniform(0.5, 1.0)


class TryAgain(Exception):
    """Raised by one attempt when trying again is safe: nothing ran upstream."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(error.message)
        self.error = error


def with_retries(call: Callable[[], T], deadline: Deadline, policy: RetryPolicy) -> T:
    """``call()`` until it succeeds, fails for good, or retries or time run out."""
    attempt = 0
    while True:
        try:
            return call()
        except TryAgain as again:
            pause = policy.delay(attempt)
            if attempt >= policy.retries or deadline.remaining() <= pause:
                raise again.error from again
            log.info("model server unavailable (%s); retry %d in %.0f ms",
                     again.error.message, attempt + 1, pause * 1000)
            time.sleep(pause)
            attempt += 1


def upstream_error(code: str, message: str, target: Target, timeout: float) -> Exception:
    """A failure the model server reported, by gRPC code name, as what the client gets.

    Returns a `TryAgain` for the retryable ones; the caller raises the result.
    """
    log.warning("model server answered %s for %s: %.300s", code, target.describe(), message)
    if code == "NOT_FOUND" or "Unrecognized servable version label" in message:
        return ModelNotFound(f"the model server has no {target.describe()}")
    if code == "UNAVAILABLE":
        return TryAgain(unavailable())
    if code == "DEADLINE_EXCEEDED":
        return timed_out(timeout)
    if code == "RESOURCE_EXHAUSTED":
        return UpstreamUnavailable("the model server is overloaded; retry shortly",
                                   headers={"Retry-After": "1"})
    if code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "OUT_OF_RANGE"):
        if any(marker in message for marker in _REQUEST_ERRORS):
            return BadGateway(f"the model server refused the request for {target.describe()} "
                              f"({code}); the server log has the details")
        return InvalidImage(CORRUPT_IMAGE)
    return BadGateway(f"the model server failed ({code}); the server log has the details")


def unavailable() -> UpstreamUnavailable:
    return UpstreamUnavailable("the model server is unavailable; retry shortly",
                               headers={"Retry-After": "1"})


def bad_reply(what: str) -> BadGateway:
    log.warning("bad reply from the model server: %s", what)
    return BadGateway(f"the model server sent a reply that does not fit the model: {what}")


def load_metadata(settings: Settings) -> ModelMetadata:
    """The model's metadata from MODEL_METADATA (file or directory), else MODEL_URI."""
    path = Path(settings.model_metadata or settings.model_uri)
    try:
        if path.is_file():
            return ModelMetadata.from_json(path.read_text(encoding="utf-8"))
        return ModelMetadata.load(path)
    except (OSError, MetadataError) as exc:
        raise ModelNotReady(f"cannot read the model's metadata at {path}: {exc}; set "
                            "MODEL_METADATA to the model_metadata.json of the served model") \
            from exc


def check_signature(metadata: ModelMetadata, signatures: dict[str, Signature],
                    target: Target) -> Signature:
    """The served signature, if it is the one the metadata describes; else `ModelNotReady`."""
    signature = signatures.get(target.signature)
    problems = []
    if signature is None:
        problems.append(f"it has no signature {target.signature!r} "
                        f"(it has {sorted(signatures)})")
    else:
        for kind, specs, served in (("input", metadata.inputs, signature.inputs),
                                    ("output", metadata.outputs, signature.outputs)):
            for spec in specs:
                if spec.name not in served:
                    problems.append(f"it has no {kind} {spec.name!r} (it has {sorted(served)})")
                elif served[spec.name].dtype != spec.dtype:
                    problems.append(f"its {kind} {spec.name!r} is {served[spec.name].dtype}, "
                                    f"not {spec.dtype}")
        extra = sorted(set(signature.inputs) - {s.name for s in metadata.inputs})
        if extra:
            problems.append(f"it also needs inputs {extra} that the metadata does not describe")
    if problems:
        message = (f"the model server's {target.describe()} does not match the model metadata "
                   f"{metadata.name!r}: " + "; ".join(problems))
        log.error("%s", message)
        raise ModelNotReady(message)
    assert signature is not None
    return signature


class RemoteBackend:
    """The `Backend` interface over a model server; subclasses speak one wire."""

    def __init__(self, metadata: ModelMetadata, target: Target, *, timeout: float,
                 retries: int) -> None:
        self.metadata = metadata
        self.target = target
        self.timeout = timeout
        self.retry = RetryPolicy(retries=retries)
        self._signature: Signature | None = None
        self._signature_lock = threading.Lock()

    # --- what a wire implements ------------------------------------------------------

    def _fetch_signatures(self, deadline: Deadline) -> dict[str, Signature]:
        """One attempt at the model's signatures; raises `ServiceError` or `TryAgain`."""
        raise NotImplementedError

    def _predict_once(self, inputs: dict[str, np.ndarray], signature: Signature,
                      deadline: Deadline) -> dict[str, np.ndarray]:
        """One attempt at a prediction; raises `ServiceError` or `TryAgain`."""
        raise NotImplementedError

    # --- the Backend interface ---------------------------------------------------------

    def signature(self, deadline: Deadline | None = None) -> Signature:
        """The served signature, fetched and checked once, then remembered."""
        if self._signature is None:
            deadline = deadline or Deadline(self.timeout)
            with self._signature_lock:
                if self._signature is None:
                    signatures = with_retries(lambda: self._fetch_signatures(deadline),
                                              deadline, self.retry)
                    self._signature = check_signature(self.metadata, signatures, self.target)
        return self._signature

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        deadline = Deadline(self.timeout)
        signature = self.signature(deadline)
        batch = {len(value) for value in inputs.values()}
        if len(batch) != 1:
            raise ServiceError(f"inputs of different batch sizes {sorted(batch)}")
        outputs = with_retries(lambda: self._predict_once(inputs, signature, deadline),
                               deadline, self.retry)
        return self._checked(outputs, signature, batch.pop())

    def _checked(self, outputs: dict[str, np.ndarray], signature: Signature,
                 batch: int) -> dict[str, np.ndarray]:
        for spec in self.metadata.outputs:
            value = outputs.get(spec.name)
            if value is None:
                raise bad_reply(f"output {spec.name!r} is missing")
            served = signature.outputs[spec.name]
            if value.ndim == 0 or value.shape[0] != batch:
                raise bad_reply(f"output {spec.name!r} has shape {list(value.shape)} for a "
                                f"batch of {batch}")
            if served.shape is not None and (
                    len(served.shape) != value.ndim
                    or any(s not in (-1, v) for s, v in zip(served.shape, value.shape,
                                                             strict=True))):
                raise bad_reply(f"output {spec.name!r} has shape {list(value.shape)}, the "
                                f"signature says {list(served.shape)}")
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                raise bad_reply(f"output {spec.name!r} holds NaN or infinite values")
        return outputs
