"""LiteRT flavours of a prepared model, for a function that runs without TensorFlow.

`export_litert` converts the *original* model's signature (pixels in, no image
decoding: that stays outside the LiteRT graph, in `functions.pixels`) with
``tf.lite.TFLiteConverter`` into:

* ``float``: the model as it is, float32 in and out;
* ``int8``: full-integer, int8 in and out, calibrated on representative images
  (a folder the user gives, else generated ones: the digits training split for
  an MNIST-shaped input, synthetic images otherwise).

Each flavour is written inside the prepared model's directory (TF Serving ignores
the extra folder)::

    <prepared>/litert/model_float.tflite   model_float.json
    <prepared>/litert/model_int8.tflite    model_int8.json

The ``.json`` is `modelmeta` metadata of the flavour itself: one ``pixels`` input
in the source model's shape and layout, with the prepared model's image spec
(size, resize mode, normalisation) and, for int8, its quantization; the outputs
with the source names, their roles, and their quantization. The litert backend
needs nothing else, so ``litert/`` alone is what a zip function ships.

`verify_litert` checks the flavours against the original model: both see the
same images, the original through the in-graph preprocessing (as the prepared
model runs it), LiteRT through the Python one (as the function runs it); it
reports per output the argmax agreement and the max error, and how far the two
preprocessings are apart.

A prepared model whose inputs are all numbers (quantized pixels and plain tensors,
as the segmentation demo's Mask R-CNN contract) has no decoding to leave out: its
flavours are the *prepared* signature itself, verified against the prepared
SavedModel on the function's own tensors (`modelprep.litert_tensors`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from functions.backends.litert_files import is_tensor_fed
from modelmeta import (
    LITERT_DIR,
    LITERT_FLAVOURS,
    ImageSpec,
    InputSpec,
    MetadataError,
    ModelMetadata,
    OutputSpec,
    Quantization,
    litert_files,
)
from modelprep.errors import (
    ModelprepError,
    SourceError,
    SpecMismatch,
    VerificationFailed,
    first_line,
)

DEFAULT_CALIBRATION_COUNT = 200
"""Representative images for int8 calibration; more rarely changes the ranges."""
DEFAULT_VERIFY_COUNT = 64
ARGMAX_ROLES = ("probabilities", "logits", "masks", "scores")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LiteRTOptions:
    """What to export; each field is a flag of ``modelprep litert``."""

    flavours: tuple[str, ...] = LITERT_FLAVOURS
    original: Path | None = None
    """The source SavedModel; default: the path the prepared model's metadata records."""
    out: Path | None = None
    """Where to write; default: ``<prepared>/litert``."""
    images: Path | None = None
    """A folder of representative images (PNG, JPEG, GIF, BMP) for int8 calibration."""
    samples: str = "auto"
    """Generated representative images when no folder: auto, digits or synthetic."""
    count: int = DEFAULT_CALIBRATION_COUNT
    seed: int = 0
    verify: bool = True
    """Compare each flavour with the original (`verify_litert`) and record the result in
    its metadata; a flavour that fails is marked ``verified: false``, which the litert
    backend refuses to serve unless told otherwise (``LITERT_ALLOW_UNVERIFIED=true``)."""
    verify_images: Path | None = None
    """Images for the check; default: generated (held-out digits for 28x28 gray)."""
    verify_count: int = DEFAULT_VERIFY_COUNT


@dataclass(frozen=True)
class FlavourFile:
    flavour: str
    model: Path
    metadata_path: Path
    metadata: ModelMetadata

    @property
    def size_bytes(self) -> int:
        return self.model.stat().st_size


