"""Where a LiteRT flavour is, what its metadata says, and whether it may be served.

`modelprep litert` writes each flavour as ``model_<flavour>.tflite`` with its own
`modelmeta` metadata beside it (``model_<flavour>.json``). That metadata takes one
of two forms, and the backend (`functions.backends.litert`) runs each its own way:

* **pixels-fed**: one input of kind ``pixels``, the original model's own input. The
  backend takes encoded images, as a wrapped SavedModel does, and decodes, resizes and
  normalises them itself (`functions.pixels`).
* **tensor-fed**: the prepared SavedModel's own inputs (``quantized_pixels`` and plain
  ``tensor`` inputs, as Mask R-CNN's image, image meta and anchors), because the
  flavour *is* that SavedModel converted. The function's feed (`functions.feed`)
  builds them in numpy exactly as for the SavedModel, and the backend passes them on.

A flavour whose metadata says it missed its tolerance (``verified: false``) is not
served unless ``LITERT_ALLOW_UNVERIFIED=true``: an int8 model calibrated on the wrong
images answers confidently and wrongly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from functions.errors import ModelNotReady
from modelmeta import LITERT_DIR, MetadataError, ModelMetadata, litert_files

log = logging.getLogger(__name__)

ALLOW_UNVERIFIED = "LITERT_ALLOW_UNVERIFIED"
"""Set to true to serve a flavour whose metadata says ``verified: false``."""

TENSOR_KINDS = ("quantized_pixels", "tensor")
"""Input kinds a tensor-fed flavour takes: numbers the function's feed builds."""


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
    """The flavour's own metadata, in one of the two forms the backend runs."""
    try:
        metadata = ModelMetadata.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelNotReady(f"no metadata at {path} beside the LiteRT model; export it with "
                            "`modelprep litert`") from exc
    except MetadataError as exc:
        raise ModelNotReady(f"LiteRT metadata {path} is unusable: {exc}") from exc
    kinds = [spec.kind for spec in metadata.inputs]
    if kinds == ["pixels"] or (kinds and all(kind in TENSOR_KINDS for kind in kinds)):
        return metadata
    raise ModelNotReady(f"LiteRT metadata {path} must describe one input of kind 'pixels', or "
                        f"inputs of kinds {' and '.join(TENSOR_KINDS)} only; it has "
                        f"{[(s.name, s.kind) for s in metadata.inputs]}")


def is_tensor_fed(metadata: ModelMetadata) -> bool:
    """True when the flavour takes the prepared SavedModel's own inputs (see above)."""
    return all(spec.kind in TENSOR_KINDS for spec in metadata.inputs)


def check_verified(flavour: str, model: Path, metadata: ModelMetadata,
                   allow_unverified: bool) -> None:
    """Refuse a flavour whose metadata says it missed its tolerance
    (``source.verified: false``, written by ``modelprep litert``). With
    `allow_unverified` it is served, with a warning in the log; a flavour exported
    before modelprep recorded the verdict is served with a warning too."""
    verified = metadata.source.get("verified")
    detail = metadata.source.get("verification") or "no detail recorded"
    against = metadata.source.get("verified_against") or "the original model"
    if verified is True:
        return
    if verified is None:
        log.warning("LiteRT %s model %s carries no verification verdict (exported by an "
                    "older modelprep); `modelprep litert` checks it against %s",
                    flavour, model, against)
        return
    if not allow_unverified:
        raise ModelNotReady(f"the LiteRT {flavour} model {model} is not verified against "
                            f"{against} ({detail}); export it again with `modelprep "
                            f"litert` (for int8, --images DIR of representative photos), or "
                            f"set {ALLOW_UNVERIFIED}=true to serve it anyway")
    log.warning("serving the LiteRT %s model %s although it is not verified against %s "
                "(%s), because %s=true", flavour, model, against, detail, ALLOW_UNVERIFIED)
