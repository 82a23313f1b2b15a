"""``modelprep verify``: proof that a prepared model still gives the original's answers.

Both models see the same sample images. The prepared model gets them as
clients send them (encoded bytes, base64 text or quantized pixels, as its
metadata says); the original gets the pixels its new input layer should
produce from them (see `modelprep.samples`). Then, per output:

* the prepared output is brought back to real values: PNG outputs decoded,
  quantized ones dequantized with the metadata's scale and zero point;
* the max absolute error against the original is measured. For a quantized
  output the original is first clipped to the representable range (clipping,
  not wrapping, is the declared behaviour, so the clipped values are counted
  and shown instead of failing), and the limit is the tolerance plus the
  rounding bound, half a quantization step;
* for classifier outputs, how often both pick the same class.

What the original is fed decides what the check can catch. By default it gets
the pixels the prepared model's *own* metadata says its input layer computes,
which proves the wrapping but not the metadata: a wrong ``--normalize`` passes.
An independent reference (`modelprep.reference`) closes that gap: with
``reference_preprocess`` the original is fed the preprocessing the user names
(and the declared normalisation is compared with it on the same pixels); with
``reference_outputs`` the prepared model's answers are compared with arrays the
user computed elsewhere; with both, with each.

The model passes when every output's error is within its limit and the
normalisations agree. `verify` returns the report; the CLI prints it and exits 4
(`VerificationFailed`) when it does not pass.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from functions.quantization import dequantize
from modelmeta import MetadataError, ModelMetadata, OutputSpec, Quantization
from modelprep.errors import (
    ModelprepError,
    SourceError,
    SpecMismatch,
    VerificationFailed,
    first_line,
)
from modelprep.reference import (
    NormalizationCheck,
    ReferenceOutputs,
    ReferencePreprocess,
    compare_normalization,
    describe_normalization,
)
from modelprep.samples import (
    SAMPLE_KINDS,
    build_feed,
    collect_images,
    to_dtype,
)

DEFAULT_TOLERANCE = 1e-4
"""Absolute: float32 models fed the same pixels agree far closer than this."""
DEFAULT_COUNT = 64
DEFAULT_BATCH_SIZE = 32
CLASSIFIER_ROLES = ("probabilities", "logits")
PNG_QUANTIZATION = Quantization("uint8", 1.0, 0)
"""What a PNG output without recorded quantization holds: the original's values, rounded."""


@dataclass(frozen=True)
class VerifyOptions:
    """How to verify; every field is a CLI flag and a recipe key of the same name."""

    images: Path | None = None
    """A folder of sample images (PNG, JPEG, GIF, BMP); default: generated ones."""
    samples: str = "auto"
    """Which generated images: auto, digits or synthetic (see `modelprep.samples`)."""
    count: int = DEFAULT_COUNT
    """At most this many images (or tensor samples)."""
    seed: int = 0
    tolerance: float = DEFAULT_TOLERANCE
    """Max absolute error allowed on every output, on top of a quantization bound."""
    output_tolerance: Mapping[str, float] = field(default_factory=dict)
    """Per-output tolerances that replace `tolerance`, by prepared output name."""
    batch_size: int = DEFAULT_BATCH_SIZE
    graph_inputs: Mapping[str, str] | None = None
    graph_outputs: Mapping[str, str] | None = None
    """A frozen GraphDef original's tensors, ``{alias: "op:0"}``, as given to wrap;
    default: what the metadata's ``source`` records, if anything."""
    reference_preprocess: ReferencePreprocess | None = None
    """The preprocessing the source model was trained with (a callable's dotted name or
    ``SCALE,OFFSET``): the original is fed it instead of the prepared model's declared
    preprocessing, and the two normalisations are compared."""
    reference_outputs: Path | None = None
    """An ``.npz`` of the answers the prepared model must give: one array per output (by
    the original's or the prepared model's name), one row per sample in verify's order."""


