"""Models from Cloud Storage (functions/storage/gcs.py) against a real emulator over HTTP.

The emulator (gcp-storage-emulator, tests/gcp/emulator.py) runs in its own process on
loopback; every request goes through a plain HTTP proxy that counts them and, for the
truncation test, cuts a download short after sending its full Content-Length, as a dropped
connection would. The function's own code talks to it through google-cloud-storage, as on
Cloud Functions or Cloud Run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from functions.config import Settings
from functions.errors import ModelNotReady
from functions.storage import SOURCE_FILE, fetch_model, resolve_model_uri
from functions.storage import gcs as gcs_store
from functions.storage.cache import Incomplete
from tests.conftest import ROOT, encode, start_server, stop_server
from tests.gcp.emulator import upload_dir

MODEL_FILES = ("assets.extra/model_metadata.json", "fingerprint.pb", "saved_model.pb",
               "variables/variables.data-00000-of-00001", "variables/variables.index")


@pytest.fixture
def model_in_gcs(gcs, demo_model):
    """The demo model uploaded to gs://<bucket>/digits/1/."""
    upload_dir(gcs.client, demo_model.served, gcs.bucket, "digits/1")
    return gcs.uri("digits/1")


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != SOURCE_FILE}


def test_cold_start_downloads_every_file_once_at_its_listed_generation(gcs, model_in_gcs,
                                                                       demo_model, tmp_path):
    local = fetch_model(model_in_gcs, tmp_path)
    assert files_of(local) == files_of(demo_model.served)
    assert sorted(files_of(local)) == list(MODEL_FILES)
    assert gcs.lists() == 1
    listed = {b.name: str(b.generation) for b in gcs.client.list_blobs(gcs.bucket,
                                                                       prefix="digits/1/")}
    for name in MODEL_FILES:
        assert gcs.downloads(f"/digits/1/{name}") == 1, name
    downloads = [path for (method, path) in gcs.proxy.counts if path.startswith("/download/")]
    for path in downloads:
        name = re.search(r"/o/(.+)\?", path).group(1)
        assert f"generation={listed[name]}" in path, path
    source = json.loads((local / SOURCE_FILE).read_text())
    assert source["uri"] == model_in_gcs
    assert {o["key"]: o["generation"] for o in source["objects"]} == listed
    assert [p.name for p in local.parent.iterdir() if p.name.startswith(".partial")] == []


