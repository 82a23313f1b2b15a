"""Run a prepared model's LiteRT flavour: no TensorFlow, a zip-sized function.

TensorFlow takes seconds to import and over a gigabyte to install; the LiteRT
runtime (``ai-edge-litert``) imports in a tenth of a second. The ``.tflite``
model is the *original* model, without the wrapped graph's image layers, so
this backend decodes, resizes and normalises the client's images itself with
`functions.pixels` (the graph's steps, repeated in Pillow and numpy),
quantizes them for an int8 flavour, and dequantizes int8 outputs. It answers
with the source model's output names in float32, as the in-process backend
does, so `functions.answers` treats both alike.

One interpreter per process, reused by every request and guarded by a lock
(a LiteRT interpreter is not safe to call from two threads at once); decoding
happens outside the lock, so concurrent requests overlap there. Items of a
batch run one at a time at batch size 1, the size the interpreter was
allocated for, so no request pays for re-allocating tensors.

A flavour whose metadata says it missed its tolerance against the original
(``verified: false``, written by ``modelprep litert``) is not served: the backend
is not ready, with the reason, unless ``LITERT_ALLOW_UNVERIFIED=true`` (then it
logs a warning).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from functions import pixels
from functions.errors import ModelNotReady, ServiceError
from functions.quantization import dequantize, to_input_dtype
from modelmeta import (
    LITERT_DIR,
    InputSpec,
    MetadataError,
    ModelMetadata,
    OutputSpec,
    litert_files,
)

log = logging.getLogger(__name__)

ALLOW_UNVERIFIED = "LITERT_ALLOW_UNVERIFIED"
"""Set to true to serve a flavour whose metadata says ``verified: false``."""

IMAGE_INPUT = "image_bytes"
"""The name the function feeds encoded images under, as for a wrapped SavedModel."""


@dataclass(frozen=True)
class LiteRTFiles:
    model: Path
    metadata: Path


def find_model(model_uri: str | Path, flavour: str) -> LiteRTFiles:
    """Where the flavour is, from MODEL_URI: a ``.tflite`` file, a directory holding
    ``model_<flavour>.tflite``, or a prepared model directory holding ``litert/``."""
    path = Path(model_uri)
    model_name, metadata_name = litert_files(flavour)
    if path.suffix == ".tflite":
        candidates = [path]
    else:
        candidates = [path / model_name, path / LITERT_DIR / model_name]
    for model in candidates:
        if model.is_file():
            metadata = model.with_name(metadata_name) if model.name == model_name \
                else model.with_suffix(".json")
            return LiteRTFiles(model, metadata)
    looked = " or ".join(str(c) for c in candidates)
    raise ModelNotReady(f"no LiteRT model at {looked}; export it with `modelprep litert "
                        "<prepared model dir>` and set MODEL_URI to the .tflite file or its "
                        "directory")


def load_metadata(path: Path) -> ModelMetadata:
    """The flavour's own metadata: its ``pixels`` input and its outputs, quantized or not."""
    try:
        metadata = ModelMetadata.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelNotReady(f"no metadata at {path} beside the LiteRT model; export it with "
                            "`modelprep litert`") from exc
    except MetadataError as exc:
        raise ModelNotReady(f"LiteRT metadata {path} is unusable: {exc}") from exc
    pixel_inputs = [spec for spec in metadata.inputs if spec.kind == "pixels"]
    if len(metadata.inputs) != 1 or not pixel_inputs:
        raise ModelNotReady(f"LiteRT metadata {path} must describe exactly one input of kind "
                            f"'pixels'; it has {[(s.name, s.kind) for s in metadata.inputs]}")
    return metadata