@dataclass(frozen=True)
class LiteRTExport:
    out: Path
    files: tuple[FlavourFile, ...]
    calibration: str | None
    """Where the int8 flavour's representative images came from."""
    seconds: float
    report: LiteRTReport | None = None
    """The comparison with the original, unless `LiteRTOptions.verify` was off."""
    notes: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    """Flavours that did not convert, with the reason (none of their files is left)."""

    @property
    def failed(self) -> tuple[str, ...]:
        """Flavours that missed their tolerance (marked ``verified: false``)."""
        if self.report is None:
            return ()
        return tuple(f.flavour for f in self.report.flavours if not f.passed)

    def raise_if_failed(self) -> None:
        if self.report is not None and not self.report.passed:
            failed = ", ".join(self.failed) or "every"
            raise VerificationFailed(
                "LiteRT flavours disagree with the original model: "
                + "; ".join(self.report.failures())
                + f". The {failed} flavour's metadata says verified: false, so the litert "
                "backend refuses it unless LITERT_ALLOW_UNVERIFIED=true")

    def format(self) -> str:
        lines = []
        for f in self.files:
            ins = []
            for spec in f.metadata.inputs:
                q = spec.quantization
                quant = f" scale {q.scale:.6g} zero point {q.zero_point}" if q else ""
                ins.append(f"{spec.name!r} {spec.dtype}{list(spec.shape)}{quant}")
            lines.append(f"{f.flavour:6s} {f.model}  {f.size_bytes:,} bytes; "
                         f"input{'s' if len(ins) > 1 else ''} {', '.join(ins)}")
            for o in f.metadata.outputs:
                oq = o.quantization
                quant = f" scale {oq.scale:.6g} zero point {oq.zero_point}" if oq else ""
                lines.append(f"       output {o.name!r} ({o.role}) {o.dtype}{list(o.shape)}"
                             f"{quant}")
        if self.calibration and any(f.flavour == "int8" for f in self.files):
            lines.append(f"int8 calibrated on {self.calibration}")
        lines.extend(f"{flavour:6s} not exported: {why}" for flavour, why in self.skipped)
        lines.extend(self.notes)
        lines.append(f"done in {self.seconds:.1f} s")
        if self.report is not None:
            lines.append(self.report.format())
        else:
            lines.append("not verified (--no-verify): the metadata says verified: false, so "
                         "the litert backend refuses these flavours unless "
                         "LITERT_ALLOW_UNVERIFIED=true")
        return "\n".join(lines)


def export_litert(prepared: str | Path, options: LiteRTOptions | None = None,
                  progress: Progress = lambda _msg: None,
                  warn: Progress | None = None) -> LiteRTExport:
    """Write the LiteRT flavours of the prepared model, check them against the original
    (unless `LiteRTOptions.verify` is off) and record the verdict in each flavour's
    metadata. `warn` hears about calibration on generated images (default: progress)."""
    warn = warn or progress
    options = options or LiteRTOptions()
    started = time.monotonic()
    prepared = Path(prepared)
    served = _load_prepared(prepared)
    if options.count < 1:
        raise ModelprepError(f"calibration image count must be at least 1, got {options.count}")
    if is_tensor_fed(served):  # Mask R-CNN and the like: the prepared signature itself
        from modelprep.litert_tensors import export_tensor_flavours

        return export_tensor_flavours(prepared, served, options, progress, warn)
    image = _image_spec(served)
    original = Path(options.original) if options.original else _original_path(served)
    out = Path(options.out) if options.out else prepared / LITERT_DIR
    flavours = _check_flavours(options.flavours)

    import tensorflow as tf

    progress(f"loading {original}")
    loaded, fn = _load_original(original, served.signature, served)
    input_name, input_spec = _single_input(fn, original)
    calibration: str | None = None
    notes: list[str] = []
    files = []
    for flavour in flavours:
        dataset = None
        if flavour == "int8":
            if not input_spec.dtype.is_floating:
                raise SpecMismatch(f"the int8 flavour needs a float input; {input_name!r} of "
                                   f"{original} is {input_spec.dtype.name}")
            encoded, calibration = representative_images(
                image, images=options.images, samples=options.samples, count=options.count,
                seed=options.seed)
            why = calibration_warning(image, options, calibration)
            if why:
                warn(why)
                notes.append(f"warning: {why}")
            progress(f"calibrating int8 on {calibration}")
            dataset = _model_values(encoded, image, input_spec, "representative image")
        progress(f"converting the {flavour} flavour")
        content = _convert(tf, loaded, fn, dataset, input_name)
        files.append(_write_flavour(out, flavour, content, served, image, original,
                                    input_name, calibration if flavour == "int8" else None))
    report = None
    if options.verify:
        progress("verifying the flavours against the original model")
        report = verify_litert(original, prepared, images=options.verify_images,
                               count=options.verify_count, flavours=flavours, litert_dir=out)
    files = [_record_verification(f, report) for f in files]
    return LiteRTExport(out=out, files=tuple(files), calibration=calibration,
                        seconds=time.monotonic() - started, report=report,
                        notes=tuple(notes))


