"""The segmentation demo under ``BACKEND=litert``: exported, served and packaged.

`modelprep litert` converts the demo's prepared signature (int8 pixels, image meta and
anchors in; detections and uint8 masks out). A real functions-framework server runs it
without TensorFlow, beside the in-process server (`seg_server`) on the same images:
every instance must come back with the same class, a box within a pixel and a mask of
IoU >= 0.98 against the in-process one, and the masks must score as the in-process ones
do against the drawn shapes in every mask format. The zip a function ships is built,
unpacked and asked for masks through the Lambda and SCF entry points with nothing else
on the path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from functions.answers.masks import MASK_FORMATS
from modelmeta import ModelMetadata
from modelprep.segmentation import grid_scene, random_scene
from tests.conftest import ROOT, encode, start_server, stop_server
from tests.litert.test_backend import tensorflow_files_mapped
from tests.segmentation.test_server import SCENES, ask, decoded, iou, match

pytestmark = pytest.mark.slow

VERIFY_SCENES = [(401, 480, 640), (402, 640, 480), (403, 512, 512), (404, 1024, 1024)]


@pytest.fixture(scope="module")
def seg_litert(seg_demo, tmp_path_factory):
    """`modelprep litert` on the demo (both flavours asked for), verified on drawn scenes,
    into a folder holding a stale int8 file from an earlier export."""
    from modelprep.litert import LiteRTOptions, export_litert

    base = tmp_path_factory.mktemp("seg-litert")
    scenes = base / "scenes"
    scenes.mkdir()
    for seed, height, width in VERIFY_SCENES:
        (scenes / f"scene-{seed}.png").write_bytes(encode(random_scene(seed, height, width)
                                                          .image))
    out = base / "litert"
    out.mkdir()
    (out / "model_int8.tflite").write_bytes(b"stale")
    (out / "model_int8.json").write_text("{}")
    return export_litert(seg_demo.served, LiteRTOptions(out=out, count=4,
                                                        verify_images=scenes))


@pytest.fixture(scope="module")
def litert_server(seg_litert, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("seg-litert-server"),
                       {"BACKEND": "litert", "MODEL_URI": str(seg_litert.out),
                        "MAX_IMAGES": "4"})
    yield srv
    stop_server(srv)


def test_the_float_flavour_is_the_served_model_and_int8_is_refused_with_the_reason(
        seg_litert, seg_demo):
    served = ModelMetadata.load(seg_demo.served)
    assert [f.flavour for f in seg_litert.files] == ["float"]
    (float_file,) = seg_litert.files
    meta = ModelMetadata.from_json(float_file.metadata_path.read_text())
    assert meta.inputs == served.inputs and meta.outputs == served.outputs
    assert [(i.name, i.kind, i.dtype) for i in meta.inputs] == [
        ("input_image", "quantized_pixels", "int8"), ("input_image_meta", "tensor", "float32"),
        ("input_anchors", "tensor", "float32")]
    assert meta.output("masks").dtype == "uint8" and meta.labels == served.labels
    assert meta.source["verified"] is True
    assert float_file.size_bytes < 4 * 1024 * 1024
    # TensorFlow's calibrator crashes on the demo's loops: int8 is skipped, never left stale
    assert seg_litert.skipped == (("int8", "TensorFlow's int8 calibration crashed (SIGSEGV) "
                                           "on this model; serve the float flavour"),)
    assert sorted(p.name for p in seg_litert.out.iterdir()) == [
        "model_float.json", "model_float.tflite"]
    report = seg_litert.report
    assert report is not None and report.passed and report.images == len(VERIFY_SCENES)
    detections, masks = report.flavours[0].outputs
    assert detections.max_abs_error <= 1e-5
    assert masks.max_abs_error <= 1 / 255 + 1e-6 and masks.argmax_agreement >= 0.9999
    assert "int8   not exported: TensorFlow's int8 calibration crashed" in seg_litert.format()


def instances_of(prediction: dict) -> list[tuple[str, list[int], float, np.ndarray]]:
    return [(i["label"], i["box"], i["score"], mask)
            for i, mask in zip(prediction["instances"], decoded(prediction), strict=True)]


def test_masks_and_boxes_match_the_in_process_answers(litert_server, seg_server):
    ious = []
    scenes = [random_scene(seed, h, w) for seed, h, w in SCENES] + [grid_scene(7)]
    for scene in scenes:
        answers = []
        for srv in (seg_server, litert_server):
            response = ask(srv, scene.image, "rle")
            assert response.status_code == 200, response.text
            answers.append(instances_of(response.json()["predictions"][0]))
        inprocess, litert = answers
        assert len(litert) == len(inprocess) == len(scene.shapes)
        for (label, box, score, mask), (want_label, want_box, want_score, want_mask) in zip(
                litert, inprocess, strict=True):
            assert label == want_label
            assert max(abs(a - b) for a, b in zip(box, want_box, strict=True)) <= 1
            assert abs(score - want_score) <= 1e-3
            ious.append(iou(mask, want_mask))
    assert len(ious) >= 125
    assert min(ious) >= 0.98, min(ious)


def test_mean_iou_against_the_drawn_shapes_in_every_format(litert_server):
    ious: dict[str, list[float]] = {fmt: [] for fmt in MASK_FORMATS}
    for seed, height, width in SCENES:
        scene = random_scene(seed, height, width)
        for fmt in MASK_FORMATS:
            response = ask(litert_server, scene.image, fmt)
            assert response.status_code == 200, response.text
            prediction = response.json()["predictions"][0]
            assert prediction["mask_format"] == fmt
            masks = decoded(prediction)
            assert len(masks) == len(scene.shapes)
            for (best, score), shape in zip(match(scene, masks), scene.shapes, strict=True):
                assert prediction["instances"][best]["label"] == shape.kind
                ious[fmt].append(score)
    means = {fmt: float(np.mean(v)) for fmt, v in ious.items()}
    assert min(means.values()) >= 0.85, means


def test_a_batch_and_bad_input_through_the_litert_server(litert_server):
    import base64

    scenes = [random_scene(201, 400, 300), random_scene(202, 360, 640)]
    response = litert_server.post(json={"images": [base64.b64encode(encode(s.image)).decode()
                                                   for s in scenes], "mask_format": "rle"})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [(p["height"], p["width"]) for p in predictions] == [(400, 300), (360, 640)]
    assert [len(p["instances"]) for p in predictions] == [len(s.shapes) for s in scenes]
    bad = litert_server.post(data=b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
                             headers={"Content-Type": "image/png"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_image"
    assert tensorflow_files_mapped(litert_server.process.pid) == []


PACKAGE_SCRIPT = """
import base64, json, sys
package = sys.argv[1]
sys.path.insert(0, package)
body = json.dumps({"image": open(sys.argv[2]).read(), "mask_format": "rle"})
from functions.platforms.aws import lambda_handler
from functions.platforms.scf import main_handler
aws = lambda_handler({"version": "2.0", "routeKey": "$default", "rawPath": "/",
                      "rawQueryString": "", "headers": {"content-type": "application/json"},
                      "requestContext": {"http": {"method": "POST", "path": "/",
                                                  "protocol": "HTTP/1.1",
                                                  "sourceIp": "127.0.0.1", "userAgent": "t"},
                                         "requestId": "r1", "stage": "$default"},
                      "body": body, "isBase64Encoded": False}, None)