def test_cache_hit_lists_but_downloads_nothing(gcs, model_in_gcs, tmp_path):
    first = fetch_model(model_in_gcs, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    second = fetch_model(model_in_gcs, tmp_path)
    assert second == first
    assert gcs.downloads() == len(MODEL_FILES)
    assert gcs.lists() == 2
    assert {p: p.stat().st_mtime_ns for p in second.rglob("*")} == mtimes


def test_new_generation_makes_a_new_copy_downloading_only_it(gcs, model_in_gcs, demo_model,
                                                             tmp_path):
    first = fetch_model(model_in_gcs, tmp_path)
    metadata = json.loads((demo_model.served / MODEL_FILES[0]).read_text())
    metadata["labels"] = [f"digit {i}" for i in range(10)]
    gcs.client.bucket(gcs.bucket).blob(f"digits/1/{MODEL_FILES[0]}").upload_from_string(
        json.dumps(metadata).encode())
    second = fetch_model(model_in_gcs, tmp_path)
    assert second != first and second.parent == first.parent
    assert json.loads((second / MODEL_FILES[0]).read_text())["labels"][3] == "digit 3"
    assert gcs.downloads(f"/digits/1/{MODEL_FILES[0]}") == 2
    for name in MODEL_FILES[1:]:
        assert gcs.downloads(f"/digits/1/{name}") == 1, name
        assert (second / name).stat().st_ino == (first / name).stat().st_ino  # hard link
    assert first.is_dir(), "a copy this process uses is never deleted"


@pytest.mark.parametrize("prefix, message", [
    ("nothing/here", "there is no object under gs://{bucket}/nothing/here/; MODEL_URI must "
     "name the Cloud Storage folder holding the prepared model (saved_model.pb, variables/, "
     "assets.extra/model_metadata.json)"),
    ("digits", "gs://{bucket}/digits/ holds 5 object(s) but no saved_model.pb; it is at "
     "gs://{bucket}/digits/1/"),
    ("digits/1/variables", "gs://{bucket}/digits/1/variables/ holds 2 object(s) but no "
     "saved_model.pb; MODEL_URI must name the model directory itself"),
])
def test_wrong_prefix_is_named_with_the_fix(gcs, model_in_gcs, tmp_path, prefix, message):
    with pytest.raises(ModelNotReady) as caught:
        fetch_model(gcs.uri(prefix), tmp_path)
    assert caught.value.message == message.format(bucket=gcs.bucket)
    assert caught.value.status == 503
    assert gcs.downloads() == 0


def test_missing_bucket_and_malformed_uri(gcs, tmp_path):
    with pytest.raises(ModelNotReady) as caught:
        fetch_model("gs://no-such-bucket-here/m/", tmp_path)
    assert caught.value.message == ("listing gs://no-such-bucket-here/m/ failed: the bucket "
                                    "'no-such-bucket-here' does not exist; check MODEL_URI")
    with pytest.raises(ModelNotReady) as caught:
        fetch_model("gs:///m/", tmp_path)
    assert caught.value.message == ("MODEL_URI: 'gs:///m/' does not name a bucket: write "
                                    "gs://BUCKET/PREFIX/")


def test_object_name_escaping_the_model_directory_is_refused(gcs, tmp_path):
    bucket = gcs.client.bucket(gcs.bucket)
    bucket.blob("m/saved_model.pb").upload_from_string(b"x")
    bucket.blob("m//etc/cron").upload_from_string(b"x")  # the emulator refuses "..": an
    with pytest.raises(ModelNotReady) as caught:       # absolute path escapes as well
        fetch_model(gcs.uri("m"), tmp_path)
    assert caught.value.message == (f"the object key 'm//etc/cron' under gs://{gcs.bucket}"
                                    "/m/ cannot be a file inside the model directory")
    assert not list(tmp_path.rglob("cron"))


def test_truncated_download_is_retried_then_refused_and_never_left_half_written(
        gcs, model_in_gcs, tmp_path):
    gcs.proxy.truncate["variables.data-00000-of-00001"] = 0.5
    with pytest.raises(ModelNotReady) as caught:
        fetch_model(model_in_gcs, tmp_path)
    size = (gcs.client.bucket(gcs.bucket).get_blob(f"digits/1/{MODEL_FILES[3]}").size)
    assert re.fullmatch(
        rf"downloading {model_in_gcs}{MODEL_FILES[3]} failed 3 times: the connection broke "
        rf"after [\d,]+ of {size:,} bytes: ChunkedEncodingError; nothing was loaded, the next "
        "cold start tries again", caught.value.message), caught.value.message
    assert gcs.downloads(MODEL_FILES[3]) == 3
    (source,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert [p.name for p in source.iterdir() if p.is_dir()] == [], "no copy, no partial"
    del gcs.proxy.truncate["variables.data-00000-of-00001"]
    local = fetch_model(model_in_gcs, tmp_path)
    assert (local / MODEL_FILES[3]).stat().st_size == size


def test_bytes_other_than_listed_are_refused(gcs, model_in_gcs, tmp_path):
    """An object overwritten between listing and download. Cloud Storage answers 404 for the
    overwritten generation; the emulator serves the new bytes, which the size and CRC32C
    checks refuse."""
    store = gcs_store.GcsStore(gcs_store.parse(model_in_gcs))
    listed = {o.relative: o for o in store.list()}
    blob = gcs.client.bucket(gcs.bucket).blob(f"digits/1/{MODEL_FILES[1]}")
    original = blob.download_as_bytes()
    blob.upload_from_string(b"x" * len(original))
    with pytest.raises(Incomplete, match="^its content does not match its CRC32C$"):
        store.download(listed[MODEL_FILES[1]], tmp_path / "same-size")
    blob.upload_from_string(b"short")
    with pytest.raises(Incomplete, match=f"^got 5 of {len(original):,} bytes$"):
        store.download(listed[MODEL_FILES[1]], tmp_path / "other-size")


def test_unreachable_endpoint_is_named(gcs, tmp_path, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(gcs_store, "LIST_TIMEOUT", 1.0)
    with pytest.raises(ModelNotReady) as caught:
        fetch_model("gs://models/m/", tmp_path)
    assert caught.value.message == (
        "listing gs://models/m/ failed: cannot connect to Cloud Storage (RetryError); check "
        "the network (and STORAGE_EMULATOR_HOST, if set)")


def test_missing_credentials_are_named(tmp_path):
    """No emulator, no credentials file, no metadata server (NO_GCE_CHECK, and its address
    pointed at a closed loopback port): what a function outside Google Cloud without
    GOOGLE_APPLICATION_CREDENTIALS meets. In a child process: google-auth reads those
    variables once, at import."""
    script = ("from functions.storage import fetch_model\n"
              "from functions.errors import ModelNotReady\n"
              "try:\n    fetch_model('gs://models/m/', 'CACHE')\n"
              "except ModelNotReady as e:\n    print(e.message)\n").replace(
                  "CACHE", str(tmp_path))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOOGLE_", "STORAGE_EMULATOR", "CLOUDSDK_", "GCE_"))}
    env.update({"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
                "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:9",
                "GCE_METADATA_IP": "127.0.0.1:9"})
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == (
        "connecting to gs://models/m/ failed: no Google credentials were found; run the "
        "function as a service account that may read the bucket, or set "
        "GOOGLE_APPLICATION_CREDENTIALS"), result.stderr


FETCH_SCRIPT = """
import sys
from functions.storage import fetch_model
print(fetch_model(sys.argv[1], sys.argv[2]))
"""


def run_fetchers(count: int, uri: str, cache: Path, env: dict[str, str]) -> list[str]:
    procs = [subprocess.Popen([sys.executable, "-c", FETCH_SCRIPT, uri, str(cache)], cwd=ROOT,
                              env={**os.environ, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(count)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.split()[0])
    return outputs


@pytest.mark.slow
def test_processes_starting_together_download_once(gcs, model_in_gcs, tmp_path):
    gcs.proxy.delay = 0.3  # 5 objects: about 1.5 s of download that the others wait for
    paths = run_fetchers(3, model_in_gcs, tmp_path, gcs.env())
    assert len(set(paths)) == 1
    for name in MODEL_FILES:
        assert gcs.downloads(f"/digits/1/{name}") == 1, name
    assert gcs.lists() == 3
    assert not list(tmp_path.rglob(".partial-*"))


def test_remote_backend_fetches_only_the_metadata(gcs, model_in_gcs, demo_model, tmp_path):
    settings = Settings(backend="tfserving-rest", model_uri=model_in_gcs,
                        model_cache_dir=str(tmp_path))
    resolved = resolve_model_uri(settings)
    assert resolved.model_uri == model_in_gcs
    assert Path(resolved.model_metadata).read_bytes() == \
        (demo_model.served / MODEL_FILES[0]).read_bytes()
    assert gcs.downloads() == 1


@pytest.mark.slow
def test_the_function_serves_a_model_from_gcs(gcs, model_in_gcs, digits, tmp_path):
    """`functions-framework --target predict` with MODEL_URI=gs://...: the model is fetched
    at worker start, and the digits come back right."""
    server = start_server(tmp_path, {**gcs.env(), "MODEL_URI": model_in_gcs,
                                     "MODEL_CACHE_DIR": str(tmp_path / "cache")})
    try:
        for label in (3, 8):
            index = int(np.flatnonzero(digits.y_test == label)[0])
            response = server.post(files={"file": ("d.png", encode(digits.x_test[index]),
                                                   "image/png")})
            assert response.status_code == 200, response.text
            assert response.json()["predictions"][0]["class_id"] == label
    finally:
        stop_server(server)
    assert gcs.downloads() == len(MODEL_FILES)
    (source,) = (tmp_path / "cache").iterdir()
    assert source.name.startswith(f"{gcs.bucket}-digits-1-")