def calibration_warning(image: ImageSpec, options: LiteRTOptions,
                        calibration: str | None) -> str | None:
    """Why int8 calibration on generated images may cost accuracy, when it happens."""
    if options.images is not None or calibration is None or "digits" in calibration:
        return None
    return (f"int8 is calibrated on {calibration} because no --images DIR was given: "
            "generated images do not span the value ranges real photos reach inside the "
            "model, so int8 answers may drift; give --images DIR with 100 or more "
            f"representative {image.height}x{image.width} photos (any size is resized)")


def _record_verification(file: FlavourFile, report: LiteRTReport | None) -> FlavourFile:
    """Write the verdict into the flavour's metadata (``source.verified`` and
    ``source.verification``), which the litert backend reads before serving it."""
    if report is None:
        verified, detail = False, "not verified (exported with --no-verify)"
    else:
        flavour = next(f for f in report.flavours if f.flavour == file.flavour)
        verified = flavour.passed and (report.preprocessing is None
                                       or report.preprocessing.passed)
        problems = [p for p in report.failures()
                    if p.startswith((f"{file.flavour} ", "preprocessing"))]
        detail = (f"{report.images} images ({report.description}): "
                  + ("; ".join(problems) if problems else flavour.summary()))
    metadata = dataclasses.replace(file.metadata, source={
        **file.metadata.source, "verified": verified, "verification": detail})
    _write_atomically(file.metadata_path, metadata.to_json().encode("utf-8"))
    return dataclasses.replace(file, metadata=metadata)


def representative_images(image: ImageSpec, *, images: Path | None = None,
                          samples: str = "auto", count: int = DEFAULT_CALIBRATION_COUNT,
                          seed: int = 0) -> tuple[list[bytes], str]:
    """Encoded images for int8 calibration, and a sentence saying where they came from.

    A folder's files as they are; else the digits *training* split for a 28x28
    gray input (``auto`` or ``digits``: the held-out split stays for checking),
    else synthetic images (`modelprep.samples`).
    """
    from modelprep.samples import collect_images, encode_png

    digits_shaped = (image.height, image.width, image.channels) == (28, 28, 1)
    if images is None and (samples == "digits" or (samples == "auto" and digits_shaped)):
        from modelprep.digits import digit_images

        train = digit_images(seed).x_train
        n = min(count, len(train))
        channels = image.channels
        encoded = [encode_png(np.repeat(train[i][:, :, None], channels, axis=2))
                   for i in range(n)]
        return encoded, f"{n} digits of the training split"
    chosen = collect_images(image, images=images, samples=samples, count=count, seed=seed)
    return [s.data for s in chosen.images], chosen.description


# --- verification -------------------------------------------------------------------


@dataclass(frozen=True)
class LiteRTTolerances:
    """When a flavour passes. Errors are absolute, scaled by ``max(1, max|original|)``."""

    float_max_error: float = 1e-4
    float_argmax: float = 1.0
    int8_max_error: float = 0.1
    int8_argmax: float = 0.99
    preprocess_max_error: float | None = None
    """In pixel units (0..255); default `functions.pixels.RESIZE_BOUND`."""


@dataclass(frozen=True)
class OutputAgreement:
    name: str
    role: str
    max_abs_error: float
    mean_abs_error: float
    argmax_agreement: float | None
    """Share of items (or pixels) whose argmax over the last axis is the same."""
    error_limit: float
    argmax_limit: float
    agreement_kind: str = "argmax"
    """What `argmax_agreement` counts: ``argmax``, or for masks ``same side of 0.5``."""

    @property
    def passed(self) -> bool:
        argmax_ok = self.argmax_agreement is None or self.argmax_agreement >= self.argmax_limit
        return self.max_abs_error <= self.error_limit and argmax_ok


