"""The zip of a litert function runs on its own: no TensorFlow, no virtualenv, no converter deps.

The package is built as `bench.litert_package` builds it for deployment (from
this environment's files, so no download: the deployed one takes the same
packages' wheels for the target Python), unzipped, and asked for a prediction
through the Lambda entry point (`functions.platforms.aws.lambda_handler`, an HTTP API event) by a
Python that sees nothing but the standard library and the package.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import encode

pytestmark = pytest.mark.slow

SCRIPT = """
import json, sys
package = sys.argv[1]
sys.path.insert(0, package)
from functions.platforms.aws import lambda_handler
event = {"version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
         "headers": {"content-type": "application/json"},
         "requestContext": {"http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
                                     "sourceIp": "127.0.0.1", "userAgent": "test"},
                            "requestId": "r1", "stage": "$default"},
         "body": json.dumps({"image": sys.argv[2]}), "isBase64Encoded": False}
result = lambda_handler(event, None)
stdlib = (sys.base_prefix, sys.base_exec_prefix)
outside = sorted({m.__file__ for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) and not m.__file__.startswith(package)
                  and not m.__file__.startswith(stdlib)})
print(json.dumps({"status": result["statusCode"], "body": json.loads(result["body"]),
                  "outside": outside, "site": [p for p in sys.path if "site-packages" in p],
                  "tensorflow": [m for m in sys.modules if m.startswith("tensorflow")]}))
"""


def test_the_zip_answers_with_nothing_else_on_the_path(litert_export, digits, tmp_path):
    from bench.litert_package import build

    package = build(tmp_path / "function.zip", litert_export.out, flavour="int8",
                    from_venv=True, compresslevel=1)
    names = zipfile.ZipFile(package.zip_path).namelist()
    assert {"modelmeta.py", "functions/app.py", "functions/backends/litert.py",
            "model/model_int8.tflite", "model/model_int8.json"} <= set(names)
    assert not any(n.startswith(("tensorflow/", "google/protobuf/", "ml_dtypes/",
                                 "flatbuffers/", "ai_edge_litert/vendors/")) for n in names)
    assert package.unzipped_bytes < 250 * 1024 * 1024  # Lambda's unzipped limit
    unpacked = tmp_path / "task"
    zipfile.ZipFile(package.zip_path).extractall(unpacked)

    image = base64.b64encode(encode(digits.x_test[5])).decode()
    out = subprocess.run([sys.executable, "-S", "-E", "-c", SCRIPT, str(unpacked), image],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING",
                              "BACKEND": "litert", "LITERT_FLAVOUR": "int8",
                              "MODEL_URI": str(unpacked / "model")})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 200, result["body"]
    assert result["body"]["predictions"][0]["class_id"] == int(digits.y_test[5])
    assert result["site"] == []
    assert result["outside"] == []
    assert result["tensorflow"] == []
