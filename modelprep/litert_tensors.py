"""LiteRT flavours of a prepared model whose inputs are all numbers (tensor-fed).

A model such as Mask R-CNN takes quantized pixels, an image meta and anchors, and its
prepared SavedModel decodes nothing: the function's feed (`functions.feed`) builds
those tensors in numpy. So here the *prepared* signature itself is converted, its
in-graph dequantization of the pixels and quantization of the masks included, and
the flavour's metadata is the prepared model's own: the litert backend then takes
exactly the SavedModel's inputs and gives exactly its outputs (uint8 masks and all),
and `functions.answers` reads them as it reads the in-process ones.

* ``float``: the prepared signature as it is.
* ``int8``: the same with int8 arithmetic inside, calibrated on the feeds of
  representative images (``--images DIR``, else generated ones), the inputs and
  outputs keeping the SavedModel's types. TensorFlow's calibrator can fail on graphs
  of loops and data-dependent shapes, and sometimes crashes the process outright, so
  it runs in a child process; a flavour that does not convert is skipped with the
  reason, and a stale file of it is removed so it cannot be served.

`verify_tensor_flavours` feeds both the SavedModel and each flavour the function's own
tensors for the same images and compares their outputs (quantized ones as real values,
within one quantization step for float noise that lands on the other side of a
rounding; masks also by the share of values on the same side of 0.5, the threshold the
answers use).
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelmeta import LITERT_DIR, ImageSpec, ModelMetadata, OutputSpec, litert_files
from modelprep.errors import ModelprepError, SourceError, SpecMismatch, first_line
from modelprep.litert import (
    DEFAULT_VERIFY_COUNT,
    FlavourFile,
    FlavourReport,
    LiteRTExport,
    LiteRTOptions,
    LiteRTReport,
    LiteRTTolerances,
    OutputAgreement,
    Progress,
    calibration_warning,
    representative_images,
)

INT8_TIMEOUT = 1800.0
"""Seconds the int8 conversion (calibration included) may take in its child process."""
MASK_THRESHOLD = 0.5
"""Where `functions.answers.masks` cuts mask probabilities."""
VERIFIED_AGAINST = "the prepared SavedModel"


def export_tensor_flavours(prepared: Path, served: ModelMetadata, options: LiteRTOptions,
                           progress: Progress, warn: Progress) -> LiteRTExport:
    """Convert the prepared signature into each flavour that converts, verify them
    (unless `LiteRTOptions.verify` is off) and record the verdicts."""
    from modelprep.litert import _check_flavours, _convert, _record_verification

    started = time.monotonic()
    image = _image_spec(served)
    out = Path(options.out) if options.out else prepared / LITERT_DIR
    flavours = _check_flavours(options.flavours)
    import tensorflow as tf

    progress(f"loading {prepared}")
    loaded, fn = _load_prepared_signature(prepared, served)
    files: list[FlavourFile] = []
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    calibration = None
    for flavour in flavours:
        progress(f"converting the {flavour} flavour of the prepared signature")
        if flavour == "float":
            content = _convert(tf, loaded, fn, None, "")
        else:
            encoded, calibration = representative_images(
                image, images=options.images, samples=options.samples, count=options.count,
                seed=options.seed)
            why = calibration_warning(image, options, calibration)
            if why:
                warn(why)
            progress(f"calibrating int8 on {calibration} (in a child process)")
            converted = convert_int8(prepared, encoded)
            if isinstance(converted, str):
                warn(f"int8 flavour not exported: {converted}")
                skipped.append((flavour, converted))
                _remove_flavour(out, flavour)
                continue
            if why:
                notes.append(f"warning: {why}")
            content = converted
        files.append(_write_flavour(out, flavour, content, served, prepared,
                                    calibration if flavour == "int8" else None))
    if not files:
        reasons = "; ".join(f"{f}: {why}" for f, why in skipped)
        raise SpecMismatch(f"no LiteRT flavour of {prepared} converts ({reasons})")
    report = None
    if options.verify:
        progress(f"verifying the flavours against {VERIFIED_AGAINST}")
        report = verify_tensor_flavours(prepared, images=options.verify_images,
                                        count=options.verify_count, seed=options.seed,
                                        flavours=[f.flavour for f in files], litert_dir=out)
    files = [_record_verification(f, report) for f in files]
    return LiteRTExport(out=out, files=tuple(files), calibration=calibration,
                        seconds=time.monotonic() - started, report=report, notes=tuple(notes),
                        skipped=tuple(skipped))


def verify_tensor_flavours(prepared: str | Path, *, images: Path | None = None,
                           samples: str = "auto", count: int = DEFAULT_VERIFY_COUNT,
                           seed: int = 0, flavours: Sequence[str] | None = None,
                           litert_dir: str | Path | None = None,
                           tolerances: LiteRTTolerances | None = None) -> LiteRTReport:
    """Compare tensor-fed flavours (default: every one exported) with the prepared
    SavedModel, both fed the function's own tensors for the same images."""
    import tensorflow as tf

    from functions.backends.litert import LiteRTTensorModel
    from functions.errors import ModelNotReady
    from modelprep.litert import _exported, _load_flavour_metadata, _load_prepared
    from modelprep.samples import collect_images

    started = time.monotonic()
    tolerances = tolerances or LiteRTTolerances()
    prepared = Path(prepared)
    served = _load_prepared(prepared)
    image = _image_spec(served)
    folder = Path(litert_dir) if litert_dir else prepared / LITERT_DIR
    found = _exported(folder, flavours)
    chosen = collect_images(image, images=images, samples=samples, count=count, seed=seed)
    if not chosen.images:
        raise ModelprepError("no images to verify the LiteRT flavours with")
    _, fn = _load_prepared_signature(prepared, served)
    models = {}
    for flavour, (model_path, metadata_path) in found:
        metadata = _load_flavour_metadata(metadata_path)
        try:
            models[flavour] = LiteRTTensorModel(model_path, metadata)
        except ModelNotReady as exc:
            raise SpecMismatch(f"the {flavour} flavour cannot be served: {exc.message}") from exc
    want: dict[str, list[np.ndarray]] = {o.name: [] for o in served.outputs}
    got: dict[str, dict[str, list[np.ndarray]]] = {
        flavour: {o.name: [] for o in served.outputs} for flavour in models}
    for feed in _feeds(served, [(s.name, s.data) for s in chosen.images]):
        outputs = fn(**{name: tf.constant(value) for name, value in feed.items()})
        for name in want:
            want[name].append(outputs[name].numpy())
        for flavour, model in models.items():
            answer = model.run(feed)
            for name in want:
                got[flavour][name].append(answer[name])
    paths = {flavour: files[0] for flavour, files in found}
    reports = []
    for flavour in models:
        is_int8 = flavour == "int8"
        agreements = tuple(
            _agreement(spec, np.concatenate(got[flavour][spec.name]),
                       np.concatenate(want[spec.name]),
                       tolerances.int8_max_error if is_int8 else tolerances.float_max_error,
                       tolerances.int8_argmax if is_int8 else tolerances.float_argmax)
            for spec in served.outputs)
        reports.append(FlavourReport(flavour, paths[flavour], agreements))
    return LiteRTReport(images=len(chosen.images), description=chosen.description,
                        preprocessing=None, flavours=tuple(reports),
                        seconds=time.monotonic() - started,
                        notes=(f"both fed the function's own tensors (functions.feed); "
                               f"compared with {VERIFIED_AGAINST} {prepared}",))


