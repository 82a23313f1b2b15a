"""The served model as every protocol describes it, and the inputs they all feed it.

A protocol's client sees one signature: the image input takes encoded images (a string
tensor: JPEG, PNG, GIF or BMP files, whatever kind the model itself is fed, since the
function decodes, resizes or quantizes for it), the model's other tensor inputs take the
client's numbers, and the inputs the function fills itself (Mask R-CNN's image meta and
anchors) are not shown. Outputs are the model's, by their metadata names.

A model directory whose name is not a version number is served as version 1, the
number TF Serving and the Open Inference Protocol need; MODEL_VERSION overrides it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from functions import pipeline
from functions.errors import BadRequest, MissingImage
from functions.maskrcnn import ANCHORS, IMAGE_META
from functions.protocols import Context
from functions.request.images import ImageInput
from modelmeta import InputSpec, ModelMetadata

FILLED_BY_FUNCTION = (IMAGE_META, ANCHORS)
"""Tensor inputs the function builds from the image (`functions.feed`)."""
IMAGE_DTYPE = "string"


@dataclass(frozen=True)
class Served:
    name: str
    version: int
    label: str | None
    """MODEL_VERSION_LABEL, the label TF Serving clients may name."""
    metadata: ModelMetadata

    @property
    def image_input(self) -> InputSpec | None:
        return self.metadata.image_input

    def client_inputs(self) -> tuple[InputSpec, ...]:
        """The inputs a client gives: the image input, and tensors the function cannot fill."""
        image = self.image_input
        return tuple(spec for spec in self.metadata.inputs
                     if spec is image or spec.name not in FILLED_BY_FUNCTION)

    def input_dtype(self, spec: InputSpec) -> str:
        return IMAGE_DTYPE if spec is self.image_input else spec.dtype

    def input_shape(self, spec: InputSpec) -> tuple[int, ...]:
        return (-1,) if spec is self.image_input else spec.shape


def served(ctx: Context) -> Served:
    """The loaded model (waiting for a load under way, as a predict request does)."""
    metadata = ctx.model.get().metadata
    info = pipeline.model_info(ctx.settings, metadata)
    return Served(name=info["name"], version=_number(info.get("version")),
                  label=ctx.settings.model_version_label, metadata=metadata)


def configured_version(ctx: Context) -> int:
    """The served version from the settings alone (MODEL_VERSION, MODEL_URI), without
    waiting for the model: what a status check says while it loads."""
    last = ctx.settings.model_uri.rstrip("/").rsplit("/", 1)[-1]
    return _number(ctx.settings.model_version or last)


def _number(version: str | None) -> int:
    return int(version) if version and version.isdigit() else 1


def served_name(ctx: Context) -> str:
    """The model's name without waiting for it to load, when the settings name it."""
    if ctx.settings.model_name:
        return ctx.settings.model_name
    return served(ctx).name


@dataclass(frozen=True)
class Feed:
    """A request's inputs, checked: the images and the client's tensors, one batch."""

    images: tuple[ImageInput, ...]
    tensors: dict[str, np.ndarray]

    @property
    def batch(self) -> int:
        if self.images:
            return len(self.images)
        return len(next(iter(self.tensors.values()))) if self.tensors else 0


def feed(ctx: Context, model: Served, pending: Sequence[tuple[str, bytes | str]] | None,
         tensors: dict[str, np.ndarray]) -> Feed:
    """Check the images (``(where, bytes or base64 text)``) and tensors one request gave."""
    image = model.image_input
    if image is not None and pending is None:
        raise MissingImage(f"the request has no input {image.name!r}: send the encoded "
                           "images there")
    images = pipeline.checked_images(pending or (), ctx.settings)
    if image is not None and not images:
        raise MissingImage(f"the input {image.name!r} holds no image")
    for spec in model.client_inputs():
        if spec is image:
            continue
        value = tensors.get(spec.name)
        if value is None:
            raise BadRequest(f"the request has no input {spec.name!r}")
        _check_shape(spec, value)
    unknown = sorted(set(tensors) - {spec.name for spec in model.client_inputs()})
    if unknown:
        raise BadRequest(f"the model has no input {unknown[0]!r}; its inputs are "
                         f"{[spec.name for spec in model.client_inputs()]}")
    batches = {len(value) for value in tensors.values()} | ({len(images)} if images else set())
    if len(batches) > 1:
        raise BadRequest(f"the inputs disagree on the batch size: {sorted(batches)}")
    if batches == {0}:
        raise BadRequest("the request's batch is empty")
    return Feed(images, tensors)


def _check_shape(spec: InputSpec, value: np.ndarray) -> None:
    if value.ndim != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, value.shape, strict=True)):
        raise BadRequest(f"the input {spec.name!r} has shape {list(value.shape)}; the model "
                         f"takes {list(spec.shape)} (-1: any size)")


def output_dtype(array: np.ndarray) -> str:
    """An output's dtype by `modelmeta`'s names (``string`` for bytes)."""
    return "string" if array.dtype.kind in "OSU" else array.dtype.name


def outputs(model: Served, inference: pipeline.Inference,
            names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The model's outputs by name, in the metadata's order (or ``names``' order)."""
    wanted = names if names is not None else [spec.name for spec in model.metadata.outputs]
    return {name: inference.outputs[name] for name in wanted}
