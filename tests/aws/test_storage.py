"""Models from S3 (functions/storage/) against moto's S3 server over real HTTP.

Every request goes through `S3Proxy` on loopback, which counts them and, for the
truncation test, cuts a GET body short after sending its full Content-Length: moto
itself cannot truncate a download, the proxy does it at the HTTP level, as a dropped
connection would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from functions.config import Settings
from functions.errors import ModelNotReady
from functions.storage import SOURCE_FILE, fetch_model, resolve_model_uri
from tests.aws.s3util import upload_dir
from tests.conftest import ROOT

MODEL_FILES = ("assets.extra/model_metadata.json", "fingerprint.pb", "saved_model.pb",
               "variables/variables.data-00000-of-00001", "variables/variables.index")


@pytest.fixture
def model_in_s3(s3, demo_model):
    """The demo model uploaded to s3://<bucket>/digits/1/."""
    upload_dir(s3.client, demo_model.served, s3.bucket, "digits/1")
    return s3.uri("digits/1")


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != SOURCE_FILE}


def test_cold_start_downloads_every_file_once(s3, model_in_s3, demo_model, tmp_path):
    local = fetch_model(model_in_s3, tmp_path)
    assert files_of(local) == files_of(demo_model.served)
    assert sorted(files_of(local)) == list(MODEL_FILES)
    assert s3.proxy.lists() == 1
    for name in MODEL_FILES:
        assert s3.proxy.gets(f"/digits/1/{name}") == 1, name
    source = json.loads((local / SOURCE_FILE).read_text())
    assert source["uri"] == model_in_s3
    listed = {o["Key"]: o["ETag"] for o in
              s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="digits/1/")["Contents"]}
    assert {o["key"]: o["etag"] for o in source["objects"]} == listed
    assert [p.name for p in local.parent.iterdir() if p.name.startswith(".partial")] == []


