"""Instance segmentation through the real function server on loopback, scored against the
shapes the images were drawn with.

The server is functions-framework serving the segmentation demo (int8 pixels in, uint8
masks out); the client side decodes every format the way the README's JavaScript does.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests

from bench.maskdecode import decode_mask
from functions.answers.masks import MASK_FORMATS
from modelprep.segmentation import Scene, grid_scene, random_scene
from tests.conftest import encode
from tests.segmentation.test_masks import band

pytestmark = pytest.mark.slow

LAMBDA_LIMIT = 6_291_456
SCENES = [  # seed, height, width: landscape, portrait, square, small, large
    (101, 480, 640), (102, 640, 480), (103, 512, 512), (104, 300, 400), (105, 900, 1200),
    (106, 768, 1024),
]


def ask(server, scene_image: np.ndarray, mask_format: str | None = None,
        **kwargs) -> requests.Response:
    """As wx.uploadFile sends it: the PNG under `file`, options as form fields."""
    data = {} if mask_format is None else {"mask_format": mask_format}
    return server.post(files={"file": ("tmp.png", encode(scene_image), "image/png")},
                       data=data, **kwargs)


def decoded(prediction: dict) -> list[np.ndarray]:
    fmt, h, w = prediction["mask_format"], prediction["height"], prediction["width"]
    return [decode_mask(i["mask"], fmt, i["box"], h, w) for i in prediction["instances"]]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def match(scene: Scene, masks: list[np.ndarray]) -> list[tuple[int, float]]:
    """For each drawn shape, the returned instance overlapping it most, and the IoU
    (only instances whose pixels reach into the shape's box can overlap it)."""
    result = []
    for k, shape in enumerate(scene.shapes):
        y1, x1, y2, x2 = shape.box
        truth = scene.full_mask(k)
        scores = [iou(truth, m) if m[y1:y2, x1:x2].any() else 0.0 for m in masks]
        best = int(np.argmax(scores)) if scores else -1
        result.append((best, scores[best] if scores else 0.0))
    return result


@pytest.fixture(scope="module")
def answers(seg_server):
    """Every scene in every format, through the server."""
    out = {}
    for seed, height, width in SCENES:
        scene = random_scene(seed, height, width)
        for fmt in MASK_FORMATS:
            response = ask(seg_server, scene.image, fmt)
            assert response.status_code == 200, response.text
            out[seed, fmt] = (scene, response.json()["predictions"][0])
    return out


def test_mean_iou_against_the_drawn_shapes_in_every_format(answers):
    ious: dict[str, list[float]] = {fmt: [] for fmt in MASK_FORMATS}
    for (seed, fmt), (scene, prediction) in answers.items():
        assert prediction["mask_format"] == fmt
        assert (prediction["height"], prediction["width"]) == scene.image.shape[:2]
        masks = decoded(prediction)
        assert len(masks) == len(scene.shapes), seed
        matched = match(scene, masks)
        assert sorted(best for best, _ in matched) == list(range(len(masks)))  # one each
        for (best, score), shape in zip(matched, scene.shapes, strict=True):
            assert prediction["instances"][best]["label"] == shape.kind
            assert prediction["instances"][best]["class_id"] == shape.class_id
            ious[fmt].append(score)
    means = {fmt: float(np.mean(v)) for fmt, v in ious.items()}
    assert all(len(v) >= 25 for v in ious.values())
    assert min(means.values()) >= 0.85, means
    assert abs(means["polygon"] - means["rle"]) < 0.01, means
    assert means["float"] == means["png"] == means["rle"]


def test_every_format_decodes_to_the_same_masks(answers):
    for seed, _, _ in SCENES:
        reference = answers[seed, "rle"][1]
        expected = decoded(reference)
        for fmt in ("float", "png"):
            prediction = answers[seed, fmt][1]
            assert [(i["box"], i["label"], i["score"]) for i in prediction["instances"]] == [
                (i["box"], i["label"], i["score"]) for i in reference["instances"]]
            for got, want in zip(decoded(prediction), expected, strict=True):
                assert np.array_equal(got, want), (seed, fmt)
        for got, want in zip(decoded(answers[seed, "polygon"][1]), expected, strict=True):
            wrong = got ^ want
            assert not np.any(wrong & ~band(want)), seed  # only pixels touching the edge
            assert wrong.sum() <= 0.1 * want.sum()


def test_boxes_are_in_the_clients_pixels(answers):
    for seed, _, _ in SCENES:
        scene, prediction = answers[seed, "rle"]
        for best, _ in match(scene, decoded(prediction)):
            x1, y1, x2, y2 = prediction["instances"][best]["box"]
            ys, xs = np.nonzero(decoded(prediction)[best])
            assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) or (
                x1 <= xs.min() and y1 <= ys.min() and x2 >= xs.max() + 1 and y2 >= ys.max() + 1)
        for shape, (best, _) in zip(scene.shapes, match(scene, decoded(prediction)),
                                    strict=True):
            x1, y1, x2, y2 = prediction["instances"][best]["box"]
            ty1, tx1, ty2, tx2 = shape.box
            assert max(abs(x1 - tx1), abs(y1 - ty1), abs(x2 - tx2), abs(y2 - ty2)) <= 4


