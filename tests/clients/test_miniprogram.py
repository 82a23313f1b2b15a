"""The mini-program sample: its request module under Node, against the real function server.

The Node tests live beside the sample (examples/miniprogram/test/) and run with Node's own
test runner; these tests run them, give them the server's URL and real digit images, and
check from the TAP summary that every one of them ran and passed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

MINIPROGRAM = ROOT / "examples" / "miniprogram"
NODE_TESTS = MINIPROGRAM / "test"
NODE_MIN_MAJOR = 20


@dataclass(frozen=True)
class TapSummary:
    passed: int
    failed: int
    skipped: int
    todo: int
    output: str


def node() -> str:
    """Node's path, or skip: the runner needs `node --test` and `--test-reporter`."""
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not on PATH; the mini-program tests need Node.js 20 or newer")
    version = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    major = int(version.lstrip("v").split(".", 1)[0])
    if major < NODE_MIN_MAJOR:
        pytest.skip(f"node {version} is too old; the mini-program tests need Node.js "
                    f"{NODE_MIN_MAJOR} or newer")
    return path


def run_node_tests(files: list[Path], env: dict[str, str] | None = None) -> TapSummary:
    result = subprocess.run(
        [node(), "--test", "--test-reporter=tap", *map(str, files)],
        cwd=MINIPROGRAM, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=300)
    output = result.stdout + result.stderr

    def count(name: str) -> int:
        match = re.search(rf"^# {name} (\d+)$", result.stdout, re.MULTILINE)
        assert match is not None, f"no '# {name}' line in the TAP output:\n{output}"
        return int(match.group(1))

    summary = TapSummary(count("pass"), count("fail"), count("skipped"), count("todo"), output)
    assert result.returncode == 0 or summary.failed > 0, output
    return summary


def declared_tests(files: list[Path]) -> int:
    """How many top-level `test(...)` calls the files hold: all of them must run."""
    return sum(len(re.findall(r"^test\(", f.read_text(), re.MULTILINE)) for f in files)


def test_request_module_logic_under_node():
    files = [NODE_TESTS / "predict-client.test.js"]
    summary = run_node_tests(files)
    assert (summary.failed, summary.skipped, summary.todo) == (0, 0, 0), summary.output
    assert summary.passed == declared_tests(files) >= 10, summary.output


@pytest.mark.slow
def test_miniprogram_against_the_real_server(demo_server, digit_files):
    files = [NODE_TESTS / "server.test.js"]
    summary = run_node_tests(files, {"PREDICT_URL": demo_server.url,
                                     "DIGITS_DIR": str(digit_files.directory)})
    assert (summary.failed, summary.skipped, summary.todo) == (0, 0, 0), summary.output
    assert summary.passed == declared_tests(files) >= 10, summary.output


@pytest.mark.slow
def test_page_rendered_by_miniprogram_simulate(demo_server, digit_files):
    """pages/index rendered and tapped with WeChat's own test tooling, against the real server.

    Real: WeChat's `miniprogram-simulate` (the page's WXML compiled by the official `wcc`
    from miniprogram-compiler, rendered by j-component over jsdom, its tap and change events,
    the page's own setData), the page's code and request module, a 2D canvas (Skia, from
    @napi-rs/canvas) that shrinks the photo and encodes the PNG that is sent, and the
    function server on loopback. Stand-ins, for what needs a phone (test/simulate-page.js):
    `Page` registered as the equivalent `Component`, wx.chooseMedia handing back a file from
    disk, the canvas's native node, and wx.request / wx.uploadFile over Node's http
    (test/wx-node.js). The page must show exactly what the server answers for the file it
    sent. The container mode's page test is in test_miniprogram_through_wechat_cloud_run, the
    mask drawing in test_miniprogram_decodes_masks_as_the_function_does.
    """
    simulate()
    files = [NODE_TESTS / "page.test.js"]
    summary = run_node_tests(files, {"PREDICT_URL": demo_server.url,
                                     "DIGITS_DIR": str(digit_files.directory)})
    assert (summary.failed, summary.skipped, summary.todo) == (0, 0, 0), summary.output
    assert summary.passed == declared_tests(files) >= 5, summary.output