@dataclass(frozen=True)
class FlavourReport:
    flavour: str
    model: Path
    outputs: tuple[OutputAgreement, ...]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def summary(self) -> str:
        """One line per flavour for its metadata: the worst of each output."""
        parts = []
        for o in self.outputs:
            agree = "" if o.argmax_agreement is None else f"argmax {o.argmax_agreement:.2%}, "
            parts.append(f"{o.name}: {agree}max error {o.max_abs_error:.3g}")
        return "; ".join(parts)


@dataclass(frozen=True)
class PreprocessAgreement:
    """Python-side against in-graph preprocessing, on the same encoded images."""

    images: int
    identical: int
    """Images whose pixels (after decode and resize) are bit-for-bit the same."""
    max_pixel_error: float
    """In pixel units, 0..255, after decode and resize."""
    max_value_error: float
    """In model input units, after normalisation."""
    limit: float

    @property
    def passed(self) -> bool:
        return self.max_pixel_error <= self.limit


@dataclass(frozen=True)
class LiteRTReport:
    images: int
    description: str
    preprocessing: PreprocessAgreement | None
    """None for tensor-fed flavours: both sides get the function's own tensors."""
    flavours: tuple[FlavourReport, ...]
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return ((self.preprocessing is None or self.preprocessing.passed)
                and all(f.passed for f in self.flavours))

    def failures(self) -> list[str]:
        problems = []
        p = self.preprocessing
        if p is not None and not p.passed:
            problems.append(f"preprocessing: Python and graph pixels differ by up to "
                            f"{p.max_pixel_error:.4g} (limit {p.limit:.4g})")
        for f in self.flavours:
            for o in f.outputs:
                if o.max_abs_error > o.error_limit:
                    problems.append(f"{f.flavour} {o.name}: max error {o.max_abs_error:.4g} > "
                                    f"{o.error_limit:.4g}")
                if o.argmax_agreement is not None and o.argmax_agreement < o.argmax_limit:
                    problems.append(f"{f.flavour} {o.name}: {o.agreement_kind} agrees on "
                                    f"{o.argmax_agreement:.2%} < {o.argmax_limit:.2%}")
        return problems

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise VerificationFailed("LiteRT flavours disagree with the original model: "
                                     + "; ".join(self.failures()))

    def format(self) -> str:
        p = self.preprocessing
        lines = [f"{self.images} images: {self.description}"]
        if p is not None:
            lines.append(f"preprocessing  Python vs graph: {p.identical}/{p.images} images "
                         f"identical, max {p.max_pixel_error:.4g} pixel units (limit "
                         f"{p.limit:.4g}), {p.max_value_error:.3g} in model units  "
                         f"{'ok' if p.passed else 'FAIL'}")
        for f in self.flavours:
            for o in f.outputs:
                agree = ("" if o.argmax_agreement is None
                         else f"{o.agreement_kind} {o.argmax_agreement:.2%} "
                              f"(>= {o.argmax_limit:.0%}), ")
                lines.append(f"{f.flavour:6s} {o.name} ({o.role}): {agree}max error "
                             f"{o.max_abs_error:.3g} (limit {o.error_limit:.3g}), mean "
                             f"{o.mean_abs_error:.3g}  {'ok' if o.passed else 'FAIL'}")
        lines.extend(self.notes)
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def verify_litert(original: str | Path | None, prepared: str | Path, *,
                  images: Path | None = None, samples: str = "auto",
                  count: int = DEFAULT_VERIFY_COUNT, seed: int = 0,
                  flavours: Sequence[str] | None = None, litert_dir: str | Path | None = None,
                  tolerances: LiteRTTolerances | None = None) -> LiteRTReport:
    """Compare the LiteRT flavours (default: every one exported) with the original model.

    ``original`` defaults to the path the prepared model's metadata records;
    ``litert_dir`` to ``<prepared>/litert``. Images are a folder, or generated
    (the held-out digits for a 28x28 gray input, else synthetic). Tensor-fed flavours
    are compared with the prepared SavedModel instead (``original`` is not used; see
    `modelprep.litert_tensors`).
    """
    if is_tensor_fed(_load_prepared(Path(prepared))):
        from modelprep.litert_tensors import verify_tensor_flavours

        return verify_tensor_flavours(prepared, images=images, samples=samples, count=count,
                                      seed=seed, flavours=flavours, litert_dir=litert_dir,
                                      tolerances=tolerances)
    import tensorflow as tf

    from functions import pixels as py
    from functions.backends.litert import LiteRTModel
    from modelprep import input_ops as graph
    from modelprep.samples import collect_images

    started = time.monotonic()
    tolerances = tolerances or LiteRTTolerances()
    prepared = Path(prepared)
    served = _load_prepared(prepared)
    image = _image_spec(served)
    original = Path(original) if original else _original_path(served)
    folder = Path(litert_dir) if litert_dir else prepared / LITERT_DIR
    found = _exported(folder, flavours)
    chosen = collect_images(image, images=images, samples=samples, count=count, seed=seed)
    encoded = [s.data for s in chosen.images]
    if not encoded:
        raise ModelprepError("no images to verify the LiteRT flavours with")

    graph_pixels = np.stack([_graph_pixels(tf, graph, data, image, name) for data, name in
                             zip(encoded, (s.name for s in chosen.images), strict=True)])
    py_pixels = np.stack([_python_pixels(py, data, image, name) for data, name in
                          zip(encoded, (s.name for s in chosen.images), strict=True)])
    graph_values = graph.normalize(tf.constant(graph_pixels), image.normalization).numpy()
    py_values = py.normalize(py_pixels, image.normalization)
    pixel_error = np.abs(graph_pixels - py_pixels).reshape(len(encoded), -1).max(axis=1)
    limit = (tolerances.preprocess_max_error if tolerances.preprocess_max_error is not None
             else py.RESIZE_BOUND)
    agreement = PreprocessAgreement(
        images=len(encoded), identical=int((pixel_error == 0).sum()),
        max_pixel_error=float(pixel_error.max()),
        max_value_error=float(np.abs(graph_values - py_values).max()), limit=limit)

    _, fn = _load_original(original, served.signature, served)
    input_name, input_spec = _single_input(fn, original)
    shape = [-1 if d is None else int(d) for d in input_spec.shape.as_list()]
    feed = tf.reshape(tf.constant(graph_values), [-1, *shape[1:]])
    want = {name: value.numpy() for name, value in fn(
        **{input_name: tf.cast(feed, input_spec.dtype)}).items()}

    reports = []
    for flavour, files in found:
        metadata = _load_flavour_metadata(files[1])
        model = LiteRTModel(files[0], metadata)
        got = model.run(py_values.reshape(len(encoded), *model.item_shape[1:]))
        is_int8 = flavour == "int8"
        outputs = []
        for spec in metadata.outputs:
            if spec.name not in want:
                raise SpecMismatch(f"LiteRT output {spec.name!r} is not an output of {original}")
            outputs.append(_agreement(spec, got[spec.name], want[spec.name],
                                      tolerances.int8_max_error if is_int8
                                      else tolerances.float_max_error,
                                      tolerances.int8_argmax if is_int8
                                      else tolerances.float_argmax))
        reports.append(FlavourReport(flavour, files[0], tuple(outputs)))
    return LiteRTReport(images=len(encoded), description=chosen.description,
                        preprocessing=agreement, flavours=tuple(reports),
                        seconds=time.monotonic() - started)


