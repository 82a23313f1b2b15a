"""GET /metrics read with prometheus_client's own parser after a known sequence of requests.

In process over a stand-in backend (tests.functions.test_app.FakeBackend: fixed scores,
no model) for exact phase, batch and model-error counts in milliseconds; then through the
real functions-framework server on the demo model, as a scraper sees it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from functions import metrics
from functions.app import App
from functions.config import Settings
from functions.errors import UpstreamUnavailable
from tests.conftest import encode
from tests.functions.test_app import B64, FakeBackend, call, make_app


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, keyed by name and sorted labels (``_created`` samples left out)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")}


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_by_label(samples) -> dict[tuple[str, str, str], float]:
    return {(dict(k)["route"], dict(k)["status"], dict(k)["code"]): v
            for (n, k), v in samples.items() if n == "function_requests_total"}


def app_metrics(app) -> dict:
    response, _ = call(app, method="GET", path="/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return scrape(response.body.decode())


def test_a_known_sequence_gives_exact_counts():
    app = make_app(metrics="prometheus")
    for _ in range(3):
        assert call(app, body={"image": B64})[0].status == 200
    assert call(app, path="/predict", body={"images": [B64, B64]})[0].status == 200
    assert call(app, body={"image": "not base64!"})[0].status == 400
    assert call(app, method="GET", path="/predict")[0].status == 405
    assert call(app, method="GET", path="/wp-admin/../../etc/passwd")[0].status == 404
    assert call(app, method="GET", path="/healthz")[0].status == 200
    samples = app_metrics(app)
    assert requests_by_label(samples) == {
        ("/", "200", "none"): 3, ("/predict", "200", "none"): 1,
        ("/", "400", "invalid_base64"): 1, ("/predict", "405", "method_not_allowed"): 1,
        ("unmatched", "404", "not_found"): 1, ("/healthz", "200", "none"): 1}
    native = {"protocol": "native"}
    assert value(samples, "function_request_seconds_count", route="/", **native) == 4
    assert value(samples, "function_parse_seconds_count", **native) == 4
    assert value(samples, "function_model_seconds_count", **native) == 4
    assert value(samples, "function_answer_seconds_count", **native) == 4
    assert value(samples, "function_images_per_request_count", **native) == 4
    assert value(samples, "function_images_per_request_sum", **native) == 5
    assert value(samples, "function_images_per_request_bucket", le="1.0", **native) == 3
    assert value(samples, "function_batch_size_sum", backend="inprocess") == 5
    assert value(samples, "function_model_loads_total", backend="inprocess", result="ok") == 1
    assert value(samples, "function_model_ready", backend="inprocess") == 1
    sent = 3 * len(json.dumps({"image": B64})) + len(json.dumps({"image": "not base64!"}))
    assert value(samples, "function_request_size_bytes_sum", route="/", **native) == sent


def test_the_scrape_counts_itself_before_and_not_after():
    app = make_app(metrics="prometheus")
    first = app_metrics(app)
    assert requests_by_label(first) == {}
    second = app_metrics(app)
    assert requests_by_label(second) == {("/metrics", "200", "none"): 1}


def test_model_errors_by_code_and_a_refused_batch_retried_one_by_one():
    bad = encode(np.full((28, 28), 7, np.uint8))
    fake = FakeBackend(fail_on=bad)
    app = make_app(fake, metrics="prometheus")
    bad_b64 = base64.b64encode(bad).decode()
    response, body = call(app, body={"images": [B64, bad_b64, B64]})
    assert (response.status, body["error"]["code"]) == (400, "invalid_image")

    class Down(FakeBackend):
        def predict(self, inputs):
            raise UpstreamUnavailable("the model server is unavailable; retry shortly")

    down = make_app(Down(), metrics="prometheus")
    assert call(down, body={"image": B64})[0].status == 503
    samples, down_samples = app_metrics(app), app_metrics(down)
    # one batch of 3, then 1 + 1 to find the bad image (the second)
    assert value(samples, "function_batch_size_count", backend="inprocess") == 3
    assert value(samples, "function_batch_size_sum", backend="inprocess") == 5
    assert value(samples, "function_model_errors_total", backend="inprocess",
                 code="invalid_image") == 1
    assert value(down_samples, "function_model_errors_total", backend="inprocess",
                 code="upstream_unavailable") == 1
    assert requests_by_label(down_samples)[("/", "503", "upstream_unavailable")] == 1


def test_a_failed_load_is_counted_and_the_model_is_not_ready():
    def broken():
        raise OSError("no such model")

    app = App(replace(Settings(log_format="text", log_level="CRITICAL"), metrics="prometheus"),
              backend_factory=broken)
    assert call(app, body={"image": B64})[0].status == 503
    samples = app_metrics(app)
    assert value(samples, "function_model_loads_total", backend="inprocess", result="failed") == 1
    assert value(samples, "function_model_ready", backend="inprocess") == 0


def test_a_protocol_route_names_its_route_and_protocol():
    measured, token = metrics.begin()
    try:
        metrics.label_request(route="/v1/models/{name}:predict", protocol="tfserving-rest")
        assert (measured.route, measured.protocol) == ("/v1/models/{name}:predict",
                                                       "tfserving-rest")
    finally:
        metrics.end(token)
    assert metrics.current().protocol == "native"


@pytest.mark.parametrize("setting", ["off", "emf"])
def test_metrics_is_a_404_unless_prometheus(setting, capsys):
    response, body = call(make_app(metrics=setting), method="GET", path="/metrics")
    assert (response.status, body["error"]["code"]) == (404, "not_found")


def test_metrics_refuses_other_methods():
    response, _ = call(make_app(metrics="prometheus"), method="POST", path="/metrics")
    assert (response.status, response.headers["Allow"]) == (405, "GET, HEAD")


@pytest.mark.slow
def test_the_live_server_counts_what_it_served(operated, digits):
    png = encode(digits.x_test[0])
    before = scrape(operated.get("/metrics").text)
    for _ in range(4):
        assert operated.post(files={"file": ("d.png", png, "image/png")}).status_code == 200
    assert operated.post("/predict", json={"image": "####"}).status_code == 400
    assert operated.get("/nothing/here").status_code == 404
    after = scrape(operated.get("/metrics").text)
    delta = {k: v - requests_by_label(before).get(k, 0)
             for k, v in requests_by_label(after).items()}
    assert {k: v for k, v in delta.items() if v} == {
        ("/", "200", "none"): 4, ("/predict", "400", "invalid_base64"): 1,
        ("unmatched", "404", "not_found"): 1, ("/metrics", "200", "none"): 1}
    grew = (value(after, "function_model_seconds_count", protocol="native")
            - value(before, "function_model_seconds_count", protocol="native"))
    assert grew == 4
    assert value(after, "function_model_ready", backend="inprocess") == 1
    assert value(after, "process_resident_memory_bytes") > 0
