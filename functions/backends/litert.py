"""Run a prepared model's LiteRT flavour: no TensorFlow, a zip-sized function.

TensorFlow takes seconds to import and over a gigabyte to install; the LiteRT
runtime (``ai-edge-litert``) imports in a tenth of a second. A flavour comes in one
of two forms (`functions.backends.litert_files` finds and checks them):

* **pixels-fed** (`LiteRTModel`): the *original* model, without the wrapped graph's
  image layers, so this backend decodes, resizes and normalises the client's images
  itself with `functions.pixels` (the graph's steps, repeated in Pillow and numpy),
  quantizes them for an int8 flavour, and dequantizes int8 outputs. It answers with
  the source model's output names in float32, as the in-process backend does, so
  `functions.answers` treats both alike.
* **tensor-fed** (`LiteRTTensorModel`): the prepared SavedModel itself, converted,
  for models whose inputs are all numbers (Mask R-CNN: int8 pixels, image meta,
  anchors). Its metadata declares the SavedModel's inputs and outputs, so the
  function's feed (`functions.feed`) builds the same tensors as for the SavedModel,
  this backend passes them to the interpreter unchanged, and the answers (uint8
  masks included) are read as the in-process ones are.

One interpreter per process, reused by every request and guarded by a lock
(a LiteRT interpreter is not safe to call from two threads at once); decoding
happens outside the lock, so concurrent requests overlap there. Items of a
batch run one at a time at batch size 1, the size the interpreter was
allocated for, so no request pays for re-allocating tensors.

A flavour whose metadata says it missed its tolerance (``verified: false``, written
by ``modelprep litert``) is not served: the backend is not ready, with the reason,
unless ``LITERT_ALLOW_UNVERIFIED=true`` (then it logs a warning).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from functions import pixels
from functions.backends.litert_files import (
    check_verified,
    find_model,
    is_tensor_fed,
    load_metadata,
)
from functions.errors import ModelNotReady, ServiceError
from functions.quantization import dequantize, to_input_dtype
from modelmeta import InputSpec, ModelMetadata, OutputSpec

log = logging.getLogger(__name__)

IMAGE_INPUT = "image_bytes"
"""The name the function feeds encoded images under, as for a wrapped SavedModel."""


class LiteRTModel:
    """A pixels-fed ``.tflite`` model and its metadata: normalised pixels in, float
    outputs out."""

    def __init__(self, model_path: str | Path, metadata: ModelMetadata,
                 threads: int | None = None) -> None:
        self.metadata = metadata
        self.input: InputSpec = metadata.inputs[0]
        self._interpreter, inputs, outputs = _open(model_path, metadata.signature, threads)
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


class LiteRTTensorModel:
    """A tensor-fed ``.tflite`` model: the prepared SavedModel's own inputs in (quantized
    pixels, plain tensors), its own outputs out, dtypes and all.

    The interpreter is allocated for one item; an input whose metadata leaves a size
    open (``-1`` past the batch) is resized when a request brings another size, which
    re-allocates the interpreter's tensors once for that size.
    """

    def __init__(self, model_path: str | Path, metadata: ModelMetadata,
                 threads: int | None = None) -> None:
        self.metadata = metadata
        self._model_path = model_path
        self._interpreter, inputs, outputs = _open(model_path, metadata.signature, threads)
        self._input_index = {spec.name: _check_plain(model_path, spec, inputs)
                             for spec in metadata.inputs}
        self._output_index = {spec.name: _check_plain(model_path, spec, outputs)
                              for spec in metadata.outputs}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()
        known = {spec.name: (1, *spec.shape[1:]) for spec in metadata.inputs}
        if all(d > 0 for shape in known.values() for d in shape):
            with self._lock:
                self._allocate(known)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The SavedModel's inputs for a batch (the batch first) to its outputs per name."""
        feed = {spec.name: self._fed(spec, inputs) for spec in self.metadata.inputs}
        sizes = {len(value) for value in feed.values()}
        if len(sizes) != 1:
            raise ServiceError(f"the LiteRT model's inputs disagree on the batch size: "
                               f"{ {name: len(value) for name, value in feed.items()} }")
        (size,) = sizes
        rows: dict[str, list[np.ndarray]] = {name: [] for name in self._output_index}
        with self._lock:
            for i in range(size):
                items = {name: np.ascontiguousarray(value[i:i + 1])
                         for name, value in feed.items()}
                self._allocate({name: item.shape for name, item in items.items()})
                for name, item in items.items():
                    self._interpreter.set_tensor(self._input_index[name], item)
                try:
                    self._interpreter.invoke()
                except RuntimeError as exc:
                    log.error("LiteRT model %s failed: %s", self._model_path,
                              str(exc).strip()[:500])
                    raise ServiceError("the model failed on this request") from exc
                for name, index in self._output_index.items():
                    rows[name].append(self._interpreter.get_tensor(index))
        return {name: np.concatenate(values) for name, values in rows.items()}

    def _fed(self, spec: InputSpec, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if spec.name not in inputs:
            raise ServiceError(f"the LiteRT model takes {[s.name for s in self.metadata.inputs]}"
                               f", got {sorted(inputs)}")
        value = np.asarray(inputs[spec.name])
        if value.dtype != np.dtype(spec.dtype) or value.ndim != len(spec.shape) or any(
                want > 0 and got != want for got, want in zip(value.shape[1:], spec.shape[1:],
                                                             strict=True)):
            raise ServiceError(f"the LiteRT model's input {spec.name!r} takes {spec.dtype}"
                               f"{list(spec.shape)}, got {value.dtype.name}{list(value.shape)}")
        return value

    def _allocate(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Size the interpreter's inputs for one item of these shapes (under the lock)."""
        if shapes == self._shapes:
            return
        for name, shape in shapes.items():
            self._interpreter.resize_tensor_input(self._input_index[name], list(shape),
                                                  strict=False)
        self._interpreter.allocate_tensors()
        self._shapes = dict(shapes)


class LiteRTBackend:
    """The function's backend over a LiteRT flavour: fed encoded images like a wrapped
    model (pixels-fed), or the SavedModel's own tensors (tensor-fed)."""

    def __init__(self, model_uri: str | Path, flavour: str = "float",
                 allow_unverified: bool = False) -> None:
        files = find_model(model_uri, flavour)
        flavour_metadata = load_metadata(files.metadata)
        check_verified(flavour, files.model, flavour_metadata, allow_unverified)
        self.model: LiteRTModel | LiteRTTensorModel
        if is_tensor_fed(flavour_metadata):
            self.model = LiteRTTensorModel(files.model, flavour_metadata)
            self.metadata = flavour_metadata
        else:
            self.model = LiteRTModel(files.model, flavour_metadata)
            self.metadata = service_metadata(flavour_metadata)
        log.info("LiteRT %s model %s loaded", flavour, files.model)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if isinstance(self.model, LiteRTTensorModel):
            return self.model.run(inputs)
        try:
            encoded = [bytes(item) for item in inputs[IMAGE_INPUT]]
        except KeyError as exc:
            raise ServiceError(f"the LiteRT backend is fed {IMAGE_INPUT!r}, got "
                               f"{sorted(inputs)}") from exc
        return self.model.predict_images(encoded)


def _open(model_path: str | Path, signature: str,
          threads: int | None) -> tuple[Any, dict[str, dict], dict[str, dict]]:
    """The interpreter, and its signature's input and output details by name."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ModelNotReady("BACKEND=litert needs the ai-edge-litert package "
                            "(pip install ai-edge-litert)") from exc
    threads = threads or min(4, len(os.sched_getaffinity(0)))
    try:
        interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
        runner = interpreter.get_signature_runner(signature)
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        del runner  # the interpreter refuses to resize while anything holds a reference
    except (ValueError, RuntimeError) as exc:
        raise ModelNotReady(f"cannot load the LiteRT model {model_path}: "
                            f"{str(exc).strip().splitlines()[0][:300]}") from exc
    return interpreter, inputs, outputs


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


def _check_plain(model_path: str | Path, spec: InputSpec | OutputSpec,
                 details: dict[str, dict]) -> int:
    """The index of a tensor-fed flavour's tensor, once it has the metadata's dtype, a
    known rank and the metadata's fixed sizes. Its quantization, if the metadata gives
    one, happens inside the graph (as in the SavedModel), so the tensor itself has none."""
    if spec.name not in details:
        raise ModelNotReady(f"LiteRT model {model_path} has no tensor {spec.name!r} in its "
                            f"signature; it has {sorted(details)}")
    detail = details[spec.name]
    dtype = np.dtype(detail["dtype"]).name
    shape = tuple(int(d) for d in detail["shape_signature"])
    scale, _zero_point = detail["quantization"]
    fits = len(shape) == len(spec.shape) and all(
        a < 0 or b < 0 or a == b for a, b in zip(shape[1:], spec.shape[1:], strict=True))
    if dtype != spec.dtype or scale != 0.0 or not fits:
        quantized = f" (quantized, scale {scale})" if scale else ""
        raise ModelNotReady(f"LiteRT model {model_path}: tensor {spec.name!r} is {dtype}"
                            f"{list(shape)}{quantized} but its metadata says {spec.dtype}"
                            f"{list(spec.shape)}; export the flavour again")
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