def _agreement(spec: OutputSpec, got: np.ndarray, want: np.ndarray, error: float,
               argmax: float) -> OutputAgreement:
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise SpecMismatch(f"LiteRT output {spec.name!r} has shape {got.shape}, the original "
                           f"{want.shape}")
    diff = np.abs(got - want)
    scale = max(1.0, float(np.abs(want).max()) if want.size else 1.0)
    agreement = None
    if spec.role in ARGMAX_ROLES and want.ndim >= 2 and want.shape[-1] > 1:
        agreement = float(np.mean(got.argmax(axis=-1) == want.argmax(axis=-1)))
    return OutputAgreement(name=spec.name, role=spec.role, max_abs_error=float(diff.max()),
                           mean_abs_error=float(diff.mean()), argmax_agreement=agreement,
                           error_limit=error * scale, argmax_limit=argmax)


def _graph_pixels(tf: Any, graph: Any, data: bytes, image: ImageSpec, name: str) -> np.ndarray:
    try:
        return graph.resize(graph.decode_image(tf.constant(data), image.channels),
                            image).numpy()
    except tf.errors.InvalidArgumentError as exc:
        raise ModelprepError(f"image {name} does not decode in the graph: "
                             f"{str(exc).strip().splitlines()[0][:200]}") from exc


