"""The demo page at GET /: off by default, and end to end in headless Chromium when on.

The browser tests drive Debian's Chromium (/usr/bin/chromium, installed by
examples/ci/install-chromium.sh) with Playwright against the real function server: pick a
real image, see the prediction, and check from a screenshot that it was drawn.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from functions import demo_page
from functions.app import App
from functions.config import ConfigError, Settings
from functions.errors import ModelNotReady
from functions.httpio import Headers, HttpRequest
from modelmeta import ImageSpec, InputSpec, ModelMetadata, OutputSpec

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DONE = "body[data-state=done]"


# -- the setting and the route, in process -------------------------------------------------


class StubBackend:
    """Stands in for TensorFlow here: the page reads only the metadata (the model's warm-up
    call is answered with zeros). The browser tests below use the real model."""

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata

    def predict(self, inputs):
        return {"scores": np.zeros((len(inputs["image_bytes"]), 10), np.float32)}


DIGITS_META = ModelMetadata(
    name="digits",
    inputs=(InputSpec("image_bytes", "image_bytes", "string", (-1,),
                      image=ImageSpec(height=28, width=28, channels=1, resize="pad")),),
    outputs=(OutputSpec("scores", "probabilities", "float32", (-1, 10)),),
)


def get(app: App, path: str = "/", method: str = "GET"):
    return app.handle(HttpRequest(method=method, path=path, headers=Headers({})))


def embedded_config(body: bytes) -> dict:
    match = re.search(rb'<script type="application/json" id="config">(.*?)</script>', body)
    assert match is not None
    return json.loads(match.group(1))


def test_demo_page_is_off_unless_asked():
    assert Settings.from_env({}).demo_page is False
    assert Settings().demo_page is False
    for raw, expected in (("true", True), ("1", True), ("on", True), ("false", False),
                          ("0", False), ("", False)):
        assert Settings.from_env({"DEMO_PAGE": raw}).demo_page is expected
    with pytest.raises(ConfigError, match=r"^DEMO_PAGE must be true or false, got 'maybe'$"):
        Settings.from_env({"DEMO_PAGE": "maybe"})


def test_get_root_stays_405_json_when_off():
    response = get(App(Settings(preload=False)))
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert json.loads(response.body) == {"error": {
        "code": "method_not_allowed", "message": "method GET is not allowed here; use POST"}}


def test_page_carries_the_model_input_size_and_a_strict_policy():
    app = App(Settings(demo_page=True), backend_factory=lambda: StubBackend(DIGITS_META))
    response = get(app)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert embedded_config(response.body) == {
        "model": {"name": "digits", "version": None},
        "input": {"width": 28, "height": 28, "channels": 1, "resize": "pad"},
        "outputs": [{"name": "scores", "role": "probabilities", "encoding": None}],
        "problem": None,
    }
    # The inline script runs only because its hash is in the policy, and nothing else does.
    policy = response.headers["Content-Security-Policy"]
    script = re.search(rb"<script>(.*?)</script>", response.body, re.DOTALL).group(1)
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    # Only GET, HEAD and POST at / when the page is on.
    put = get(app, method="PUT")
    assert (put.status, put.headers["Allow"]) == (405, "GET, HEAD, POST")
    # /predict never serves the page.
    assert get(app, "/predict").status == 405


def test_page_renders_with_the_reason_when_the_model_cannot_load():
    def broken():
        raise ModelNotReady("the model failed to load (OSError); the server log has the details")

    response = get(App(Settings(demo_page=True), backend_factory=broken))
    assert response.status == 200
    config = embedded_config(response.body)
    assert config["input"] is None and config["model"] is None
    assert config["problem"] == ("the model failed to load (OSError); the server log has "
                                 "the details")


def test_embedded_config_cannot_close_its_script_element():
    response = demo_page.render({"model": {"name": "</script><script>alert(1)</script>"}})
    assert b"</script><script>alert(1)" not in response.body
    assert embedded_config(response.body)["model"]["name"] == "</script><script>alert(1)</script>"


# -- end to end in headless Chromium -------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A fresh Chromium profile; skipped with the reason when Chromium or Playwright is absent."""
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM}; run "
                    "examples/ci/install-chromium.sh (Debian package chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed in the venv (pip install playwright)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM),
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 900, "height": 1000})
        yield context
        context.close()


