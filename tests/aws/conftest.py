"""S3 on loopback for the storage and Lambda tests: moto's server, a proxy, a bucket."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.aws.s3util import S3Proxy, aws_env


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 in server mode: real HTTP on 127.0.0.1, one per test session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class S3:
    client: Any
    """boto3 client straight to moto (its requests are not counted)."""
    bucket: str
    proxy: S3Proxy
    endpoint: str

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}/"

    def env(self) -> dict[str, str]:
        """What a process needs to reach this S3 through the counting proxy."""
        return aws_env(self.proxy.url)


@pytest.fixture
def s3(moto_endpoint, monkeypatch) -> Iterator[S3]:
    """A fresh bucket, and this process's boto3 pointed at it through a counting proxy."""
    import boto3

    proxy = S3Proxy(moto_endpoint.removeprefix("http://")).start()
    for name, value in aws_env(proxy.url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    yield S3(client, bucket, proxy, moto_endpoint)
    proxy.stop()