def test_cache_hit_lists_but_downloads_nothing(s3, model_in_s3, tmp_path):
    first = fetch_model(model_in_s3, tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    gets = s3.proxy.gets()
    second = fetch_model(model_in_s3, tmp_path)
    assert second == first
    assert s3.proxy.gets() == gets == len(MODEL_FILES)
    assert s3.proxy.lists() == 2
    assert {p: p.stat().st_mtime_ns for p in second.rglob("*")} == mtimes


def test_changed_object_makes_a_new_copy_downloading_only_it(s3, model_in_s3, demo_model,
                                                             tmp_path):
    first = fetch_model(model_in_s3, tmp_path)
    metadata = json.loads((demo_model.served / MODEL_FILES[0]).read_text())
    metadata["labels"] = [f"digit {i}" for i in range(10)]
    s3.client.put_object(Bucket=s3.bucket, Key=f"digits/1/{MODEL_FILES[0]}",
                         Body=json.dumps(metadata).encode())
    second = fetch_model(model_in_s3, tmp_path)
    assert second != first and second.parent == first.parent
    assert json.loads((second / MODEL_FILES[0]).read_text())["labels"][3] == "digit 3"
    assert s3.proxy.gets(f"/digits/1/{MODEL_FILES[0]}") == 2
    for name in MODEL_FILES[1:]:
        assert s3.proxy.gets(f"/digits/1/{name}") == 1, name
        assert (second / name).stat().st_ino == (first / name).stat().st_ino  # hard link
    assert first.is_dir(), "a copy this process uses is never deleted"


@pytest.mark.parametrize("prefix, message", [
    ("nothing/here", "there is no object under s3://{bucket}/nothing/here/; MODEL_URI must "
     "name the S3 folder holding the prepared model (saved_model.pb, variables/, "
     "assets.extra/model_metadata.json)"),
    ("digits", "s3://{bucket}/digits/ holds 5 object(s) but no saved_model.pb; it is at "
     "s3://{bucket}/digits/1/"),
    ("digits/1/variables", "s3://{bucket}/digits/1/variables/ holds 2 object(s) but no "
     "saved_model.pb; MODEL_URI must name the model directory itself"),
])
def test_wrong_prefix_is_named_with_the_fix(s3, model_in_s3, tmp_path, prefix, message):
    with pytest.raises(ModelNotReady) as caught:
        fetch_model(s3.uri(prefix), tmp_path)
    assert caught.value.message == message.format(bucket=s3.bucket)
    assert caught.value.status == 503
    assert s3.proxy.gets() == 0


def test_missing_bucket_and_malformed_uri(s3, tmp_path):
    with pytest.raises(ModelNotReady) as caught:
        fetch_model("s3://no-such-bucket-here/m/", tmp_path)
    assert caught.value.message == ("listing s3://no-such-bucket-here/m/ failed: the bucket "
                                    "'no-such-bucket-here' does not exist; check MODEL_URI")
    with pytest.raises(ModelNotReady) as caught:
        fetch_model("s3:///m/", tmp_path)
    assert caught.value.message == ("MODEL_URI: 's3:///m/' does not name a bucket: write "
                                    "s3://BUCKET/PREFIX/")


def test_object_key_escaping_the_model_directory_is_refused(s3, tmp_path):
    s3.client.put_object(Bucket=s3.bucket, Key="m/saved_model.pb", Body=b"x")
    s3.client.put_object(Bucket=s3.bucket, Key="m/../../etc/cron", Body=b"x")
    with pytest.raises(ModelNotReady) as caught:
        fetch_model(s3.uri("m"), tmp_path)
    assert caught.value.message == (f"the object key 'm/../../etc/cron' under s3://{s3.bucket}"
                                    "/m/ cannot be a file inside the model directory")
    assert not list(tmp_path.rglob("cron"))


def test_refused_credentials_are_named(s3, model_in_s3, tmp_path):
    """moto checks credentials once its auth is switched on (count 0: from now on)."""
    requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        with pytest.raises(ModelNotReady) as caught:
            fetch_model(model_in_s3, tmp_path)
    finally:
        requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
    assert caught.value.message == (
        f"listing {model_in_s3} failed: S3 refused the credentials (InvalidAccessKeyId: The "
        "AWS Access Key Id you provided does not exist in our records.); check the "
        "function's role or its AWS keys")


def test_missing_credentials_are_named(s3, model_in_s3, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    with pytest.raises(ModelNotReady) as caught:
        fetch_model(model_in_s3, tmp_path)
    assert caught.value.message == (
        f"listing {model_in_s3} failed: no AWS credentials were found; give the function a "
        "role that may read the bucket, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def test_truncated_download_is_retried_then_refused_and_never_left_half_written(
        s3, model_in_s3, tmp_path):
    s3.proxy.truncate["variables.data-00000-of-00001"] = 0.5
    size = (len(s3.client.get_object(Bucket=s3.bucket, Key=f"digits/1/{MODEL_FILES[3]}")
                ["Body"].read()))
    with pytest.raises(ModelNotReady) as caught:
        fetch_model(model_in_s3, tmp_path)
    assert caught.value.message == (
        f"downloading {model_in_s3}{MODEL_FILES[3]} failed 3 times: the connection broke "
        f"after {size // 2:,} of {size:,} bytes: IncompleteReadError; nothing was loaded, "
        "the next cold start tries again")
    assert s3.proxy.gets(MODEL_FILES[3]) == 3
    (source,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert [p.name for p in source.iterdir() if p.is_dir()] == [], "no copy, no partial"
    del s3.proxy.truncate["variables.data-00000-of-00001"]
    local = fetch_model(model_in_s3, tmp_path)
    assert (local / MODEL_FILES[3]).stat().st_size == size


FETCH_SCRIPT = """
import sys, time
from functions.storage import fetch_model
started = time.monotonic()
print(fetch_model(sys.argv[1], sys.argv[2]), f"{time.monotonic() - started:.2f}")
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
def test_processes_starting_together_download_once(s3, model_in_s3, tmp_path):
    s3.proxy.delay = 0.3  # 5 objects: about 1.5 s of download that the others wait for
    paths = run_fetchers(3, model_in_s3, tmp_path, s3.env())
    assert len(set(paths)) == 1
    for name in MODEL_FILES:
        assert s3.proxy.gets(f"/digits/1/{name}") == 1, name
    assert s3.proxy.lists() == 3
    assert not list(tmp_path.rglob(".partial-*"))


@pytest.mark.slow
def test_copies_no_process_uses_are_deleted(s3, model_in_s3, tmp_path):
    (old,) = run_fetchers(1, model_in_s3, tmp_path, s3.env())
    in_use = fetch_model(model_in_s3, tmp_path)  # this process keeps using it
    assert str(in_use) == old
    s3.client.put_object(Bucket=s3.bucket, Key=f"digits/1/{MODEL_FILES[1]}", Body=b"changed")
    (new,) = run_fetchers(1, model_in_s3, tmp_path, s3.env())
    assert new != old and Path(old).is_dir(), "in use here: kept"
    s3.client.put_object(Bucket=s3.bucket, Key=f"digits/1/{MODEL_FILES[1]}", Body=b"again")
    (newest,) = run_fetchers(1, model_in_s3, tmp_path, s3.env())
    assert not Path(new).exists(), "used by nobody: deleted"
    assert Path(newest).is_dir() and Path(old).is_dir()


def test_remote_backend_fetches_only_the_metadata(s3, model_in_s3, demo_model, tmp_path):
    settings = Settings(backend="tfserving-rest", model_uri=model_in_s3,
                        model_cache_dir=str(tmp_path))
    resolved = resolve_model_uri(settings)
    assert resolved.model_uri == model_in_s3
    assert Path(resolved.model_metadata).read_bytes() == \
        (demo_model.served / MODEL_FILES[0]).read_bytes()
    assert s3.proxy.gets() == 1


def test_local_model_uri_is_left_alone(s3, tmp_path):
    settings = Settings(model_uri=str(tmp_path), model_cache_dir=str(tmp_path))
    assert resolve_model_uri(settings) is settings
    assert s3.proxy.counts == {}


def test_unusable_cache_directory_is_named(s3, model_in_s3, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(ModelNotReady) as caught:
        fetch_model(model_in_s3, not_a_dir)
    assert caught.value.message == (f"cannot use the model cache {not_a_dir}: Not a directory; "
                                    "set MODEL_CACHE_DIR to a writable directory (on Lambda: "
                                    "under /tmp)")
