"""functions.feed and functions.maskrcnn without TensorFlow: quantized pixels, where the
image lands in the model's input, and Mask R-CNN's image meta and anchors against
matterport's own code."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from functions import pixels as preprocess
from functions.errors import InvalidImage, ServiceError
from functions.feed import image_geometry, model_inputs
from functions.maskrcnn import image_meta, pyramid_anchors
from functions.quantization import quantize
from functions.request.images import ImageInput
from modelmeta import ImageSpec, InputSpec, ModelMetadata, Normalization, OutputSpec, Quantization
from modelprep import segmentation
from tests.conftest import encode


def matterport_pyramid_anchors(image_shape):
    """mrcnn.utils.generate_pyramid_anchors with Config's defaults, then norm_boxes."""
    scales, ratios = (32, 64, 128, 256, 512), [0.5, 1, 2]
    strides, anchor_stride = [4, 8, 16, 32, 64], 1
    shapes = np.array([[int(math.ceil(image_shape[0] / s)), int(math.ceil(image_shape[1] / s))]
                       for s in strides])

    def generate_anchors(scales, ratios, shape, feature_stride, anchor_stride):
        scales, ratios = np.meshgrid(np.array(scales), np.array(ratios))
        scales, ratios = scales.flatten(), ratios.flatten()
        heights = scales / np.sqrt(ratios)
        widths = scales * np.sqrt(ratios)
        shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
        shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
        shifts_x, shifts_y = np.meshgrid(shifts_x, shifts_y)
        box_widths, box_centers_x = np.meshgrid(widths, shifts_x)
        box_heights, box_centers_y = np.meshgrid(heights, shifts_y)
        box_centers = np.stack([box_centers_y, box_centers_x], axis=2).reshape([-1, 2])
        box_sizes = np.stack([box_heights, box_widths], axis=2).reshape([-1, 2])
        return np.concatenate([box_centers - 0.5 * box_sizes,
                               box_centers + 0.5 * box_sizes], axis=1)

    anchors = np.concatenate([generate_anchors(scales[i], ratios, shapes[i], strides[i],
                                               anchor_stride) for i in range(len(scales))])
    h, w = image_shape
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    return np.divide(anchors - np.array([0, 0, 1, 1]), scale).astype(np.float32)


def image(height: int, width: int, data: bytes = b"", where: str = "image") -> ImageInput:
    return ImageInput(data=data, format="png", width=width, height=height, where=where)


@pytest.mark.parametrize("size", [(512, 512), (1024, 1024), (640, 448)])
def test_anchors_are_matterports(size):
    ours = pyramid_anchors(*size)
    theirs = matterport_pyramid_anchors(size)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert np.allclose(ours, theirs, atol=1e-6)


def test_anchor_counts_agree_with_the_demo_model():
    assert len(pyramid_anchors(512, 512)) == segmentation.anchor_count() == 65472
    assert len(pyramid_anchors(1024, 1024)) == segmentation.anchor_count(1024, 1024) == 261888


@pytest.mark.parametrize("mode", ["pad", "stretch", "crop"])
@pytest.mark.parametrize("size", [(480, 640), (640, 480), (1024, 1024), (100, 37), (512, 512),
                                  (513, 1000), (60, 500)])
def test_the_window_is_where_preprocess_puts_the_image(mode, size):
    spec = ImageSpec(512, 512, 3, Normalization("raw"), resize=mode)
    g = image_geometry(image(*size), spec)
    assert (g.height, g.width, g.molded_height, g.molded_width) == (*size, 512, 512)
    white = np.full((*size, 3), 255.0, np.float32)
    placed = preprocess.resize(white, spec)[..., 0] > 0
    ys, xs = np.nonzero(placed)
    seen = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    y1, x1, y2, x2 = g.window
    assert seen == (max(y1, 0), max(x1, 0), min(y2, 512), min(x2, 512))
    if mode != "stretch":
        scale = (min if mode == "pad" else max)(512 / size[0], 512 / size[1])
        assert abs((y2 - y1) - max(size[0] * scale, 1)) <= 0.5
        assert abs((x2 - x1) - max(size[1] * scale, 1)) <= 0.5
        inside = y1 >= 0 and x1 >= 0 and y2 <= 512 and x2 <= 512
        covers = y1 <= 0 and x1 <= 0 and y2 >= 512 and x2 >= 512
        assert inside if mode == "pad" else covers


def test_int8_with_zero_point_carries_every_pixel_exactly():
    quant = segmentation.INPUT_QUANTIZATION
    pixels = np.arange(256, dtype=np.float32)
    q = quantize(pixels, quant)
    assert q.dtype == np.int8 and q.tolist() == list(range(-128, 128))
    assert ((q.astype(np.float32) - quant.zero_point) * quant.scale).tolist() == pixels.tolist()
    naive = (pixels - 123.7).astype(np.int32).astype(np.int8)  # (image - MEAN).astype(int8)
    assert naive[255] == -125  # 131.3 wrapped


