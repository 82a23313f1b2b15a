"""The request bodies the bench sends: one real photo in every shape a client uses.

The photo is scikit-learn's bundled ``china.jpg`` (427x640, ships inside the
wheel, so nothing is downloaded), resized with Pillow's bilinear filter and
re-encoded as JPEG at quality 80, the default of ``wx.compressImage``.

The four shapes of item 1 of the table:

* **float JSON**, what a naive client sends: the model's input tensor as a
  nested JSON array in TF Serving's row format, ``{"instances": [[[[r, g, b],
  ...]]]}``, every pixel scaled to [-1, 1] (MobileNetV2's and Inception's
  input) and written as ``json.dumps`` and JavaScript's ``JSON.stringify``
  both write a double: its shortest round-trip form.
* **base64 JSON**, what ``wx.request`` sends us: ``{"image": "<standard base64>"}``.
* **multipart**, what ``wx.uploadFile`` sends: the file under the field ``file``
  named ``tmp.jpg``, encoded by urllib3 (the encoder `requests` uses).
* **raw**, the file itself as the body (``Content-Type: image/jpeg``).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PHOTO = "china.jpg"
JPEG_QUALITY = 80
"""``wx.compressImage``'s default quality; the byte counts move with it (see the README)."""
NAIVE_NORMALIZATION = "symmetric"


@dataclass(frozen=True)
class Payload:
    """One request body, exactly as it goes on the wire after the headers."""

    name: str
    body: bytes
    content_type: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type}


def sample_photo_path(name: str = PHOTO) -> Path:
    """Where scikit-learn keeps its sample photo, found without importing scikit-learn
    (seconds of imports); the pixels are those of ``load_sample_image(name)``."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-learn is not installed; it ships the sample photo")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "images" / name
    if not path.is_file():
        raise FileNotFoundError(f"scikit-learn has no sample image {path}")
    return path


def photo_pixels(size: tuple[int, int], name: str = PHOTO) -> np.ndarray:
    """The sample photo resized to ``(height, width)``: uint8 ``[h, w, 3]``."""
    from PIL import Image

    height, width = size
    with Image.open(sample_photo_path(name)) as photo:
        image = photo.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def encode_jpeg(pixels: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def normalized(pixels: np.ndarray, mode: str) -> np.ndarray:
    """0..255 pixels to model values as `modelmeta` defines the modes, in float64."""
    values = pixels.astype(np.float64)
    if mode == "unit":
        return values / 255.0
    if mode == "symmetric":
        return values / 127.5 - 1.0
    if mode == "raw":
        return values
    raise ValueError(f"normalization must be unit, symmetric or raw, got {mode!r}")


def float_json(pixels: np.ndarray, mode: str = NAIVE_NORMALIZATION) -> Payload:
    """The naive client's body: the input tensor as nested JSON floats, TF Serving rows."""
    tensor = normalized(pixels, mode)
    if tensor.ndim == 2:
        tensor = tensor[..., None]
    body = json.dumps({"instances": [tensor.tolist()]}, separators=(",", ":"))
    return Payload("float JSON", body.encode("ascii"), "application/json")


def base64_json(data: bytes) -> Payload:
    body = json.dumps({"image": base64.b64encode(data).decode("ascii")}, separators=(",", ":"))
    return Payload("base64 JSON", body.encode("ascii"), "application/json")


def multipart(data: bytes, field: str = "file", filename: str = "tmp.jpg",
              part_type: str = "image/jpeg") -> Payload:
    from urllib3 import encode_multipart_formdata

    body, content_type = encode_multipart_formdata({field: (filename, data, part_type)})
    return Payload("multipart", body, content_type)


def raw(data: bytes, content_type: str = "image/jpeg") -> Payload:
    return Payload("raw", data, content_type)


def all_shapes(pixels: np.ndarray, data: bytes) -> tuple[Payload, ...]:
    """The four bodies of the bytes row, naive first."""
    return (float_json(pixels), base64_json(data), multipart(data), raw(data))