event = json.load(open(sys.argv[3]))
event["body"] = body
event["headers"]["Content-Length"] = str(len(body))
scf = main_handler(event, {"request_id": "r2"})
stdlib = (sys.base_prefix, sys.base_exec_prefix)
outside = sorted({m.__file__ for m in list(sys.modules.values())
                  if getattr(m, "__file__", None) and not m.__file__.startswith(package)
                  and not m.__file__.startswith(stdlib)})
print(json.dumps({"aws": [aws["statusCode"], json.loads(aws["body"])],
                  "scf": [scf["statusCode"], json.loads(scf["body"])], "outside": outside,
                  "tensorflow": [m for m in sys.modules if m.startswith("tensorflow")]}))
"""


def test_the_zip_segments_through_lambda_and_scf_with_nothing_else_on_the_path(
        seg_litert, seg_server, tmp_path):
    from bench.litert_package import LAMBDA_UNZIPPED_LIMIT, LAMBDA_ZIP_LIMIT, build

    package = build(tmp_path / "function.zip", seg_litert.out, flavour="float",
                    from_venv=True, compresslevel=6)
    names = set(zipfile.ZipFile(package.zip_path).namelist())
    assert {"model/model_float.tflite", "model/model_float.json",
            "functions/backends/litert_files.py", "functions/answers/masks/encode.py"} <= names
    assert package.zip_bytes < LAMBDA_ZIP_LIMIT
    assert package.unzipped_bytes < LAMBDA_UNZIPPED_LIMIT  # and SCF's 500 MB, a fortiori
    unpacked = tmp_path / "task"
    zipfile.ZipFile(package.zip_path).extractall(unpacked)

    import base64

    scene = random_scene(103, 512, 512)
    image = tmp_path / "image.b64"
    image.write_text(base64.b64encode(encode(scene.image)).decode())
    out = subprocess.run([sys.executable, "-S", "-E", "-c", PACKAGE_SCRIPT, str(unpacked),
                          str(image), str(ROOT / "events" / "scf-apigw-json.json")],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING",
                              "BACKEND": "litert", "MODEL_URI": str(unpacked / "model")})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["outside"] == [] and result["tensorflow"] == []
    want = ask(seg_server, scene.image, "rle").json()["predictions"][0]
    for platform in ("aws", "scf"):
        status, body = result[platform]
        assert status == 200, body
        got = body["predictions"][0]
        assert [i["label"] for i in got["instances"]] == [i["label"]
                                                          for i in want["instances"]]
        for mask, want_mask in zip(decoded(got), decoded(want), strict=True):
            assert iou(mask, want_mask) >= 0.98
