"""The model's inputs, built from the client's images as the metadata describes them.

Most prepared models take the encoded image and decode it in their own graph; they get
the bytes. A model whose image input is ``quantized_pixels`` (a Mask R-CNN exported to
take int8 pixels, say) gets them decoded, resized and normalised here exactly as the
wrapped graph would (`functions.pixels`), then quantized with the input's
`modelmeta.Quantization`: ``q = clip(round(value / scale) + zero_point)``, clipped,
never wrapped.

Such models often take more than the image: Mask R-CNN's image meta and anchors are
filled by name (`functions.maskrcnn`), since the metadata calls them plain tensors.

Any other tensor input is a model the function cannot feed, said plainly (500). The
same `Geometry` that places the image in the model's input is what
`functions.answers.masks` needs to put the answers back on the client's image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from functions.answers.masks import Geometry
from functions.errors import InvalidImage, ServiceError
from functions.maskrcnn import ANCHORS, IMAGE_META, META_FIXED, image_meta, pyramid_anchors
from functions.quantization import quantize
from functions.request.images import ImageInput
from modelmeta import ImageSpec, InputSpec, ModelMetadata


def model_inputs(metadata: ModelMetadata, images: Sequence[ImageInput]) -> dict[str, np.ndarray]:
    """Every input of the signature for a batch of images."""
    image_spec = metadata.image_input
    if image_spec is None or image_spec.image is None:
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
    the window matches the pixels `functions.pixels.resize` and the wrapped graph
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


def _image_tensor(spec: InputSpec, images: Sequence[ImageInput]) -> np.ndarray:
    if spec.kind != "quantized_pixels":
        # Decoded by the graph (or by a backend that repeats the graph): the bytes as sent.
        return np.array([image.data for image in images], dtype=object)
    from functions import pixels

    image, quantization = spec.image, spec.quantization
    if image is None or quantization is None:  # modelmeta requires both for this kind
        raise ServiceError(f"the served model's {spec.name!r} lacks its image or quantization")
    out = np.empty((len(images), image.height, image.width, image.channels),
                   quantization.dtype)
    for i, item in enumerate(images):
        try:
            decoded = pixels.decode_image(item.data, image.channels)
        except InvalidImage as exc:
            raise InvalidImage(f"{item.where}: {exc.message}") from exc
        resized = pixels.resize(decoded, image)
        out[i] = quantize(pixels.normalize(resized, image.normalization), quantization)
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