@pytest.mark.slow
def test_miniprogram_through_wechat_cloud_run(demo_model, digit_files, digits, tmp_path):
    """The container mode: callContainer through the gateway stand-in to the real function,
    photos over 100 KB by cloud file id through the open-API stand-in (see container.test.js
    and tests/clients/wechat_openapi.py), and the page rendered by miniprogram-simulate in
    that mode showing what the function answered."""
    simulate()
    from PIL import Image

    from tests.clients.wechat_openapi import WechatOpenApi
    from tests.conftest import start_server, stop_server

    six = digits.x_test[int(np.flatnonzero(digits.y_test == 6)[0])]
    big = np.asarray(Image.fromarray(six).resize((700, 700), Image.Resampling.BICUBIC), np.int16)
    noise = np.random.default_rng(6).integers(-12, 13, big.shape)
    photo = tmp_path / "tmp_photo.jpg"
    Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8)).save(photo, quality=95)
    api = WechatOpenApi(require_token=False).start()
    server = start_server(tmp_path, {"MODEL_URI": str(demo_model.served), "LOG_FORMAT": "text",
                                     "TRUST_WECHAT_CLOUDRUN": "true", "CLOUD_ENV": api.env,
                                     "WECHAT_API_URL": api.url})
    try:
        files = [NODE_TESTS / "container.test.js"]
        summary = run_node_tests(files, {"CONTAINER_URL": server.url, "OPENAPI_URL": api.url,
                                         "CLOUD_ENV": api.env,
                                         "DIGITS_DIR": str(digit_files.directory),
                                         "PHOTO_FILE": str(photo)})
    finally:
        stop_server(server)
        api.stop()
    assert (summary.failed, summary.skipped, summary.todo) == (0, 0, 0), summary.output
    assert summary.passed == declared_tests(files) >= 6, summary.output
    resolved = [c for c in api.calls if c.path == "/tcb/batchdownloadfile"]
    assert len(resolved) == 2  # the uploaded photo, and the missing file


def typescript() -> Path:
    """The sample's own tsc (``npm ci`` in examples/miniprogram, as `make test` runs it)."""
    tsc = MINIPROGRAM / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.skip("examples/miniprogram/node_modules is missing: run `make node-deps` "
                    "(npm ci) for TypeScript and miniprogram-api-typings")
    return tsc


def simulate() -> Path:
    """miniprogram-simulate, installed by ``npm ci`` in examples/miniprogram (make node-deps)."""
    path = MINIPROGRAM / "node_modules" / "miniprogram-simulate"
    if not path.is_dir():
        pytest.skip("examples/miniprogram/node_modules is missing: run `make node-deps` "
                    "(npm ci) for miniprogram-simulate")
    return path