def test_quantize_clips_instead_of_wrapping():
    quant = Quantization("uint8", 1 / 255, 0)
    assert quantize(np.array([-0.2, 0.0, 0.5, 1.0, 1.3]), quant).tolist() == [0, 0, 128, 255,
                                                                              255]
    quant8 = Quantization("int8", 0.5, 10)
    assert quantize(np.array([-100.0, 0.0, 100.0]), quant8).tolist() == [-128, 10, 127]


def test_image_meta_is_matterports_layout():
    spec = ImageSpec(512, 512, 3, Normalization("raw"), resize="pad")
    geometries = [image_geometry(image(480, 640), spec), image_geometry(image(1024, 512), spec)]
    meta = image_meta(geometries, 3, 4)
    assert meta.dtype == np.float32 and meta.shape == (2, 16)
    assert meta[0].tolist() == [0, 480, 640, 3, 512, 512, 3, 64, 0, 448, 512, 0.800000011920929,
                                1, 1, 1, 1]
    assert meta[1].tolist() == [1, 1024, 512, 3, 512, 512, 3, 0, 128, 512, 384, 0.5, 1, 1, 1, 1]


def test_segmentation_inputs_are_built_from_the_images(tmp_path):
    metadata = segmentation.served_metadata()
    scene_a = segmentation.random_scene(0, 480, 640)
    scene_b = segmentation.random_scene(1, 300, 200)
    images = [image(480, 640, encode(scene_a.image), "images[0]"),
              image(300, 200, encode(scene_b.image), "images[1]")]
    inputs = model_inputs(metadata, images)
    assert set(inputs) == {"input_image", "input_image_meta", "input_anchors"}
    pixels = inputs["input_image"]
    assert pixels.dtype == np.int8 and pixels.shape == (2, 512, 512, 3)
    spec = metadata.input("input_image").image
    for i, scene in enumerate((scene_a, scene_b)):
        expected = preprocess.resize(scene.image.astype(np.float32), spec)
        assert np.array_equal(pixels[i].astype(np.int16) + 128, np.rint(expected))
    assert np.all(pixels[0, :64] == -128) and np.all(pixels[0, 448:] == -128)  # black padding
    assert inputs["input_image_meta"].shape == (2, 16)
    assert inputs["input_image_meta"][1, 7:11].tolist() == [0, 85, 512, 426]
    anchors = inputs["input_anchors"]
    assert anchors.shape == (2, 65472, 4) and anchors.dtype == np.float32
    assert np.array_equal(anchors[1], pyramid_anchors(512, 512))


def test_models_that_decode_in_the_graph_get_the_bytes():
    spec = ImageSpec(28, 28, 1)
    metadata = ModelMetadata("digits", (InputSpec("image_bytes", "image_bytes", "string", (-1,),
                                                  image=spec),),
                             (OutputSpec("scores", "probabilities", "float32", (-1, 10)),))
    inputs = model_inputs(metadata, [image(28, 28, b"\x89PNG-a"), image(28, 28, b"\xff\xd8b")])
    assert list(inputs) == ["image_bytes"]
    assert inputs["image_bytes"].dtype == object
    assert inputs["image_bytes"].tolist() == [b"\x89PNG-a", b"\xff\xd8b"]


def test_a_corrupt_image_is_named():
    metadata = segmentation.served_metadata()
    good = encode(segmentation.random_scene(2, 64, 64).image)
    images = [image(64, 64, good, "images[0]"), image(64, 64, good[:len(good) // 2],
                                                       "images[1]")]
    with pytest.raises(InvalidImage) as info:
        model_inputs(metadata, images)
    assert info.value.message.startswith("images[1]: ")
    assert "corrupt or truncated" in info.value.message


def test_inputs_the_function_cannot_fill_are_a_plain_server_error():
    metadata = segmentation.served_metadata()
    png = [image(64, 64, encode(segmentation.random_scene(3, 64, 64).image))]
    odd = replace(metadata, inputs=(*metadata.inputs,
                                    InputSpec("input_gt_boxes", "tensor", "float32", (-1, 4))))
    with pytest.raises(ServiceError) as info:
        model_inputs(odd, png)
    assert info.value.status == 500
    assert "'input_gt_boxes' (a tensor) that the function cannot fill" in info.value.message
    wrong = replace(metadata, inputs=(metadata.inputs[0], metadata.inputs[1],
                                      InputSpec("input_anchors", "tensor", "float32",
                                                (-1, 1000, 4))))
    with pytest.raises(ServiceError, match=r"\[batch, 65472, 4\] for 512x512"):
        model_inputs(wrong, png)