def open_page(browser, url: str):
    """A new tab on the demo page, recording script errors and failed loads."""
    tab = browser.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    tab.goto(url + "/")
    tab.wait_for_selector("body[data-state=ready]", state="attached")
    tab.problems = problems  # a test that expects an error status removes its own line
    return tab


@pytest.fixture
def page(browser, demo_server):
    tab = open_page(browser, demo_server.url)
    yield tab
    tab.close()
    assert tab.problems == [], tab.problems


@pytest.fixture
def segmentation_page(browser, segmentation_server):
    tab = open_page(browser, segmentation_server.url)
    yield tab
    tab.close()
    assert tab.problems == [], tab.problems


def pick(page, path: Path, send_as: str = "multipart") -> None:
    page.check(f"input[name=send-as][value={send_as}]")
    page.set_input_files("#file", str(path))
    page.wait_for_selector(DONE, state="attached", timeout=60_000)


def screenshot_of(page, selector: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("L"))


def assert_label_rendered(page, expected: str) -> None:
    """The label is visible, sized, and its pixels show dark ink on a light background."""
    label = page.locator("#label")
    assert label.text_content() == expected
    box = label.bounding_box()
    assert box is not None and box["width"] >= 20 and box["height"] >= 30, box
    pixels = screenshot_of(page, "#label")
    ink = int((pixels < 100).sum())
    paper = int((pixels > 200).sum())
    assert ink >= 40 and paper >= pixels.size // 2, (ink, paper, pixels.shape)


@pytest.mark.slow
@pytest.mark.parametrize("send_as", ["multipart", "json"])
def test_picking_a_digit_shows_its_label(page, digit_files, send_as):
    assert page.locator("#mask-options").is_hidden()  # a classifier has no masks
    pick(page, digit_files.files["7"], send_as)
    assert page.locator("#error").is_hidden()
    assert_label_rendered(page, "7")
    assert re.fullmatch(r"\d+\.\d%", page.locator("#score").text_content())
    assert page.locator("#topk tr").count() == 5
    assert page.locator("#topk tr").first.locator("td").first.text_content() == "7"
    status = page.locator("#status").text_content()
    match = re.fullmatch(r"200 in \d+ ms; sent 28x28 photo\.png \(([\d,]+) bytes\) as "
                         r"(multipart|([\d,]+) bytes of JSON)\.", status)
    assert match is not None, status
    png_bytes = int(match.group(1).replace(",", ""))
    assert 100 < png_bytes < 4000  # a 28x28 canvas PNG
    if send_as == "json":  # {"image":"<base64>","top_k":5}
        assert int(match.group(3).replace(",", "")) == 4 * -(-png_bytes // 3) + 22
    else:
        assert match.group(2) == "multipart"
    # The photo is drawn: the digit's white strokes on black.
    view = screenshot_of(page, "#view")
    assert view.shape[0] >= 200 and (view > 200).sum() > 500 and (view < 30).sum() > 5000


@pytest.mark.slow
def test_a_photo_is_shrunk_to_cover_the_input_before_sending(page):
    from sklearn.datasets import load_sample_image

    buf = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buf, format="JPEG", quality=90)
    page.set_input_files("#file", files=[{"name": "china.jpg", "mimeType": "image/jpeg",
                                          "buffer": buf.getvalue()}])
    page.wait_for_selector(DONE, state="attached", timeout=60_000)
    # 640x427 scaled until its short side is 28: 42x28, small enough to go as PNG.
    status = page.locator("#status").text_content()
    assert re.fullmatch(r"200 in \d+ ms; sent 42x28 photo\.png \([\d,]+ bytes\) as multipart\.",
                        status), status
    assert re.fullmatch(r"\d", page.locator("#label").text_content())