class LiteRTModel:
    """A ``.tflite`` model and its metadata: normalised pixels in, float outputs out."""

    def __init__(self, model_path: str | Path, metadata: ModelMetadata,
                 threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelNotReady("BACKEND=litert needs the ai-edge-litert package "
                                "(pip install ai-edge-litert)") from exc
        self.metadata = metadata
        self.input: InputSpec = metadata.inputs[0]
        threads = threads or min(4, len(os.sched_getaffinity(0)))
        try:
            self._interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
            runner = self._interpreter.get_signature_runner(metadata.signature)
            inputs, outputs = runner.get_input_details(), runner.get_output_details()
            del runner  # the interpreter refuses to resize while anything holds a reference
        except (ValueError, RuntimeError) as exc:
            raise ModelNotReady(f"cannot load the LiteRT model {model_path}: "
                                f"{str(exc).strip().splitlines()[0][:300]}") from exc
        self._input_index = _check_tensor(model_path, self.input, inputs)
        self._output_index = {spec.name: _check_tensor(model_path, spec, outputs)
                              for spec in metadata.outputs}
        self.item_shape = _item_shape(self.input)
        self._interpreter.resize_tensor_input(self._input_index, list(self.item_shape),
                                              strict=False)
        self._interpreter.allocate_tensors()
        self._lock = threading.Lock()

    def run(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Model input values (the batch first, any layout) to float outputs per name."""
        feed = to_input_dtype(values, self.input.quantization, self.input.dtype)
        rows: dict[str, list[np.ndarray]] = {name: [] for name in self._output_index}
        with self._lock:
            for item in feed:
                self._interpreter.set_tensor(self._input_index, item.reshape(self.item_shape))
                self._interpreter.invoke()
                for name, index in self._output_index.items():
                    rows[name].append(self._interpreter.get_tensor(index))
        return {spec.name: dequantize(np.concatenate(rows[spec.name]), spec.quantization)
                for spec in self.metadata.outputs}

    def predict_images(self, encoded: list[bytes]) -> dict[str, np.ndarray]:
        """Encoded images to outputs, preprocessed as the metadata says."""
        image = self.input.image
        assert image is not None  # load_metadata checked the input is "pixels"
        batch = pixels.image_batch(encoded, image)
        return self.run(batch.reshape(len(encoded), *self.item_shape[1:]))


class LiteRTBackend:
    """The function's backend over `LiteRTModel`, fed encoded images like a wrapped model."""

    def __init__(self, model_uri: str | Path, flavour: str = "float",
                 allow_unverified: bool = False) -> None:
        files = find_model(model_uri, flavour)
        flavour_metadata = load_metadata(files.metadata)
        check_verified(flavour, files.model, flavour_metadata, allow_unverified)
        self.model = LiteRTModel(files.model, flavour_metadata)
        self.metadata = service_metadata(flavour_metadata)
        log.info("LiteRT %s model %s loaded", flavour, files.model)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            encoded = [bytes(item) for item in inputs[IMAGE_INPUT]]
        except KeyError as exc:
            raise ServiceError(f"the LiteRT backend is fed {IMAGE_INPUT!r}, got "
                               f"{sorted(inputs)}") from exc
        return self.model.predict_images(encoded)


def check_verified(flavour: str, model: Path, metadata: ModelMetadata,
                   allow_unverified: bool) -> None:
    """Refuse a flavour whose metadata says it missed its tolerance against the original
    (``source.verified: false``, written by ``modelprep litert``): an int8 model
    calibrated on the wrong images answers confidently and wrongly. With
    `allow_unverified` it is served, with a warning in the log; a flavour exported
    before modelprep recorded the verdict is served with a warning too."""
    verified = metadata.source.get("verified")
    detail = metadata.source.get("verification") or "no detail recorded"
    if verified is True:
        return
    if verified is None:
        log.warning("LiteRT %s model %s carries no verification verdict (exported by an "
                    "older modelprep); `modelprep litert` checks it against the original",
                    flavour, model)
        return
    if not allow_unverified:
        raise ModelNotReady(f"the LiteRT {flavour} model {model} is not verified against the "
                            f"original model ({detail}); export it again with `modelprep "
                            f"litert` (for int8, --images DIR of representative photos), or "
                            f"set {ALLOW_UNVERIFIED}=true to serve it anyway")
    log.warning("serving the LiteRT %s model %s although it is not verified against the "
                "original (%s), because %s=true", flavour, model, detail, ALLOW_UNVERIFIED)


def service_metadata(flavour: ModelMetadata) -> ModelMetadata:
    """What the function sees: encoded images in, the source model's outputs in float32."""
    pixels = flavour.inputs[0]
    image_input = InputSpec(name=IMAGE_INPUT, kind="image_bytes", dtype="string", shape=(-1,),
                            image=pixels.image)
    outputs = tuple(
        OutputSpec(name=o.name, role=o.role, shape=o.shape,
                   dtype="float32" if o.quantization is not None else o.dtype)
        for o in flavour.outputs)
    return ModelMetadata(name=flavour.name, inputs=(image_input,), outputs=outputs,
                         signature=flavour.signature, labels=flavour.labels,
                         source=flavour.source)


def _check_tensor(model_path: str | Path, spec: InputSpec | OutputSpec,
                  details: dict[str, dict]) -> int:
    """The tensor's index, once its dtype and quantization match the metadata."""
    if spec.name not in details:
        raise ModelNotReady(f"LiteRT model {model_path} has no tensor {spec.name!r} in its "
                            f"signature; it has {sorted(details)}")
    detail = details[spec.name]
    dtype = np.dtype(detail["dtype"]).name
    scale, zero_point = detail["quantization"]
    q = spec.quantization
    want = spec.dtype if q is None else q.dtype
    matches = dtype == want and (
        (q is None and scale == 0.0)
        or (q is not None and np.isclose(scale, q.scale, rtol=1e-6) and zero_point == q.zero_point))
    if not matches:
        said = want if q is None else f"{want} (scale {q.scale}, zero point {q.zero_point})"
        raise ModelNotReady(f"LiteRT model {model_path}: tensor {spec.name!r} is {dtype} "
                            f"(scale {scale}, zero point {zero_point}) but its metadata says "
                            f"{said}; export the flavour again")
    return int(detail["index"])


def _item_shape(spec: InputSpec) -> tuple[int, ...]:
    """The input's shape for one item, unknown sizes filled in from its image spec."""
    image = spec.image
    assert image is not None
    rest = spec.shape[1:]
    if all(d > 0 for d in rest):
        return (1, *rest)
    known = {4: (image.height, image.width, image.channels), 3: (image.height, image.width),
             2: (image.height * image.width * image.channels,)}
    if len(spec.shape) not in known:
        raise ModelNotReady(f"LiteRT input {spec.name!r} has shape {list(spec.shape)}, which "
                            "is not an image batch")
    return (1, *known[len(spec.shape)])