def _agreement(spec: OutputSpec, got: np.ndarray, want: np.ndarray, error: float,
               agree: float) -> OutputAgreement:
    """Real values compared; the limit is at least one step of a quantized output."""
    from functions.quantization import dequantize

    if got.shape != want.shape:
        raise SpecMismatch(f"LiteRT output {spec.name!r} has shape {got.shape}, the "
                           f"SavedModel's {want.shape}")
    got = np.asarray(dequantize(got, spec.quantization), np.float64)
    want = np.asarray(dequantize(want, spec.quantization), np.float64)
    diff = np.abs(got - want)
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    limit = error * scale
    if spec.quantization is not None:
        limit = max(limit, spec.quantization.scale * (1 + 1e-6))
    share, kind = None, "argmax"
    if spec.role == "masks":
        share, kind = float(np.mean((got >= MASK_THRESHOLD) == (want >= MASK_THRESHOLD))), \
            f"same side of {MASK_THRESHOLD}"
    elif spec.role in ("probabilities", "logits", "scores") and want.ndim >= 2 \
            and want.shape[-1] > 1:
        share = float(np.mean(got.argmax(axis=-1) == want.argmax(axis=-1)))
    return OutputAgreement(name=spec.name, role=spec.role, max_abs_error=float(diff.max()),
                           mean_abs_error=float(diff.mean()), argmax_agreement=share,
                           error_limit=limit, argmax_limit=agree, agreement_kind=kind)


def _feeds(served: ModelMetadata, images: list[tuple[str, bytes]]
           ) -> Iterator[dict[str, np.ndarray]]:
    """The function's feed for each image, one at a time (batch 1): what it sends the
    SavedModel, built by the very code that serves (`functions.feed`)."""
    from functions.errors import ServiceError
    from functions.feed import model_inputs
    from functions.request.images import inspect_image

    for name, data in images:
        try:
            item = inspect_image(data, name, max_pixels=2 ** 31)
            yield model_inputs(served, [item])
        except ServiceError as exc:
            raise ModelprepError(f"image {name} cannot be fed to the model: "
                                 f"{exc.message}") from exc