@pytest.mark.slow
def test_a_file_that_is_not_an_image_shows_the_function_error(page, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_bytes(b"hello, not a photo\n")
    pick(page, notes)
    error = page.locator("#error")
    assert error.is_visible()
    assert error.text_content() == (
        "invalid_image: file is not an image (expected JPEG, PNG, GIF or BMP); "
        "it starts with the bytes 68 65 6c 6c 6f 2c 20 6e")
    assert page.locator("#result").is_hidden()
    assert re.fullmatch(r"400 in \d+ ms; sent notes\.jpg \(19 bytes\) as multipart\.",
                        page.locator("#status").text_content())
    expected = ("failed to load resource: the server responded with a status of 400 "
                "(bad request)")  # the reason phrase's case is the server's (Flask: upper)
    page.problems[:] = [p for p in page.problems if p.lower() != expected]


# -- masks over the photo ------------------------------------------------------------------

MASK_COLOURS = np.array([(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
                         (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60),
                         (250, 190, 212), (0, 128, 128)], np.float64)
"""The page's instance colours: functions.answers.masks.encode.PNG_COLOURS, in the same order."""


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        inner = out.copy()
        inner[1:, :] &= out[:-1, :]
        inner[:-1, :] &= out[1:, :]
        inner[:, 1:] &= out[:, :-1]
        inner[:, :-1] &= out[:, 1:]
        out = inner
    return out


def test_page_colours_are_the_function_png_colours():
    from functions.answers.masks.encode import PNG_COLOURS

    assert [tuple(c) for c in MASK_COLOURS.astype(int).tolist()] == list(PNG_COLOURS)
    html = demo_page.TEMPLATE.read_text()
    listed = re.search(r"const COLORS = (\[\[.*?\]\]);", html, re.DOTALL).group(1)
    assert json.loads(listed) == [list(c) for c in PNG_COLOURS]


@pytest.mark.slow
@pytest.mark.parametrize("mask_format", ["polygon", "rle", "png", "float"])
def test_masks_are_drawn_over_the_photo(segmentation_page, scene_files, mask_format):
    page = segmentation_page
    scene = scene_files.scene
    assert page.locator("#mask-options").is_visible()
    page.select_option("#mask-format", mask_format)
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        pick(page, scene_files.png)
    reply = answer.value.json()["predictions"][0]
    instances = reply["instances"]
    assert (reply["mask_format"], len(instances)) == (mask_format, len(scene.shapes))
    assert page.locator("#label").text_content() == f"{len(scene.shapes)} found"
    assert page.locator("#instances li").all_text_contents() == [
        f"{item['label']} {item['score'] * 100:.1f}%" for item in instances]

    box = page.locator("#view").bounding_box()
    clip = {"x": round(box["x"]), "y": round(box["y"]), "width": round(box["width"]),
            "height": round(box["height"])}
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"),
                      np.float64)
    height, width = scene.image.shape[:2]
    assert shot.shape == (360, 480, 3)  # the 640x480 photo at the page's 480 px width
    # Each view pixel shows the frame pixel under its centre.
    rows = ((np.arange(shot.shape[0]) + 0.5) * height / shot.shape[0]).astype(int)
    cols = ((np.arange(shot.shape[1]) + 0.5) * width / shot.shape[1]).astype(int)
    original = scene.image[rows][:, cols].astype(np.float64)
    alpha = 160 / 255 if mask_format == "png" else 0.5
    for index, item in enumerate(instances):
        x1, y1, x2, y2 = item["box"]
        centre = ((y1 + y2) // 2, (x1 + x2) // 2)
        truth = next(i for i, shape in enumerate(scene.shapes)
                     if shape.box[0] <= centre[0] < shape.box[2]
                     and shape.box[1] <= centre[1] < shape.box[3])
        inside = erode(scene.full_mask(truth), 5)[rows][:, cols]
        assert inside.sum() > 50, item
        expected = ((1 - alpha) * original[inside].mean(axis=0)
                    + alpha * MASK_COLOURS[index % len(MASK_COLOURS)])
        drawn = shot[inside].mean(axis=0)
        assert np.abs(drawn - expected).max() < 8, (mask_format, item["label"], drawn,
                                                     expected)
    # Far from every box (and the label above it), the photo is untouched.
    near = np.zeros((height, width), bool)
    for item in instances:
        x1, y1, x2, y2 = item["box"]
        near[max(0, y1 - 24):y2 + 8, max(0, x1 - 8):x2 + 90] = True
    far = ~near[rows][:, cols]
    assert far.sum() > 50_000
    assert np.abs(shot[far].mean(axis=0) - original[far].mean(axis=0)).max() < 3
