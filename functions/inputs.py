"""The model's inputs, built from the client's images as the metadata describes them.

Most prepared models take the encoded image and decode it in their own graph; they get
the bytes. A model whose image input is ``quantized_pixels`` (a Mask R-CNN exported to
take int8 pixels, say) gets them decoded, resized and normalised here exactly as the
wrapped graph would (`functions.preprocess`), then quantized with the input's
`modelmeta.Quantization`: ``q = clip(round(value / scale) + zero_point)``, clipped,
never wrapped.

Such models often take more than the image. Mask R-CNN's other inputs are filled by
name, since the metadata calls them plain tensors:

``input_image_meta`` ``[B, 12 + classes]``
    matterport's ``compose_image_meta``: image id, original shape (h, w, c), molded
    shape, window (y1, x1, y2, x2), scale, then 1 for every class (all active).
``input_anchors`` ``[B, A, 4]``
    matterport's ``generate_pyramid_anchors`` with its default configuration
    (scales 32-512, ratios 0.5/1/2, strides 4-64, anchor stride 1), normalised to the
    molded size; when the metadata fixes ``A``, it is checked.

Any other tensor input is a model the function cannot feed, said plainly (500). The
same `Geometry` that places the image in the model's input is what
`functions.masks` needs to put the answers back on the client's image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from functions.affine import quantize
from functions.decode import ImageInput
from functions.errors import InvalidImage, ServiceError
from functions.masks import Geometry
from modelmeta import ImageSpec, InputSpec, ModelMetadata

IMAGE_META = "input_image_meta"
ANCHORS = "input_anchors"
META_FIXED = 12
"""Values of the image meta before the per-class flags."""
ANCHOR_SCALES = (32, 64, 128, 256, 512)
ANCHOR_RATIOS = (0.5, 1.0, 2.0)
BACKBONE_STRIDES = (4, 8, 16, 32, 64)
ANCHOR_STRIDE = 1


def model_inputs(metadata: ModelMetadata, images: Sequence[ImageInput]) -> dict[str, np.ndarray]:
    """Every input of the signature for a batch of images."""
    image_spec = metadata.image_input
    if image_spec is None:
        raise ServiceError("the served model has no image input")
    inputs: dict[str, np.ndarray] = {}
    for spec in metadata.inputs:
        if spec is image_spec:
            inputs[spec.name] = _image_tensor(spec, images)
        elif spec.kind == "tensor":
            inputs[spec.name] = _extra_tensor(spec, image_spec.image, images)
        else:
            raise ServiceError(f"the served model has a second image input {spec.name!r}; "
                               "the function feeds one image input")
    return inputs


def image_geometry(image: ImageInput, spec: ImageSpec) -> Geometry:
    """Where the image lands in the model's input under the spec's resize mode.

    The scaled size is computed as the graph does it (float32, round half to even), so
    the window matches the pixels `functions.preprocess.resize` and the wrapped graph
    produce.
    """
    height, width = image.height, image.width
    if spec.resize == "stretch" or (height, width) == (spec.height, spec.width):
        window = (0.0, 0.0, float(spec.height), float(spec.width))
    else:
        ratio = (np.array([spec.height, spec.width], np.float32)
                 / np.array([height, width], np.float32))
        scale = ratio.min() if spec.resize == "pad" else ratio.max()
        size = np.maximum(np.rint(np.array([height, width], np.float32) * scale), 1)
        new_h, new_w = int(size[0]), int(size[1])
        if spec.resize == "pad":
            top, left = (spec.height - new_h) // 2, (spec.width - new_w) // 2
        else:  # crop: the scaled image overflows the frame, centred
            top, left = -((new_h - spec.height) // 2), -((new_w - spec.width) // 2)
        window = (float(top), float(left), float(top + new_h), float(left + new_w))
    return Geometry(height=height, width=width, molded_height=spec.height,
                    molded_width=spec.width, window=window)


def image_meta(geometries: Sequence[Geometry], channels: int, classes: int) -> np.ndarray:
    """matterport's ``compose_image_meta`` for each image, as float32 ``[B, 12 + classes]``."""
    rows = []
    for i, g in enumerate(geometries):
        y1, _x1, y2, _x2 = g.window
        scale = (y2 - y1) / g.height
        rows.append([i, g.height, g.width, channels, g.molded_height, g.molded_width,
                     channels, *g.window, scale, *([1] * classes)])
    return np.array(rows, np.float32).reshape(len(geometries), META_FIXED + classes)


