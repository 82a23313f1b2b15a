"""What a source model says about its own preprocessing, read so that wrap can warn.

The commonest mistake in wrapping is the normalisation: the default ``unit``
(p/255) for a model trained on ``p/127.5 - 1`` gives answers that look plausible
and are wrong. Some sources say what they expect:

* a Keras application keeps its name (``mobilenetv2_1.00_224``, ``resnet50``,
  ``densenet121``), and each family was trained with one known preprocessing;
* a model that starts with ``Rescaling`` or ``Normalization`` layers normalises
  0..255 pixels itself, so it wants ``--normalize raw``: anything else normalises
  twice.

`keras_hints` reads both from a loaded Keras model; `PreprocessHint.disagreement`
says, in a sentence naming the flag to use, when the wrap options differ. A name
is only a hint (a user may rename a model or fine-tune it on other inputs), so wrap
warns and goes on; ``modelprep verify --reference-preprocess`` is the proof.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelmeta import Normalization

_TF = Normalization("symmetric")
_TORCH = Normalization("meanstd", mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
_RAW = Normalization("raw")

KERAS_APPLICATIONS: tuple[tuple[str, str, Normalization | None, str], ...] = (
    (r"mobilenetv2_", "MobileNetV2", _TF, "mobilenet_v2"),
    (r"mobilenet_\d", "MobileNet", _TF, "mobilenet"),
    (r"inception_v3$", "InceptionV3", _TF, "inception_v3"),
    (r"inception_resnet_v2$", "InceptionResNetV2", _TF, "inception_resnet_v2"),
    (r"xception$", "Xception", _TF, "xception"),
    (r"resnet(50|101|152)v2$", "ResNetV2", _TF, "resnet_v2"),
    (r"nasnet", "NASNet", _TF, "nasnet"),
    (r"densenet(121|169|201)$", "DenseNet", _TORCH, "densenet"),
    (r"resnet(50|101|152)$", "ResNet", None, "resnet50"),
    (r"vgg(16|19)$", "VGG", None, "vgg16"),
    (r"efficientnet", "EfficientNet", _RAW, "efficientnet"),
    (r"convnext", "ConvNeXt", _RAW, "convnext"),
    (r"mobilenetv3|mobilenet_v3", "MobileNetV3", _RAW, "mobilenet_v3"),
)
"""Keras application model names: (name pattern, family, its preprocessing, the
``keras.applications`` module whose ``preprocess_input`` does it). None: Keras'
``caffe`` mode (RGB to BGR, then the ImageNet mean subtracted), which no
``--normalize`` reproduces."""

_INPUT_PREPROCESSING = ("Rescaling", "Normalization")
_PASSIVE = ("InputLayer", "Resizing", "CenterCrop")


@dataclass(frozen=True)
class PreprocessHint:
    """One thing the source says about the pixels it wants."""

    evidence: str
    """What was read, for the message: ``the model is named 'resnet50'``."""
    expects: Normalization | None
    """The normalisation it implies; None when no --normalize can give it."""
    explanation: str
    """Why, in a few words: ``Keras MobileNetV2, trained on p/127.5 - 1``."""
    reference: str | None = None
    """A ``--reference-preprocess`` value that proves it in `modelprep verify`."""

    def disagreement(self, chosen: Normalization, explicit: bool) -> str | None:
        """A warning when `chosen` (``explicit``: given by a flag, not the default) is not
        what the hint implies; None when they agree."""
        from modelprep.reference import describe_normalization

        if self.expects is not None and same_normalization(chosen, self.expects):
            return None
        given = describe_normalization(chosen) + ("" if explicit else ", the default")
        if self.expects is None:
            advice = ("no --normalize reproduces that; convert the model to take RGB "
                      "pixels, or check the answers with modelprep verify")
        else:
            advice = f"wrap with {normalization_flags(self.expects)}"
        proof = (f" (modelprep verify --reference-preprocess {self.reference} checks it)"
                 if self.reference else "")
        return (f"{self.evidence} ({self.explanation}), but wrap normalises {given}: "
                f"{advice}{proof}")


def keras_hints(model: Any) -> tuple[PreprocessHint, ...]:
    """Hints from a loaded Keras model: preprocessing layers at its input first (they are
    in the model itself), else its name if it is a Keras application's."""
    layers = _input_preprocessing(model)
    if layers:
        described = ", ".join(layers)
        return (PreprocessHint(
            evidence=f"the model starts with {described}",
            expects=_RAW,
            explanation="it normalises 0..255 pixels itself; any other --normalize "
                        "normalises twice"),)
    name = str(getattr(model, "name", "") or "")
    for pattern, family, expects, module in KERAS_APPLICATIONS:
        if re.match(pattern, name, re.IGNORECASE):
            trained = ("its own Rescaling/Normalization layers" if expects is _RAW else
                       "caffe preprocessing: BGR, ImageNet mean subtracted" if expects is None
                       else _formula(expects))
            return (PreprocessHint(
                evidence=f"the model is named {name!r}",
                expects=expects,
                explanation=f"a Keras {family}, trained on {trained}",
                reference=None if expects is _RAW
                else f"keras.applications.{module}.preprocess_input"),)
    return ()


def same_normalization(a: Normalization, b: Normalization) -> bool:
    """The same map from pixels to values (meanstd within 1e-3 of each other)."""
    if a.mode != b.mode or a.invert != b.invert:
        return False
    if a.mode != "meanstd":
        return True
    assert a.mean and a.std and b.mean and b.std
    return bool(np.allclose(np.broadcast_to(a.mean, 3), np.broadcast_to(b.mean, 3), atol=1e-3)
                and np.allclose(np.broadcast_to(a.std, 3), np.broadcast_to(b.std, 3),
                                atol=1e-3))


def normalization_flags(norm: Normalization) -> str:
    """The ``modelprep wrap`` flags that give `norm`."""
    flags = f"--normalize {norm.mode}"
    if norm.mode == "meanstd":
        assert norm.mean is not None and norm.std is not None
        flags += (f" --mean {','.join(f'{v:g}' for v in norm.mean)}"
                  f" --std {','.join(f'{v:g}' for v in norm.std)}")
    return flags + (" --invert" if norm.invert else "")


def _formula(norm: Normalization) -> str:
    from modelprep.reference import describe_normalization

    return describe_normalization(norm).split(": ", 1)[1]


def _input_preprocessing(model: Any) -> list[str]:
    """The Rescaling/Normalization layers the input meets before any other layer."""
    found = []
    for layer in getattr(model, "layers", ()):
        kind = type(layer).__name__
        if kind in _PASSIVE:
            continue
        if kind not in _INPUT_PREPROCESSING:
            break
        found.append(_describe_layer(layer, kind))
    return found


def _describe_layer(layer: Any, kind: str) -> str:
    config = layer.get_config() if hasattr(layer, "get_config") else {}
    if kind == "Rescaling":
        return f"Rescaling (x * {_number(config.get('scale'))} + " \
               f"{_number(config.get('offset', 0))})"
    return "Normalization"


def _number(value: Any) -> str:
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)