def test_the_default_is_polygon_and_float_probabilities_pass_one_half(answers, seg_server):
    scene = random_scene(101, 480, 640)
    prediction = ask(seg_server, scene.image).json()["predictions"][0]
    assert prediction["mask_format"] == "polygon"
    assert prediction == answers[101, "polygon"][1]
    probabilities = np.concatenate([np.ravel(i["mask"])
                                    for i in answers[101, "float"][1]["instances"]])
    assert probabilities.max() > 0.9 and (probabilities > 0.5).mean() > 0.5


def test_100_detections_on_1024x1024_fit_lambdas_6_mb_in_the_default_format(seg_server):
    scene = grid_scene(7)
    assert len(scene.shapes) == 100 and scene.image.shape == (1024, 1024, 3)
    response = ask(seg_server, scene.image)
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["mask_format"] == "polygon"
    assert len(prediction["instances"]) == 100
    assert len(response.content) < LAMBDA_LIMIT / 100  # about 20 KB
    ious = [score for _, score in match(scene, decoded(prediction))]
    assert np.mean(ious) >= 0.85
    for fmt in ("rle", "png", "float"):
        other = ask(seg_server, scene.image, fmt)
        assert other.status_code == 200 and len(other.content) < LAMBDA_LIMIT, fmt


def test_a_format_that_would_not_fit_gets_413_with_the_size_and_the_formats_that_do(
        seg_server):
    scene = random_scene(9, 2000, 2000, count=(4, 4), sizes=(850, 900), gap=60, noise=3)
    jpeg = encode(scene.image, "JPEG", quality=90)
    assert len(jpeg) < 6_000_000

    def post(fmt):
        return seg_server.post(json={"image": base64.b64encode(jpeg).decode(),
                                     "mask_format": fmt})

    response = post("float")
    assert response.status_code == 413, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "payload_too_large"
    assert error["mask_format"] == "float" and error["limit_bytes"] == LAMBDA_LIMIT
    assert error["response_bytes"] > LAMBDA_LIMIT
    fitting = error["formats_that_fit"]
    assert list(fitting) == sorted(fitting, key=fitting.get) and set(fitting) == {
        "polygon", "rle", "png"}
    assert (f"the response would be {error['response_bytes']:,} bytes with mask_format "
            f"'float', over the limit of 6,291,456 bytes (MAX_RESPONSE_BYTES); ask for "
            f"mask_format {next(iter(fitting))}") in error["message"]
    for fmt, size in fitting.items():  # the sizes it quotes are the sizes it sends
        answer = post(fmt)
        assert answer.status_code == 200
        assert len(answer.content) == size, fmt
        assert len(answer.json()["predictions"][0]["instances"]) == len(scene.shapes)


def test_a_json_batch_answers_each_image_at_its_own_size(seg_server):
    scenes = [random_scene(201, 400, 300), random_scene(202, 360, 640)]
    response = seg_server.post(json={"images": [base64.b64encode(encode(s.image)).decode()
                                                for s in scenes], "mask_format": "rle"})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [(p["height"], p["width"]) for p in predictions] == [(400, 300), (360, 640)]
    for scene, prediction in zip(scenes, predictions, strict=True):
        assert len(prediction["instances"]) == len(scene.shapes)
        assert all(i["mask"]["size"] == [prediction["height"], prediction["width"]]
                   for i in prediction["instances"])


def test_mistakes_get_precise_errors(seg_server):
    scene = random_scene(301, 200, 200, sizes=(40, 80))
    response = ask(seg_server, scene.image, "svg")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "invalid_option",
        "message": "mask_format must be one of polygon, rle, png, float, got 'svg'"}
    good = encode(scene.image)
    response = seg_server.post(json={"images": [base64.b64encode(good).decode(),
                                                base64.b64encode(good[:300]).decode()]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_image" and error["message"].startswith("images[1]")


def test_a_classifier_refuses_mask_format_and_big_answers_are_413(demo_model, digits):
    """The digits demo in-process: mask_format is an error there, and MAX_RESPONSE_BYTES
    applies to every answer."""
    from functions.app import App
    from functions.config import Settings
    from functions.httpio import Headers, HttpRequest

    image = base64.b64encode(encode(digits.x_test[0])).decode()
    body = json.dumps({"image": image, "mask_format": "png"}).encode()
    request = HttpRequest("POST", "/", Headers({"Content-Type": "application/json"}), body)
    app = App(Settings(model_uri=str(demo_model.served), preload=False))
    answer = app.handle(request)
    assert answer.status == 400
    assert json.loads(answer.body)["error"] == {
        "code": "invalid_option",
        "message": "mask_format applies to models that return masks; this one does not"}

    small = App(Settings(model_uri=str(demo_model.served), preload=False,
                         max_response_bytes=100))
    plain = HttpRequest("POST", "/", request.headers, json.dumps({"image": image}).encode())
    answer = small.handle(plain)
    assert answer.status == 413
    error = json.loads(answer.body)["error"]
    assert error["limit_bytes"] == 100 and error["response_bytes"] > 100
    assert f"the response would be {error['response_bytes']:,} bytes" in error["message"]
