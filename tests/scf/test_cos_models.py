"""Models from Tencent COS through its S3-compatible API, as SCF and Cloud Run read them.

COS cannot be reached from here. moto's S3 server on loopback stands in for it, reached the
way a deployed function reaches COS: ``MODEL_URI=s3://BUCKET-APPID/prefix/`` with the
endpoint in ``AWS_ENDPOINT_URL_S3`` (``https://cos.<region>.myqcloud.com`` on Tencent
Cloud) and the region in ``AWS_DEFAULT_REGION``; the function builds its own boto3 client.
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from functions.storage import fetch_model

BUCKET = "models-1250000000"  # COS bucket names end in the account's APPID


@pytest.fixture
def cos(monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_DEFAULT_REGION": "ap-guangzhou",
                        "AWS_ACCESS_KEY_ID": "AKIDexample", "AWS_SECRET_ACCESS_KEY": "secret"
                        }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="ap-guangzhou")
    client.create_bucket(Bucket=BUCKET,
                         CreateBucketConfiguration={"LocationConstraint": "ap-guangzhou"})
    yield client
    server.stop()


@pytest.mark.slow
def test_a_model_in_cos_is_fetched_through_the_endpoint_setting(cos, demo_model, tmp_path):
    served = Path(demo_model.served)
    files = [p for p in served.rglob("*") if p.is_file()]
    for path in files:
        cos.upload_file(str(path), BUCKET, f"models/digits/{path.relative_to(served)}")
    local = fetch_model(f"s3://{BUCKET}/models/digits/", tmp_path / "cache")
    for path in files:
        assert filecmp.cmp(path, local / path.relative_to(served), shallow=False), path
    # Fetched again: unchanged objects are not downloaded twice.
    assert fetch_model(f"s3://{BUCKET}/models/digits/", tmp_path / "cache") == local
