"""The S3 and response-offload settings (functions/config.py), and what importing the
serverless entry points costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from functions.config import ConfigError, Settings
from tests.conftest import ROOT


def test_defaults_and_environment():
    settings = Settings.from_env({"MODEL_URI": "s3://models/digits/1/",
                                  "MODEL_CACHE_DIR": "/tmp/m", "MODEL_LOCK_TIMEOUT": "30",
                                  "RESPONSE_OFFLOAD_URI": "s3://results/r/",
                                  "RESPONSE_URL_SECONDS": "60"})
    assert (settings.model_uri, settings.model_cache_dir, settings.model_lock_timeout,
            settings.response_offload_uri, settings.response_url_seconds) == (
        "s3://models/digits/1/", "/tmp/m", 30.0, "s3://results/r/", 60)
    assert Settings.from_env({}).response_offload_uri is None
    assert Settings.from_env({}).response_url_seconds == 900


@pytest.mark.parametrize("env, message", [
    ({"MODEL_URI": "s3:///digits/"},
     "MODEL_URI must name a bucket: s3://BUCKET/PREFIX/, got 's3:///digits/'"),
    ({"RESPONSE_OFFLOAD_URI": "/tmp/results"},
     "RESPONSE_OFFLOAD_URI must be an s3://BUCKET/PREFIX/ URI, got '/tmp/results'"),
    ({"RESPONSE_URL_SECONDS": "604801"},
     "RESPONSE_URL_SECONDS must be at most 604800 (7 days), got 604801"),
    ({"MODEL_LOCK_TIMEOUT": "soon"}, "MODEL_LOCK_TIMEOUT must be a number of seconds, "
                                     "got 'soon'"),
])
def test_bad_values_are_refused_at_start(env, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == message


def test_entry_points_import_without_tensorflow_or_boto3():
    code = ("import sys, functions.platforms.aws, functions.platforms.scf; "
            "print(sorted(m for m in ('tensorflow', 'boto3', 'botocore') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"