# --- int8, in a child process -----------------------------------------------------------


def convert_int8(prepared: Path, encoded: list[bytes]) -> bytes | str:
    """The int8 flavour's bytes, or why it does not convert (a sentence)."""
    with tempfile.TemporaryDirectory(prefix="litert-int8-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, data in enumerate(encoded):
            (folder / f"{i:05d}.img").write_bytes(data)
        target = Path(tmp) / "model_int8.tflite"
        argv = [sys.executable, "-m", "modelprep.litert_tensors", str(prepared), str(folder),
                str(target)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=INT8_TIMEOUT,
                                  check=False, cwd=Path(__file__).resolve().parent.parent)
        except subprocess.TimeoutExpired:
            return f"TensorFlow's int8 conversion took over {INT8_TIMEOUT:.0f} s"
        if done.returncode == 0 and target.is_file():
            return target.read_bytes()
        if done.returncode < 0:
            name = signal.Signals(-done.returncode).name
            return (f"TensorFlow's int8 calibration crashed ({name}) on this model; "
                    "serve the float flavour")
        lines = [line for line in done.stderr.strip().splitlines()
                 if line.startswith("modelprep: ")]
        return lines[-1].removeprefix("modelprep: ") if lines else (
            f"the int8 conversion exited {done.returncode}")


def _int8_child(prepared: Path, folder: Path, target: Path) -> None:
    """Child process: calibrate and convert, writing the flavour's bytes to `target`."""
    import tensorflow as tf

    from modelprep.litert import _load_prepared

    served = _load_prepared(prepared)
    loaded, fn = _load_prepared_signature(prepared, served)
    images = [(path.name, path.read_bytes()) for path in sorted(folder.iterdir())]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], loaded)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: _feeds(served, images)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        content = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ...
        raise SpecMismatch(f"LiteRT cannot convert the model to int8: "
                           f"{first_line(exc)}") from exc
    target.write_bytes(content)


# --- files ------------------------------------------------------------------------------


def _write_flavour(out: Path, flavour: str, content: bytes, served: ModelMetadata,
                   prepared: Path, calibration: str | None) -> FlavourFile:
    """The flavour and its metadata: the prepared model's own, with the flavour noted."""
    from ai_edge_litert.interpreter import Interpreter

    from functions.backends.litert import LiteRTTensorModel
    from functions.errors import ModelNotReady
    from modelprep.litert import write_flavour

    signatures = Interpreter(model_content=content).get_signature_list()
    if len(signatures) != 1:
        raise SpecMismatch(f"the converted model has signatures {sorted(signatures)}; "
                           "expected one")
    (key,) = signatures
    metadata = dataclasses.replace(served, signature=key, source={
        "path": str(prepared), "format": "saved_model", "signature": served.signature,
        "litert_flavour": flavour, "litert_inputs": "the prepared model's",
        "verified_against": VERIFIED_AGAINST,
        **({"calibration": calibration} if calibration else {})})
    model_path, metadata_path = write_flavour(out, flavour, content, metadata)
    try:  # what the backend will check when it loads it
        LiteRTTensorModel(model_path, metadata)
    except ModelNotReady as exc:
        _remove_flavour(out, flavour)
        raise SpecMismatch(f"the converted {flavour} flavour does not match the prepared "
                           f"model: {exc.message}") from exc
    return FlavourFile(flavour, model_path, metadata_path, metadata)


def _remove_flavour(out: Path, flavour: str) -> None:
    for name in litert_files(flavour):
        (out / name).unlink(missing_ok=True)


def _load_prepared_signature(prepared: Path, served: ModelMetadata) -> tuple[Any, Any]:
    import tensorflow as tf


    try:
        loaded = tf.saved_model.load(str(prepared))
    except Exception as exc:  # TF raises many kinds; all mean "cannot load"
        raise SourceError(f"cannot load {prepared}: {first_line(exc)}") from exc
    if served.signature not in loaded.signatures:
        raise SourceError(f"prepared model {prepared} has no signature {served.signature!r}")
    return loaded, loaded.signatures[served.signature]


def _image_spec(served: ModelMetadata) -> ImageSpec:
    spec = served.image_input
    if spec is None or spec.image is None:
        raise SpecMismatch(f"model {served.name!r} has no image input; LiteRT flavours are "
                           "for image models")
    return spec.image


def main(argv: list[str]) -> int:
    """``python -m modelprep.litert_tensors PREPARED IMAGES_DIR OUT``: the int8 child."""
    from modelprep.errors import ModelprepError as Error

    prepared, folder, target = (Path(a) for a in argv)
    try:
        _int8_child(prepared, folder, target)
    except Error as exc:
        print(f"modelprep: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