def _python_pixels(py: Any, data: bytes, image: ImageSpec, name: str) -> np.ndarray:
    from functions.errors import InvalidImage

    try:
        return py.resize(py.decode_image(data, image.channels), image)
    except InvalidImage as exc:
        raise ModelprepError(f"image {name} does not decode in Python: {exc.message}") from exc


# --- helpers ------------------------------------------------------------------------


def _load_prepared(prepared: Path) -> ModelMetadata:
    if not prepared.is_dir():
        raise SourceError(f"prepared model {prepared} does not exist")
    try:
        return ModelMetadata.load(prepared)
    except MetadataError as exc:
        raise SourceError(f"prepared model {prepared}: {exc}") from exc


def _image_spec(served: ModelMetadata) -> ImageSpec:
    spec = served.image_input
    if spec is None or spec.image is None:
        raise SpecMismatch(f"model {served.name!r} has no image input; LiteRT flavours are "
                           "for image models")
    return spec.image


def _original_path(served: ModelMetadata) -> Path:
    path = served.source.get("path")
    if not path:
        raise SourceError("the prepared model's metadata does not say where its original "
                          "is; give it (--original)")
    return Path(path)


def _check_flavours(flavours: Sequence[str]) -> tuple[str, ...]:
    if not flavours:
        raise ModelprepError("no LiteRT flavour asked for")
    for flavour in flavours:
        if flavour not in LITERT_FLAVOURS:
            raise ModelprepError(f"LiteRT flavour must be one of {', '.join(LITERT_FLAVOURS)}, "
                                 f"got {flavour!r}")
    return tuple(dict.fromkeys(flavours))


def _load_original(original: Path, wanted: str, served: ModelMetadata) -> tuple[Any, Any]:
    import tensorflow as tf

    if not (original / "saved_model.pb").is_file():
        raise SourceError(f"original model {original} is not a SavedModel directory")
    try:
        loaded = tf.saved_model.load(str(original))
    except Exception as exc:  # TF raises many kinds; all mean "cannot load"
        raise SourceError(f"cannot load {original}: {first_line(exc)}") from exc
    signature = served.source.get("signature") or wanted
    if signature not in loaded.signatures:
        raise SourceError(f"original model {original} has no signature {signature!r}; it has "
                          f"{sorted(loaded.signatures)}")
    return loaded, loaded.signatures[signature]


def _single_input(fn: Any, original: Path) -> tuple[str, Any]:
    _, kwargs = fn.structured_input_signature
    if len(kwargs) != 1:
        raise SpecMismatch(f"LiteRT flavours take one image input; {original} has "
                           f"{sorted(kwargs)}")
    (name, spec), = kwargs.items()
    return name, spec


def _model_values(encoded: list[bytes], image: ImageSpec, input_spec: Any,
                  what: str) -> np.ndarray:
    """Encoded images to the original input's values, as the litert backend computes them."""
    from functions import pixels as py
    from functions.errors import InvalidImage

    try:
        values = py.image_batch(encoded, image)
    except InvalidImage as exc:
        raise ModelprepError(f"a {what} does not decode: {exc.message}") from exc
    shape = [-1 if d is None else int(d) for d in input_spec.shape.as_list()]
    if any(d < 0 for d in shape[1:]):
        return values
    return values.reshape(len(encoded), *shape[1:]).astype(np.float32)