def pyramid_anchors(height: int, width: int) -> np.ndarray:
    """matterport's pyramid anchors for a molded image, normalised: float32 ``[A, 4]``.

    One level per backbone stride, each the cells of a ``ceil(size / stride)`` feature
    map times the ratios, as (y1, x1, y2, x2); then ``norm_boxes``:
    ``(box - (0, 0, 1, 1)) / (h - 1, w - 1, h - 1, w - 1)``.
    """
    levels = []
    for scale, stride in zip(ANCHOR_SCALES, BACKBONE_STRIDES, strict=True):
        ratios = np.asarray(ANCHOR_RATIOS, np.float64)
        heights, widths = scale / np.sqrt(ratios), scale * np.sqrt(ratios)
        ys = np.arange(0, math.ceil(height / stride), ANCHOR_STRIDE) * stride
        xs = np.arange(0, math.ceil(width / stride), ANCHOR_STRIDE) * stride
        cy, cx = np.meshgrid(ys, xs, indexing="ij")
        centres = np.stack([cy.ravel(), cx.ravel()], axis=1)[:, None, :]
        sizes = np.stack([heights, widths], axis=1)[None, :, :]
        boxes = np.concatenate([centres - 0.5 * sizes, centres + 0.5 * sizes], axis=2)
        levels.append(boxes.reshape(-1, 4))
    anchors = np.concatenate(levels)
    scale = np.array([height - 1, width - 1, height - 1, width - 1], np.float64)
    return ((anchors - [0, 0, 1, 1]) / scale).astype(np.float32)


def _image_tensor(spec: InputSpec, images: Sequence[ImageInput]) -> np.ndarray:
    if spec.kind != "quantized_pixels":
        # Decoded by the graph (or by a backend that repeats the graph): the bytes as sent.
        return np.array([image.data for image in images], dtype=object)
    from functions import preprocess

    image = spec.image
    out = np.empty((len(images), image.height, image.width, image.channels),
                   spec.quantization.dtype)
    for i, item in enumerate(images):
        try:
            pixels = preprocess.decode_image(item.data, image.channels)
        except InvalidImage as exc:
            raise InvalidImage(f"{item.where}: {exc.message}") from exc
        resized = preprocess.resize(pixels, image)
        out[i] = quantize(preprocess.normalize(resized, image.normalization),
                          spec.quantization)
    return out


def _extra_tensor(spec: InputSpec, image: ImageSpec, images: Sequence[ImageInput]) -> np.ndarray:
    geometries = [image_geometry(item, image) for item in images]
    if spec.name == IMAGE_META:
        classes = spec.shape[-1] - META_FIXED if len(spec.shape) == 2 else -1
        if classes < 1:
            raise ServiceError(f"the served model's {IMAGE_META} has shape {list(spec.shape)}; "
                               f"the function builds [batch, {META_FIXED} + classes]")
        return image_meta(geometries, image.channels, classes)
    if spec.name == ANCHORS:
        anchors = pyramid_anchors(image.height, image.width)
        if len(spec.shape) != 3 or spec.shape[1] not in (-1, len(anchors)):
            raise ServiceError(f"the served model's {ANCHORS} has shape {list(spec.shape)}; "
                               f"the function builds matterport's default pyramid anchors, "
                               f"[batch, {len(anchors)}, 4] for "
                               f"{image.height}x{image.width}")
        return np.broadcast_to(anchors, (len(images), *anchors.shape))
    raise ServiceError(f"the served model has an input {spec.name!r} (a tensor) that the "
                       f"function cannot fill; it fills {IMAGE_META} and {ANCHORS}")
