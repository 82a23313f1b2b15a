"""Cloud Storage on loopback for the gs:// tests: the emulator, a counting proxy, a bucket."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.aws.s3util import S3Proxy
from tests.gcp.emulator import client_for, gcs_env, start_emulator


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory) -> Iterator[str]:
    """gcp-storage-emulator in its own process on 127.0.0.1, one per test session."""
    emulator = start_emulator(tmp_path_factory.mktemp("gcs") / "emulator.log")
    yield emulator.url
    emulator.stop()


@dataclass
class GCS:
    client: Any
    """google-cloud-storage client straight to the emulator (its requests are not counted)."""
    bucket: str
    proxy: S3Proxy
    """A plain HTTP proxy (it forwards any request unchanged) that counts and can truncate."""

    def uri(self, prefix: str) -> str:
        return f"gs://{self.bucket}/{prefix.strip('/')}/"

    def env(self) -> dict[str, str]:
        """What a process needs to reach this Cloud Storage through the counting proxy."""
        return gcs_env(self.proxy.url)

    def downloads(self, suffix: str = "") -> int:
        return sum(n for (method, path), n in self.proxy.counts.items()
                   if method == "GET" and path.startswith("/download/")
                   and path.split("?")[0].endswith(suffix))

    def lists(self) -> int:
        return sum(n for (method, path), n in self.proxy.counts.items()
                   if method == "GET" and path.startswith(f"/storage/v1/b/{self.bucket}/o?"))


@pytest.fixture
def gcs(gcs_endpoint, monkeypatch) -> Iterator[GCS]:
    """A fresh bucket, and this process's google-cloud-storage pointed at it through a
    counting proxy."""
    proxy = S3Proxy(gcs_endpoint.removeprefix("http://")).start()
    for name, value in gcs_env(proxy.url).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    client = client_for(gcs_endpoint)
    bucket = f"models-{uuid.uuid4().hex[:10]}"
    client.create_bucket(bucket)
    yield GCS(client, bucket, proxy)
    proxy.stop()
