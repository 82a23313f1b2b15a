"""A real Cloud Storage endpoint on loopback: gcp-storage-emulator (PyPI) in its own process.

It serves Cloud Storage's JSON API over HTTP as google-cloud-storage expects (listing with
generation, size and CRC32C, media downloads, uploads), with no credentials: the client
library switches to anonymous access when STORAGE_EMULATOR_HOST is set. What it does not do
as Cloud Storage does: it serves the current content whatever ``generation`` a download
names (Cloud Storage answers 404 once that generation is overwritten), and it checks no
permissions.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.processes import stop, wait_listening

BUCKET = "models"


def gcs_env(endpoint: str) -> dict[str, str]:
    """Environment for google-cloud-storage against `endpoint`, loopback only: no metadata
    server is ever asked for credentials (google-auth would probe 169.254.169.254)."""
    return {
        "STORAGE_EMULATOR_HOST": endpoint,
        "GOOGLE_CLOUD_PROJECT": "test",
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
    }


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        stop(self.process)


def start_emulator(log: Path, timeout: float = 30) -> Emulator:
    """``gcp-storage-emulator start --in-memory`` on a free loopback port."""
    port = free_port()
    binary = Path(sys.executable).parent / "gcp-storage-emulator"
    process = subprocess.Popen(
        [str(binary), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_listening(process, port, log, "gcp-storage-emulator", timeout)
    return Emulator(f"http://127.0.0.1:{port}", process, log)


def client_for(endpoint: str) -> Any:
    """A google-cloud-storage client straight to `endpoint` (anonymous, as the emulator
    wants)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": endpoint})


def upload_dir(client: Any, local: Path, bucket: str, prefix: str) -> list[str]:
    """Upload every file under `local` to gs://bucket/prefix/..., like `gcloud storage cp -r`."""
    names = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        name = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
        client.bucket(bucket).blob(name).upload_from_filename(str(path))
        names.append(name)
    return names
