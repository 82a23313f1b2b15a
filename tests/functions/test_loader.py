"""Loading the model once per process, and healing after a failed load."""

from __future__ import annotations

import threading

import pytest

from functions import loader as model_module
from functions.errors import ModelNotReady
from functions.loader import LoadedModel
from modelmeta import ModelMetadata


class _Backend:
    """A stand-in backend: these tests are about when loading happens, not about TF."""

    metadata = ModelMetadata.from_dict({
        "schema_version": 1, "name": "x",
        "inputs": [{"name": "x", "kind": "tensor", "dtype": "float32", "shape": [-1]}],
        "outputs": [{"name": "y", "role": "tensor", "dtype": "float32", "shape": [-1]}]})

    def predict(self, inputs):
        return inputs


def test_concurrent_first_requests_load_once():
    calls = []
    gate = threading.Event()

    def factory():
        calls.append(1)
        gate.wait(5)
        return _Backend()

    loaded = LoadedModel(factory)
    results = []
    threads = [threading.Thread(target=lambda: results.append(loaded.get())) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and len(results) == 8
    assert loaded.status() == ("ready", None)


def test_a_failed_load_is_retried_after_the_pause(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(model_module.time, "monotonic", lambda: clock[0])
    outcomes = [ModelNotReady("the store is unreachable"), _Backend()]

    def factory():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    loaded = LoadedModel(factory)
    with pytest.raises(ModelNotReady, match="unreachable"):
        loaded.get()
    clock[0] += model_module.RETRY_SECONDS - 1
    with pytest.raises(ModelNotReady, match="unreachable"):
        loaded.get()  # too soon: the same answer, no new attempt
    assert len(outcomes) == 1
    clock[0] += 1
    assert isinstance(loaded.get(), _Backend)
    assert loaded.status() == ("ready", None)