def test_sample_type_checks_against_wechat_typings():
    result = subprocess.run([str(typescript()), "-p", "jsconfig.json"], cwd=MINIPROGRAM,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("wrong, message", [
    ("wx.compressImage({", "Property 'compressImag' does not exist on type 'Wx'"),
    ("          quality,\n", "is not assignable to type 'number'"),
])
def test_type_check_catches_a_misspelt_wx_api_or_a_wrong_option(tmp_path, wrong, message):
    """The check is real: the request module with a wx API misspelt, or an option of the
    wrong type (wx.compressImage's quality as text), fails."""
    source = (MINIPROGRAM / "utils" / "predict-client.js").read_text()
    if wrong.startswith("wx."):
        broken = source.replace(wrong, "wx.compressImag({", 1)
    else:
        broken = source.replace("          quality,\n", "          quality: 'high',\n", 1)
    assert broken != source
    (tmp_path / "predict-client.js").write_text(broken)
    config = json.loads((MINIPROGRAM / "jsconfig.json").read_text())
    config["compilerOptions"]["typeRoots"] = [str(MINIPROGRAM / "node_modules")]
    config["include"] = ["predict-client.js"]
    (tmp_path / "jsconfig.json").write_text(json.dumps(config))
    result = subprocess.run([str(typescript()), "-p", "jsconfig.json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout


def test_node_tests_skip_with_a_reason_without_a_server():
    """Run by hand without the env vars, the server tests say why they did not run."""
    files = [NODE_TESTS / "server.test.js"]
    env = {k: v for k, v in os.environ.items() if k not in ("PREDICT_URL", "DIGITS_DIR")}
    result = subprocess.run([node(), "--test", "--test-reporter=tap", str(files[0])],
                            cwd=MINIPROGRAM, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    reason = "PREDICT_URL and DIGITS_DIR are not set (tests/clients/test_miniprogram.py sets them)"
    assert result.stdout.count(f"# SKIP {reason}") == declared_tests(files)


def test_request_module_encoding_has_no_wx_call():
    """`wx` appears only inside fromWx, the transport; everything else runs under Node."""
    source = (MINIPROGRAM / "utils" / "predict-client.js").read_text()
    start = source.index("function fromWx(wx) {")
    end = source.index("\n}\n", start)
    outside = source[:start] + source[end:]
    code = "\n".join(line for line in outside.splitlines()
                     if not line.lstrip().startswith(("*", "/*", "//")))
    assert re.search(r"\bwx\.", code) is None
    assert "module.exports" in source and "import " not in code  # CommonJS for both runtimes


def test_miniprogram_project_is_complete():
    app = json.loads((MINIPROGRAM / "app.json").read_text())
    assert app["pages"] == ["pages/index/index"]
    for page in app["pages"]:
        for ext in (".js", ".wxml", ".wxss", ".json"):
            assert (MINIPROGRAM / f"{page}{ext}").is_file(), f"{page}{ext}"
        json.loads((MINIPROGRAM / f"{page}.json").read_text())
    assert (MINIPROGRAM / app["sitemapLocation"]).is_file()
    json.loads((MINIPROGRAM / app["sitemapLocation"]).read_text())
    project = json.loads((MINIPROGRAM / "project.config.json").read_text())
    assert project["compileType"] == "miniprogram"
    assert project["setting"]["urlCheck"] is True  # legal domains are checked by default
    # The Node tests must not be uploaded as part of the mini-program package.
    assert {"type": "folder", "value": "test"} in project["packOptions"]["ignore"]
    wxml = (MINIPROGRAM / "pages" / "index" / "index.wxml").read_text()
    page_js = (MINIPROGRAM / "pages" / "index" / "index.js").read_text()
    handlers = re.findall(r'bind\w+="(\w+)"', wxml)
    assert handlers == ["onSendAsChange", "onChoose"]
    for handler in handlers:
        assert re.search(rf"^  (async )?{handler}\(", page_js, re.MULTILINE), handler
    for canvas in ("result", "shrink"):
        assert f'<canvas type="2d" id="{canvas}"' in wxml


@pytest.mark.slow
def test_miniprogram_decodes_masks_as_the_function_does(segmentation_server, scene_files,
                                                        tmp_path):
    """Real replies of the segmentation demo, decoded by the request module under Node, give
    exactly the masks the function's own decoder gives, and those match the drawn shapes; the
    page rendered by miniprogram-simulate tints them into the photo inside the answer's boxes
    and outlines each box on its (real, Skia) result canvas."""
    simulate()
    from bench.maskdecode import decode_mask

    out = tmp_path / "decoded.json"
    files = [NODE_TESTS / "segmentation.test.js"]
    summary = run_node_tests(files, {"SEGMENT_URL": segmentation_server.url + "/predict",
                                     "SCENE_FILE": str(scene_files.jpeg),
                                     "SCENE_PNG": str(scene_files.png),
                                     "MASKS_OUT": str(out)})
    assert (summary.failed, summary.skipped, summary.todo) == (0, 0, 0), summary.output
    assert summary.passed == declared_tests(files), summary.output

    scene = scene_files.scene
    height, width = scene.image.shape[:2]
    truths = [scene.full_mask(i) for i in range(len(scene.shapes))]
    decoded_all = json.loads(out.read_text())
    assert sorted(decoded_all) == ["float", "polygon", "rle"]
    for fmt, result in decoded_all.items():
        prediction = result["prediction"]
        assert (prediction["width"], prediction["height"]) == (width, height)
        assert len(result["decoded"]) == len(prediction["instances"]) == len(scene.shapes)
        matched = set()
        for instance, packed in zip(prediction["instances"], result["decoded"], strict=True):
            bits = np.unpackbits(np.frombuffer(base64.b64decode(packed), np.uint8))
            ours = bits[:height * width].reshape(height, width).astype(bool)
            theirs = decode_mask(instance["mask"], fmt, instance["box"], height, width)
            assert np.array_equal(ours, theirs), (fmt, instance["label"],
                                                  int((ours != theirs).sum()))
            ious = [(ours & t).sum() / (ours | t).sum() for t in truths]
            best = int(np.argmax(ious))
            assert ious[best] > 0.85, (fmt, instance["label"], ious[best])
            assert instance["label"] == scene.shapes[best].kind
            matched.add(best)
        assert matched == set(range(len(scene.shapes)))