def _convert(tf: Any, loaded: Any, fn: Any, dataset: np.ndarray | None,
             input_name: str) -> bytes:
    """TFLiteConverter on the loaded signature (its variables are frozen on the way)."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], loaded)
    if dataset is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            {input_name: dataset[i:i + 1]} for i in range(len(dataset)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings():  # TF's calibrator still uses its own interpreter
            warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
            return converter.convert()
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ...
        raise SpecMismatch(f"LiteRT cannot convert the model: {first_line(exc)}") from exc


def _write_flavour(out: Path, flavour: str, content: bytes, served: ModelMetadata,
                   image: ImageSpec, original: Path, input_name: str,
                   calibration: str | None) -> FlavourFile:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise SpecMismatch(f"the converted model has signatures {sorted(signatures)}; "
                           "expected one")
    (key,) = signatures
    runner = interpreter.get_signature_runner(key)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    detail = inputs[input_name]
    pixel_input = InputSpec(name=input_name, kind="pixels", dtype=_dtype(detail),
                            shape=_shape(detail), image=image,
                            quantization=_quantization(detail))
    roles = {(o.original or o.name): o.role for o in served.outputs}
    metadata = ModelMetadata(
        name=served.name,
        inputs=(pixel_input,),
        outputs=tuple(OutputSpec(name=name, role=roles.get(name, "tensor"), dtype=_dtype(d),
                                 shape=_shape(d), quantization=_quantization(d))
                      for name, d in sorted(outputs.items())),
        signature=key,
        labels=served.labels,
        source={"path": str(original), "format": "saved_model",
                "signature": served.source.get("signature") or served.signature,
                "litert_flavour": flavour,
                **({"calibration": calibration} if calibration else {})},
    )
    model_path, metadata_path = write_flavour(out, flavour, content, metadata)
    return FlavourFile(flavour, model_path, metadata_path, metadata)


def _exported(folder: Path, flavours: Sequence[str] | None) -> list[tuple[str, tuple[Path,
                                                                                    Path]]]:
    wanted = _check_flavours(flavours) if flavours else LITERT_FLAVOURS
    found = []
    for flavour in wanted:
        model_name, metadata_name = litert_files(flavour)
        if (folder / model_name).is_file():
            found.append((flavour, (folder / model_name, folder / metadata_name)))
        elif flavours:
            raise SourceError(f"no {flavour} LiteRT flavour at {folder / model_name}; export "
                              "it with `modelprep litert`")
    if not found:
        raise SourceError(f"no LiteRT flavour in {folder}; export them with `modelprep litert`")
    return found


def _load_flavour_metadata(path: Path) -> ModelMetadata:
    try:
        return ModelMetadata.from_json(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, MetadataError) as exc:
        raise SourceError(f"LiteRT metadata {path} is missing or unusable: {exc}") from exc


def write_flavour(out: Path, flavour: str, content: bytes, metadata: ModelMetadata
                  ) -> tuple[Path, Path]:
    """The flavour's ``.tflite`` and its metadata ``.json`` in ``out``, each written whole."""
    out.mkdir(parents=True, exist_ok=True)
    model_name, metadata_name = litert_files(flavour)
    model_path, metadata_path = out / model_name, out / metadata_name
    _write_atomically(model_path, content)
    _write_atomically(metadata_path, metadata.to_json().encode("utf-8"))
    return model_path, metadata_path


def _write_atomically(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    tmp.replace(path)


def _dtype(detail: dict) -> str:
    return np.dtype(detail["dtype"]).name


def _shape(detail: dict) -> tuple[int, ...]:
    return tuple(int(d) for d in detail["shape_signature"])


def _quantization(detail: dict) -> Quantization | None:
    scale, zero_point = detail["quantization"]
    if scale == 0.0:
        return None
    return Quantization(_dtype(detail), float(scale), int(zero_point))