@dataclass(frozen=True)
class OutputCheck:
    """The comparison of one output of the prepared model with the original's."""

    name: str
    original_name: str
    role: str
    max_abs_error: float
    tolerance: float
    quantization_bound: float | None
    """Half a quantization step, when the output is quantized (or PNG-encoded)."""
    clipped: int
    """Values of the original outside the quantized range (compared after clipping)."""
    values: int
    argmax_agree: int | None
    """Samples whose top class is the same in both, for classifier outputs."""
    argmax_total: int
    reference: str = "original"
    """What it is compared with: ``original`` (the model) or ``outputs`` (the .npz)."""

    @property
    def limit(self) -> float:
        return self.tolerance + (self.quantization_bound or 0.0)

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.limit

    @property
    def argmax_agreement(self) -> float | None:
        if self.argmax_agree is None or not self.argmax_total:
            return None
        return self.argmax_agree / self.argmax_total

    def failure(self) -> str:
        against = "" if self.reference == "original" else " against the reference outputs"
        text = (f"output {self.name!r}{against}: max abs error {self.max_abs_error:.4g} is "
                f"over the limit {self.limit:.4g}")
        if self.quantization_bound is not None:
            text += (f" (tolerance {self.tolerance:g} + quantization bound "
                     f"{self.quantization_bound:.4g})")
        return text


