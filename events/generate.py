"""Write the sample events in this folder: gateway envelopes from `sam local generate-event`,
carrying real images of held-out digits.

    .venv-tools/bin/sam --version          # aws-sam-cli (see requirements-tools.lock)
    .venv/bin/python events/generate.py    # rewrites events/*.json and events/expected.json

`sam local generate-event` writes each gateway's envelope exactly (headers, request
context, stage); this script then puts in what a real client sends: JSON with a base64
PNG (wx.request), the bare image bytes, or `wx.uploadFile`'s multipart with a JPEG, the
binary ones base64-encoded with ``isBase64Encoded`` as the gateway does. SCF has no
generator; its events follow the documented trigger format. `expected.json` records what
the demo model answers for each. `sam local invoke -e events/<name>.json` uses them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from modelprep.digits import digit_images  # noqa: E402

BOUNDARY = "----WebKitFormBoundaryq7MF3cBzV2kXyR4t"
WX_HEADERS = {
    "Referer": "https://servicewechat.com/wx1234567890abcdef/3/page-frame.html",
    "User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
                  "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.49 NetType/WIFI",
}


def sam_binary() -> str:
    for candidate in (shutil.which("sam"), ROOT / ".venv-tools" / "bin" / "sam"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SystemExit("sam not found: install aws-sam-cli (requirements-tools.lock) into "
                     ".venv-tools or put sam on PATH")


def generate(*args: str) -> dict:
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    out = subprocess.run([sam_binary(), "local", "generate-event", *args], check=True,
                         capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def multipart(image: bytes, filename: str, media_type: str) -> bytes:
    """What wx.uploadFile sends: formData fields first, then the file under `name`."""
    return (f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="top_k"\r\n\r\n3\r\n'
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {media_type}\r\n\r\n").encode() + image + \
        f"\r\n--{BOUNDARY}--\r\n".encode()


def json_body(image: bytes) -> str:
    return json.dumps({"image": base64.b64encode(image).decode(), "top_k": 3})


def set_body(event: dict, body: bytes | str, content_type: str, *, lower: bool) -> dict:
    """Put a body in a generated envelope the way the gateway would."""
    if isinstance(body, str):
        event["body"], event["isBase64Encoded"] = body, False
    else:
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    headers = {"Content-Type": content_type, "Content-Length": str(len(
        body.encode() if isinstance(body, str) else body)), **WX_HEADERS}
    if lower:
        headers = {k.lower(): v for k, v in headers.items()}
    event["headers"] = {**{k: v for k, v in event.get("headers", {}).items()
                           if k.lower() not in ("header1", "header2")}, **headers}
    if "multiValueHeaders" in event:
        event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    return event


def rest(body: bytes | str, content_type: str, path: str = "predict") -> dict:
    event = generate("apigateway", "aws-proxy", "--path", path, "--body", "-")
    event["queryStringParameters"] = event["multiValueQueryStringParameters"] = None
    return set_body(event, body, content_type, lower=False)


def http_api(body: bytes | str, content_type: str, path: str = "predict") -> dict:
    event = generate("apigateway", "http-api-proxy", "--path", path, "--body", "-")
    event.update(rawQueryString="", cookies=[])
    event.pop("queryStringParameters", None)
    return set_body(event, body, content_type, lower=True)


def function_url(body: bytes | str, content_type: str) -> dict:
    event = http_api(body, content_type, path="")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/"
    for key in ("authentication", "authorizer", "domainPrefix"):
        event["requestContext"].pop(key, None)
    event["requestContext"]["domainName"] = "abcdefghij1234567890.lambda-url.us-east-1.on.aws"
    event.pop("pathParameters", None)
    event.pop("stageVariables", None)
    return event


def alb(body: bytes | str, content_type: str) -> dict:
    event = generate("alb", "request", "--path", "predict", "--body", "-")
    event["queryStringParameters"] = {"top_k": "2"}
    return set_body(event, body, content_type, lower=True)


def scf_gateway(body: bytes | str, content_type: str) -> dict:
    """SCF's API Gateway trigger (integration request), as its documentation shows it."""
    event = {
        "requestContext": {"serviceId": "service-f94sy04v", "path": "/predict",
                           "httpMethod": "POST", "identity": {}, "sourceIp": "10.0.2.14",
                           "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                           "stage": "release"},
        "headers": {"Accept": "*/*", "Host": "service-f94sy04v-1250000000.gz.apigw.tencentcs.com"},
        "pathParameters": {}, "queryStringParameters": {}, "headerParameters": {},
        "stageVariables": {"stage": "release"}, "path": "/predict",
        "queryString": {"top_k": "2"}, "httpMethod": "POST",
    }
    return set_body(event, body, content_type, lower=False)


def scf_url(body: bytes | str, content_type: str) -> dict:
    """An SCF function URL's event: flat headers in lower case, no API Gateway context."""
    event = {"httpMethod": "POST", "path": "/", "queryString": {},
             "requestContext": {"requestId": "3a6e2b8f-1111-4c2d-9c39-54e3f2a1b0c7",
                                "sourceIp": "203.0.113.7"},
             "headers": {"host": "1250000000-abcdefgh.ap-guangzhou.tencentscf.com"}}
    return set_body(event, body, content_type, lower=True)


def main() -> None:
    digits = digit_images()
    picks = {d: int(np.flatnonzero(digits.y_test == d)[0]) for d in range(10)}

    def image(d: int, fmt: str) -> bytes:
        return encode(digits.x_test[picks[d]], fmt)

    events: dict[str, tuple[dict, int | None]] = {
        "apigw-rest-json": (rest(json_body(image(7, "PNG")), "application/json"), 7),
        "apigw-rest-png": (rest(image(2, "PNG"), "image/png"), 2),
        "apigw-rest-multipart-jpeg": (rest(multipart(image(3, "JPEG"), "tmp_8a7c2e.jpg",
                                                     "image/jpeg"),
                                           f"multipart/form-data; boundary={BOUNDARY}"), 3),
        "httpapi-json": (http_api(json_body(image(4, "JPEG")), "application/json"), 4),
        "httpapi-jpeg": (http_api(image(5, "JPEG"), "image/jpeg"), 5),
        "httpapi-multipart-png": (http_api(multipart(image(6, "PNG"), "wxfile://tmp_1f.png",
                                                     "image/png"),
                                           f"multipart/form-data; boundary={BOUNDARY}"), 6),
        "function-url-png": (function_url(image(8, "PNG"), "image/png"), 8),
        "alb-jpeg": (alb(image(9, "JPEG"), "image/jpeg"), 9),
        "scf-apigw-json": (scf_gateway(json_body(image(1, "PNG")), "application/json"), 1),
        "scf-apigw-multipart-jpeg": (scf_gateway(multipart(image(0, "JPEG"), "tmp_0.jpg",
                                                           "image/jpeg"),
                                                 f"multipart/form-data; boundary={BOUNDARY}"), 0),
        "scf-url-png": (scf_url(image(7, "PNG"), "image/png"), 7),
    }
    health = generate("apigateway", "http-api-proxy", "--path", "healthz", "--method", "GET",
                      "--body", "")
    health.update(body=None, isBase64Encoded=False, rawQueryString="", cookies=[],
                  headers={"accept": "application/json", **{k.lower(): v for k, v in
                                                            WX_HEADERS.items()}})
    health.pop("queryStringParameters", None)
    events["httpapi-healthz"] = (health, None)

    expected = {}
    for name, (event, digit) in events.items():
        (HERE / f"{name}.json").write_text(json.dumps(event, indent=2) + "\n")
        expected[name] = {"status": 200, "class_id": digit}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {len(events)} events to {HERE}")


if __name__ == "__main__":
    main()
