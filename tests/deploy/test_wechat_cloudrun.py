"""deploy/wechat-cloudrun/: the container WeChat Cloud Run builds, rehearsed without an engine.

There is no Docker engine here, and Cloud Run's gateway cannot be reached: the Dockerfile's
steps are carried out by tests/deploy/dockerfile_rehearsal.py (a fresh virtualenv of the
image's Python, the project pip-installed as the Dockerfile says, COPY laid out, ENV set, CMD
run on loopback), started with container.config.json's envParams as Cloud Run passes them,
and then called as ``wx.cloud.callContainer`` arrives through the gateway: with the
X-WX-OPENID, X-WX-APPID, X-WX-SOURCE, X-WX-ENV and X-WX-SERVICE headers the gateway adds.
Cloud file ids resolve through the loopback stand-in of WeChat's open API
(tests/clients/wechat_openapi.py), as Cloud Run's open-API service answers them.

container.config.json is checked against a JSON schema written from Cloud Run's
documentation of the file (tests/deploy/fixtures/, with its sources).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import jsonschema
import pytest

from tests.clients.wechat_openapi import WechatOpenApi
from tests.conftest import ROOT, encode
from tests.deploy.dockerfile_rehearsal import build

CLOUDRUN = ROOT / "deploy" / "wechat-cloudrun"
CONFIG = json.loads((CLOUDRUN / "container.config.json").read_text())
SCHEMA = json.loads((Path(__file__).parent / "fixtures"
                     / "wechat-cloudrun-container-config.schema.json").read_text())
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def gateway_headers(api: WechatOpenApi) -> dict[str, str]:
    """What Cloud Run's gateway adds to a callContainer request."""
    return {"X-WX-OPENID": OPENID, "X-WX-APPID": "wx0123456789abcdef",
            "X-WX-UNIONID": "", "X-WX-SOURCE": "wx_client", "X-WX-ENV": api.env,
            "X-WX-SERVICE": "tf-image-predict", "X-Forwarded-For": "10.0.0.8"}


def test_container_config_validates_against_cloud_runs_documented_fields():
    jsonschema.validate(CONFIG, SCHEMA)
    assert CONFIG["minNum"] <= CONFIG["maxNum"]
    assert (CLOUDRUN.parent.parent / CONFIG["buildDir"] / CONFIG["dockerfilePath"]).is_file()


@pytest.mark.parametrize("change", [{"containerPort": 9100}, {"cpu": 1, "mem": 4},
                                    {"envParams": {"TOP_K": 5}}, {"containerport": 8080}])
def test_the_schema_refuses_what_cloud_run_would(change):
    assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors({**CONFIG, **change}))


def test_the_port_the_image_serves_is_the_configured_one():
    text = (CLOUDRUN / "Dockerfile").read_text()
    assert f'"--port", "{CONFIG["containerPort"]}"' in text
    assert f"EXPOSE {CONFIG['containerPort']}" in text


@pytest.mark.slow
def test_cloud_run_container_answers_calls_through_the_gateway(demo_model, digits,
                                                               tmp_path):
    api = WechatOpenApi(require_token=False).start()
    image = build(CLOUDRUN / "Dockerfile", tmp_path / "image")
    installed = {re.sub(r"[-_.]+", "-", name) for name in image.installed()}
    assert {"tensorflow-cpu", "tf-image-functions", "functions-framework"} <= installed
    env = {**CONFIG["envParams"], "CLOUD_ENV": api.env, "WECHAT_API_URL": api.url,
           "LOG_FORMAT": "json"}
    container = image.start(env=env, log=tmp_path / "container.log")
    try:
        container.wait_ready()
        headers = gateway_headers(api)
        for label in (2, 5, 8):
            png = encode(digits.x_test[int((digits.y_test == label).argmax())])
            inline = container.post("/predict", headers=headers, json={
                "image": base64.b64encode(png).decode(), "top_k": 2})
            assert inline.status_code == 200, inline.text
            assert inline.json()["predictions"][0]["class_id"] == label
            by_id = container.post("/predict", headers=headers, json={
                "image": {"file_id": api.put(f"photos/{label}.png", png)}})
            assert by_id.status_code == 200, by_id.text
            assert by_id.json()["predictions"][0]["class_id"] == label
        # Not through the gateway: no identity, so no answer.
        outside = container.post("/predict", json={"image": base64.b64encode(png).decode()})
        assert outside.status_code == 401
        assert outside.json()["error"]["message"] == (
            "authentication required: send a call through WeChat Cloud Run "
            "(wx.cloud.callContainer)")
        missing = container.post("/predict", headers=headers, json={
            "image": {"file_id": api.file_id("photos/gone.jpg")}})
        assert missing.status_code == 404
    finally:
        container.stop()
        api.stop()
    lines = [json.loads(line) for line in (tmp_path / "container.log").read_text().splitlines()
             if line.startswith("{")]
    access = [line for line in lines if line.get("path") == "/predict"]
    assert access and all(OPENID not in json.dumps(line) for line in lines)
    assert {line.get("openid_sha256") for line in access if line["status"] == 200} == {
        __import__("hashlib").sha256(OPENID.encode()).hexdigest()[:16]}