@dataclass(frozen=True)
class VerifyReport:
    original: str
    prepared: str
    samples: int
    sample_description: str
    outputs: tuple[OutputCheck, ...]
    seconds: float
    reference: str = ""
    """What the prepared model was compared with, in a sentence."""
    normalization: NormalizationCheck | None = None
    """The declared normalisation against `VerifyOptions.reference_preprocess`."""
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        normalization_ok = self.normalization is None or self.normalization.passed
        return normalization_ok and all(check.passed for check in self.outputs)

    def output(self, name: str, reference: str | None = None) -> OutputCheck:
        for check in self.outputs:
            if check.name == name and reference in (None, check.reference):
                return check
        raise KeyError(f"no output {name!r}; have {[c.name for c in self.outputs]}")

    def failures(self) -> list[str]:
        failures = []
        if self.normalization is not None and not self.normalization.passed:
            failures.append(self.normalization.failure())
        return failures + [check.failure() for check in self.outputs if not check.passed]

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise VerificationFailed("; ".join(self.failures()))

    def format(self) -> str:
        """The report as the CLI prints it: a header and one aligned row per output."""
        head: tuple[str, ...] = ("output", "role", "max abs error", "limit", "quant bound",
                                 "clipped", "argmax agreement", "result")
        both = len({c.reference for c in self.outputs}) > 1
        if both:
            head = ("against", *head)
        rows = [head]
        for c in self.outputs:
            agreement = "-"
            if c.argmax_agreement is not None:
                agreement = f"{c.argmax_agree}/{c.argmax_total} ({100 * c.argmax_agreement:.1f}%)"
            name = c.name if c.name == c.original_name else f"{c.name} ({c.original_name})"
            row: tuple[str, ...] = (
                name, c.role, f"{c.max_abs_error:.3g}", f"{c.limit:.3g}",
                "-" if c.quantization_bound is None else f"{c.quantization_bound:.3g}",
                "-" if c.quantization_bound is None else f"{c.clipped}/{c.values}",
                agreement, "ok" if c.passed else "FAIL",
            )
            rows.append((c.reference, *row) if both else row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        table = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        verdict = "passed" if self.passed else "FAILED"
        head_lines = [f"verify {self.prepared} against {self.original}",
                      f"samples: {self.sample_description}"]
        if self.reference:
            head_lines.append(f"reference: {self.reference}")
        if self.normalization is not None:
            head_lines.append(self.normalization.summary())
        tail = [f"{verdict}: {sum(c.passed for c in self.outputs)} of {len(self.outputs)} "
                f"outputs within their limit ({self.seconds:.1f} s)"]
        return "\n".join([*head_lines, "", *table, "", *self.notes, *tail])


def verify(original: str | Path | None, prepared: str | Path,
           options: VerifyOptions | None = None,
           progress: Callable[[str], None] = lambda _msg: None) -> VerifyReport:
    """Run both models on the same samples and compare every output of the prepared one.

    `original` may be None only with `VerifyOptions.reference_outputs`: the prepared
    model is then compared with those arrays alone.
    """
    options = options or VerifyOptions()
    _check_options(options)
    if original is None and options.reference_outputs is None:
        raise ModelprepError("verify needs the original model, or reference outputs "
                             "(--reference-outputs X.npz) to compare the prepared model with")
    import tensorflow as tf

    started = time.monotonic()
    metadata = load_metadata(prepared)
    tolerances = _tolerances(metadata, options)
    image_spec = metadata.image_input
    reference_fn = None
    if options.reference_preprocess is not None:
        if image_spec is None:
            raise SpecMismatch(f"prepared model {prepared} has no image input; a reference "
                               "preprocessing applies to image inputs only")
        if original is None:
            raise ModelprepError("a reference preprocessing feeds the original model: give "
                                 "the original too")
        reference_fn = options.reference_preprocess.resolve()
    expected = (ReferenceOutputs.load(options.reference_outputs)
                if options.reference_outputs is not None else None)

    progress(f"loading the prepared model {prepared}")
    loaded = _load_saved_model(prepared)
    if metadata.signature not in loaded.signatures:
        raise SpecMismatch(f"prepared model {prepared} has no signature {metadata.signature!r} "
                           f"(its metadata names it); it has {sorted(loaded.signatures)}")
    prepared_fn = loaded.signatures[metadata.signature]
    _check_prepared_inputs(metadata, prepared_fn)

    source = None
    if original is not None:
        from modelprep.sources import load_source

        progress(f"loading the original model {original}")
        source = load_source(
            original, metadata.source.get("signature") or "serving_default",
            graph_inputs=options.graph_inputs or metadata.source.get("graph_inputs"),
            graph_outputs=options.graph_outputs or metadata.source.get("graph_outputs"),
            progress=progress)
        input_map = _input_map(metadata, source.inputs)
        output_map = _output_map(metadata, source.outputs)
    else:
        output_map = {}

    samples = collect_images(image_spec.image if image_spec else None, images=options.images,
                             samples=options.samples, count=options.count, seed=options.seed)
    total = len(samples.images) if image_spec else options.count
    expected_arrays: dict[str, np.ndarray] = {}
    if expected is not None:
        expected.check_samples([s.name for s in samples.images], total)
        for spec in metadata.outputs:
            if source is not None and not _has_array(expected, spec, output_map):
                continue  # checked against the original only
            key, expected_arrays[spec.name] = expected.array_for(spec, output_map.get(spec.name))
            output_map.setdefault(spec.name, key)
    rng = np.random.default_rng(options.seed)
    got: dict[str, list[np.ndarray]] = {o.name: [] for o in metadata.outputs}
    want: dict[str, list[np.ndarray]] = {o.name: [] for o in metadata.outputs}
    pixels: list[np.ndarray] = []
    reference_values: list[np.ndarray] = []
    batches = math.ceil(total / options.batch_size)
    for number, start in enumerate(range(0, total, options.batch_size), 1):
        size = min(options.batch_size, total - start)
        chunk = samples.images[start:start + size] if image_spec else ()
        progress(f"batch {number}/{batches}: {size} samples")
        feed = build_feed(metadata, chunk, size, rng, first_index=start)
        prepared_out = _call(tf, prepared_fn, feed.prepared, f"prepared model {prepared}")
        for spec in metadata.outputs:
            if spec.name not in prepared_out:
                raise SpecMismatch(f"the prepared model does not return output {spec.name!r} "
                                   f"(its metadata names it); it returns {sorted(prepared_out)}")
            got[spec.name].append(prepared_out[spec.name])
        if source is None:
            continue
        reference = dict(feed.reference)
        if reference_fn is not None and image_spec is not None and feed.pixels is not None:
            values = reference_fn(feed.pixels)
            pixels.append(feed.pixels)
            reference_values.append(values)
            reference[image_spec.name] = values
        original_in = {input_map[name]: _fit(tf, value, source.inputs[input_map[name]],
                                             input_map[name])
                       for name, value in reference.items()}
        original_out = _call(tf, source.fn, original_in, f"original model {original}")
        for spec in metadata.outputs:
            want[spec.name].append(original_out[output_map[spec.name]])

    checks: list[OutputCheck] = []
    for spec in metadata.outputs:
        result = np.concatenate(got[spec.name])
        if source is not None:
            checks.append(compare_output(spec, output_map[spec.name], result,
                                         np.concatenate(want[spec.name]), tolerances[spec.name]))
        if spec.name in expected_arrays:
            checks.append(dataclasses.replace(
                compare_output(spec, output_map[spec.name], result, expected_arrays[spec.name],
                               tolerances[spec.name]), reference="outputs"))
    normalization = None
    if reference_fn is not None and pixels and image_spec is not None \
            and image_spec.image is not None and options.reference_preprocess is not None:
        normalization = compare_normalization(
            image_spec.image.normalization, options.reference_preprocess, reference_fn,
            np.concatenate(pixels), np.concatenate(reference_values))
    return VerifyReport(original=str(original) if original is not None
                        else f"the reference outputs {options.reference_outputs}",
                        prepared=str(prepared), samples=total,
                        sample_description=samples.description, outputs=tuple(checks),
                        seconds=time.monotonic() - started,
                        reference=_describe_reference(metadata, options, source is not None),
                        normalization=normalization,
                        notes=_notes(checks, normalization, metadata, options))


def _has_array(expected: ReferenceOutputs, spec: OutputSpec,
               output_map: Mapping[str, str]) -> bool:
    try:
        expected.array_for(spec, output_map.get(spec.name))
    except SpecMismatch:
        return False
    return True


def _describe_reference(metadata: ModelMetadata, options: VerifyOptions,
                        with_original: bool) -> str:
    parts = []
    image = metadata.image_input
    if with_original:
        if options.reference_preprocess is not None:
            parts.append(f"the original model fed {options.reference_preprocess} "
                         "(--reference-preprocess)")
        elif image is not None and image.image is not None:
            parts.append("the original model fed the prepared model's own preprocessing "
                         f"({describe_normalization(image.image.normalization)})")
        else:
            parts.append("the original model")
    if options.reference_outputs is not None:
        parts.append(f"the outputs in {options.reference_outputs}")
    return "; ".join(parts)


def _notes(checks: list[OutputCheck], normalization: NormalizationCheck | None,
           metadata: ModelMetadata, options: VerifyOptions) -> tuple[str, ...]:
    image = metadata.image_input
    if image is None or image.image is None:
        return ()
    if options.reference_preprocess is None and options.reference_outputs is None:
        return ("note: this proves the wrapping, not the normalisation: a model wrapped with "
                "the wrong --normalize passes too. Add --reference-preprocess (the model's "
                "own preprocessing function, or SCALE,OFFSET) or --reference-outputs X.npz.",)
    failed_outputs = any(c.reference == "outputs" and not c.passed for c in checks)
    if failed_outputs and normalization is None:
        return (f"note: the prepared model normalises pixels as "
                f"{describe_normalization(image.image.normalization)}; if the model was "
                "trained otherwise, wrap it again with the right --normalize.",)
    return ()


def load_metadata(prepared: str | Path) -> ModelMetadata:
    """The prepared model's metadata, with loading problems as `SourceError`s."""
    path = Path(prepared)
    if not path.is_dir():
        raise SourceError(f"prepared model {path} does not exist")
    try:
        return ModelMetadata.load(path)
    except MetadataError as exc:
        raise SourceError(f"prepared model {path}: {exc}") from exc


def compare_output(spec: OutputSpec, original_name: str, got: np.ndarray, want: np.ndarray,
                   tolerance: float) -> OutputCheck:
    """Compare one prepared output (as returned by the model) with the original's."""
    quant: Quantization | None = spec.quantization
    if spec.encoding == "png":
        got = _decode_pngs(spec.name, got, want, original_name)
        quant = quant or PNG_QUANTIZATION
    elif quant is not None and got.dtype != np.dtype(quant.dtype):
        raise SpecMismatch(f"output {spec.name!r} is {got.dtype}, but the metadata says it is "
                           f"quantized to {quant.dtype}")
    if got.shape != want.shape:
        raise SpecMismatch(f"output {spec.name!r} has shape {list(got.shape)} but the "
                           f"original's {original_name!r} has {list(want.shape)}")
    argmax_agree = None
    if want.dtype == object or got.dtype == object:
        error = 0.0 if np.array_equal(got, want) else math.inf
        return OutputCheck(spec.name, original_name, spec.role, error, tolerance, None, 0,
                           int(want.size), None, 0)
    target = want.astype(np.float64)
    bound = None
    clipped = 0
    if quant is not None:
        lo, hi = quant.real_range
        clipped = int(np.count_nonzero((target < lo) | (target > hi)))
        # NaN has no integer: the output layer writes the zero point, which is real 0
        target = np.clip(np.where(np.isnan(target), 0.0, target), lo, hi)
        values = dequantize(got, quant).astype(np.float64)
        bound = quant.scale / 2
    else:
        values = got.astype(np.float64)
    count = len(want) if want.ndim else 0
    if spec.role in CLASSIFIER_ROLES and want.ndim >= 2 and count:
        same = (values.reshape(count, -1).argmax(axis=1)
                == want.astype(np.float64).reshape(count, -1).argmax(axis=1))
        argmax_agree = int(np.count_nonzero(same))
    return OutputCheck(spec.name, original_name, spec.role, max_abs_error(values, target),
                       tolerance, bound, clipped, int(want.size), argmax_agree,
                       count if argmax_agree is not None else 0)


def max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest ``|a - b|``; equal values (infinities, NaN with NaN) count as 0, a NaN
    against a number as infinity."""
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff = np.where(same, 0.0, diff)
    return float(np.where(np.isnan(diff), math.inf, diff).max())


def _decode_pngs(name: str, got: np.ndarray, want: np.ndarray, original_name: str) -> np.ndarray:
    import tensorflow as tf

    if got.ndim != 1:
        raise SpecMismatch(f"output {name!r} is PNG-encoded and should hold one image per "
                           f"batch item, but has shape {list(got.shape)}")
    per_item = want.shape[1:]
    images = []
    for i, data in enumerate(got):
        try:
            pixels = tf.io.decode_png(data, channels=0, dtype=tf.uint8).numpy()
        except tf.errors.InvalidArgumentError as exc:
            raise SpecMismatch(f"output {name!r} item {i} is not a PNG image: "
                               f"{first_line(exc)}") from exc
        if pixels.size != int(np.prod(per_item)):
            raise SpecMismatch(f"output {name!r} decodes to {'x'.join(map(str, pixels.shape))} "
                               f"images, but the original's {original_name!r} items are "
                               f"{list(per_item)}")
        images.append(pixels.reshape(per_item))
    return np.stack(images) if images else np.zeros((0, *per_item), np.uint8)


def _check_options(options: VerifyOptions) -> None:
    if options.samples not in SAMPLE_KINDS:
        raise ModelprepError(f"samples must be one of {', '.join(SAMPLE_KINDS)}, "
                             f"got {options.samples!r}")
    for what, count in (("count", options.count), ("batch_size", options.batch_size)):
        if count < 1:
            raise ModelprepError(f"{what} must be at least 1, got {count}")
    tolerances: list[tuple[str, float]] = [("tolerance", options.tolerance),
                                           *options.output_tolerance.items()]
    for name, value in tolerances:
        if not (math.isfinite(value) and value >= 0):
            raise ModelprepError(f"tolerance for {name!r} must be a non-negative number, "
                                 f"got {value!r}")


def _tolerances(metadata: ModelMetadata, options: VerifyOptions) -> dict[str, float]:
    names = [o.name for o in metadata.outputs]
    for name in options.output_tolerance:
        if name not in names:
            raise SpecMismatch(f"a tolerance is given for output {name!r}, but the prepared "
                               f"model's outputs are {names}")
    return {name: float(options.output_tolerance.get(name, options.tolerance)) for name in names}


def _load_saved_model(path: str | Path) -> Any:
    import tensorflow as tf

    try:
        return tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many kinds; all mean "cannot load"
        raise SourceError(f"cannot load SavedModel {path}: {first_line(exc)}") from exc


def _check_prepared_inputs(metadata: ModelMetadata, fn: Any) -> None:
    _, kwargs = fn.structured_input_signature
    wanted = sorted(s.name for s in metadata.inputs)
    if sorted(kwargs) != wanted:
        raise SpecMismatch(f"the prepared signature {metadata.signature!r} takes "
                           f"{sorted(kwargs)} but its metadata describes inputs {wanted}")


def _input_map(metadata: ModelMetadata, original_inputs: Mapping[str, Any]) -> dict[str, str]:
    """Prepared input name to the original input it feeds: the metadata's ``original``;
    without one, the image input feeds the input recorded in ``source``, others the one
    of the same name."""
    mapping = {}
    image = metadata.image_input
    for spec in metadata.inputs:
        name = spec.original or spec.name
        if spec.original is None and image is not None and spec is image:
            name = metadata.source.get("input") or spec.name
        if name not in original_inputs:
            raise SpecMismatch(f"prepared input {spec.name!r} feeds original input {name!r}, "
                               f"which the original does not have; it has "
                               f"{sorted(original_inputs)}")
        mapping[spec.name] = name
    unfed = sorted(set(original_inputs) - set(mapping.values()))
    if unfed:
        raise SpecMismatch(f"original input(s) {unfed} get no value: no prepared input maps "
                           "to them")
    return mapping


def _output_map(metadata: ModelMetadata, original_outputs: Mapping[str, Any]) -> dict[str, str]:
    """Prepared output name to the original's: the metadata's ``original``; without one,
    the same name, or that name without the ``_bytes`` suffix of PNG outputs."""
    mapping = {}
    for spec in metadata.outputs:
        candidates = [spec.original] if spec.original else [spec.name]
        if spec.original is None and spec.name.endswith("_bytes"):
            candidates.append(spec.name.removesuffix("_bytes"))
        found = next((c for c in candidates if c in original_outputs), None)
        if found is None:
            raise SpecMismatch(f"prepared output {spec.name!r} comes from original output "
                               f"{candidates[0]!r}, which is not among the original's outputs "
                               f"{sorted(original_outputs)}")
        mapping[spec.name] = found
    return mapping


def _fit(tf: Any, value: np.ndarray, spec: Any, name: str) -> Any:
    """Reshape a reference batch to what the original input wants, and convert it to the
    input's dtype the way the prepared graph does (integers rounded and clipped)."""
    dims = spec.shape.as_list() if spec.shape.rank is not None else None
    if dims is not None:
        rest = dims[1:]
        fits = len(rest) == value.ndim - 1 and all(
            d is None or d == v for d, v in zip(rest, value.shape[1:], strict=True))
        if not fits:
            target = [len(value)] + [-1 if d is None else d for d in rest]
            try:
                value = value.reshape(target)
            except ValueError as exc:
                shape = "[" + ", ".join("-1" if d is None else str(d) for d in dims) + "]"
                raise SpecMismatch(f"original input {name!r} is {shape}; samples of shape "
                                   f"{list(value.shape)} do not fit it") from exc
    if value.dtype != object and spec.dtype.is_numpy_compatible:
        value = to_dtype(value, spec.dtype.as_numpy_dtype)
    return tf.constant(value, dtype=spec.dtype)


def _call(tf: Any, fn: Any, inputs: Mapping[str, Any], what: str) -> dict[str, np.ndarray]:
    try:
        outputs = fn(**{name: tf.constant(v) if isinstance(v, np.ndarray) else v
                        for name, v in inputs.items()})
    except (tf.errors.OpError, TypeError, ValueError) as exc:
        raise ModelprepError(f"the {what} failed on the samples: {first_line(exc)}") from exc
    return {name: value.numpy() for name, value in outputs.items()}
