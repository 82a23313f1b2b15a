"""Wrap a model so that it takes what clients send and returns what they can afford.

The wrapped SavedModel's ``serving_default`` feeds each input of the source
signature through its input layer (see `modelprep.options`):

* ``image_bytes``/``image_base64``: a batch of encoded images (``tf.string
  [None]``, named ``image_bytes``/``image_b64``), decoded, resized and normalised
  in the graph, then reshaped to whatever the original input wants (``[-1, 784]``
  included);
* ``quantized_pixels``: uint8/int8 pixels ``[None, H, W, C]``, dequantized in the
  graph to the model's input values;
* ``tensor``: the input as it is (image metadata, anchors, plain numbers);

then calls the source signature and passes each output through its output layer:
unchanged, quantized to uint8/int8 (clipped, never wrapped), or PNG-encoded under
a ``_bytes`` alias.  Next to it goes the `modelmeta` file the function reads.
Other signatures of the source can be kept unchanged beside it.

The result is written to a temporary directory beside ``out`` and renamed into
place, so a half-written model is never left where a server could load it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelmeta import ModelMetadata, Normalization
from modelprep.errors import (
    ModelprepError,
    PreprocessingHintWarning,
    SourceError,
    SpecMismatch,
    first_line,
)
from modelprep.options import InputLayer, OutputLayer
from modelprep.plan import (
    InputPlan,
    OutputPlan,
    format_shape,
    plan_inputs,
    plan_outputs,
)
from modelprep.sources import DEFAULT_SIGNATURE, PREDICT_METHOD, Signature, Source, load_source


@dataclass(frozen=True)
class WrapOptions:
    """What to build; every field has a CLI flag and a recipe key of the same name.

    ``WrapOptions(inputs={"input_image": InputLayer.parse("quantized_pixels:int8"),
    "input_anchors": InputLayer("tensor")}, outputs={"mask": OutputLayer.parse(
    "uint8:0:1")})`` is ``--input input_image=quantized_pixels:int8 --input
    input_anchors=tensor --quantize-output mask=uint8:0:1``.
    """

    name: str | None = None
    """Model name recorded in the metadata; default: the output directory's name."""
    signature: str = DEFAULT_SIGNATURE
    """The source signature to wrap; the result is always ``serving_default``."""
    keep_signatures: bool | tuple[str, ...] = False
    """Keep the source's other signatures (True: all of them) unchanged beside it."""
    graph_inputs: Mapping[str, str] | None = None
    graph_outputs: Mapping[str, str] | None = None
    """A frozen GraphDef's input and output tensors, ``{alias: "op:0"}``."""
    image_input: str | None = None
    """Which input takes the image (short for ``inputs={name: InputLayer(input_kind)}``)."""
    input_kind: str = "image_bytes"
    """The layer of the image input when `inputs` does not give it."""
    inputs: Mapping[str, InputLayer] = field(default_factory=dict)
    """Per-input layers; inputs not named take the image or pass through (see plan)."""
    height: int | None = None
    width: int | None = None
    channels: int | None = None
    normalization: Normalization | None = None
    """Default: unit (p/255) for float inputs, raw (p) for integer inputs."""
    resize: str = "stretch"
    labels: tuple[str, ...] | None = None
    output_roles: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, OutputLayer] = field(default_factory=dict)
    """Per-output layers; outputs not named are returned unchanged."""
    freeze: bool | None = None
    """Write the weights into the graph as constants (faster on CPU, more memory; see
    `FREEZE_AUTO_LIMIT`): None decides by their size, False keeps variables."""
    overwrite: bool = False


FREEZE_AUTO_LIMIT = 16 * 2**20
"""Weights up to this many bytes are frozen into the graph unless `WrapOptions.freeze` says.

TensorFlow's oneDNN kernels on x86 keep a convolution's filter in their own layout only
when the filter is a constant, and grappler folds the batch-norm arithmetic into constant
filters; with variables both are redone at every call. On one intra-op thread (2 CPUs)
MobileNetV2 224 (13.5 MiB of weights) answers in 10.2 ms instead of 14.4 ms, ResNet50
(98 MiB) in 52 ms instead of 78 ms. The price is memory and the first call: TensorFlow
holds a constant graph several times over (as loaded, as optimised, as kernels): 10-16x the
weights more once warm and 18x more at the first call's peak (MobileNetV2: the function
1090 against 879 MiB warm; ResNet50 in a bare script 2.5 against 0.8 GiB peak, and a 6 s
first call). So only small models are frozen unless asked."""


def wrap(src: str | Path, out: str | Path, options: WrapOptions | None = None,
         progress: Callable[[str], None] = lambda _msg: None,
         warn: Callable[[str], None] | None = None) -> ModelMetadata:
    """Write the wrapped SavedModel of ``src`` at ``out`` and return its metadata.

    `warn` gets each hint of the source that disagrees with the options (see
    `modelprep.hints`); by default it is a `PreprocessingHintWarning`.
    """
    import tensorflow as tf

    options = options or WrapOptions()
    out = Path(out)
    if out.exists() and not options.overwrite:
        raise ModelprepError(f"{out} already exists; pass --overwrite to replace it")
    progress(f"loading {src}")
    source = load_source(src, options.signature, graph_inputs=options.graph_inputs,
                         graph_outputs=options.graph_outputs, progress=progress)
    inputs = plan_inputs(source.signature, source.inputs, options)
    outputs = plan_outputs(source.signature, source.outputs, options)
    kept = _kept_signatures(source, options.keep_signatures, progress)
    _warn_about_hints(source, inputs, options, warn or _hint_warning)

    module = tf.Module()
    module.serve = tf.function(_serve_function(source.main, inputs, outputs),
                               input_signature=[p.tensor_spec() for p in inputs], autograph=False)
    progress("tracing the wrapped signature")
    concrete = module.serve.get_concrete_function()
    signatures = {DEFAULT_SIGNATURE: concrete}
    for key, sig in kept.items():
        signatures[key] = _passthrough_function(sig).get_concrete_function()

    frozen = _frozen(source, signatures, options.freeze, progress)
    if frozen is not None:
        signatures[DEFAULT_SIGNATURE] = frozen
        del module.serve  # its variables are not saved: the constants replace them
    wired = concrete.structured_outputs
    image = next((p for p in inputs if p.image is not None), None)
    described: dict[str, Any] = {"path": str(src), "format": source.format,
                                 "signature": source.signature}
    if image is not None:
        described.update(input=image.source, input_shape=format_shape(image.target.shape))
    if options.graph_inputs or options.graph_outputs:
        described.update(graph_inputs=dict(options.graph_inputs or {}),
                         graph_outputs=dict(options.graph_outputs or {}))
    if kept:
        described["kept_signatures"] = sorted(kept)
    if frozen is not None:
        described["weights"] = "constants"
    metadata = ModelMetadata(
        name=options.name or out.name,
        inputs=tuple(p.metadata() for p in inputs),
        outputs=tuple(p.metadata(wired[p.wire]) for p in sorted(outputs, key=lambda p: p.wire)),
        labels=options.labels,
        source=described,
    )
    _check_labels(metadata)
    progress(f"saving {out}")
    with _atomic_dir(out, options.overwrite) as tmp:
        _save(module, None if frozen is not None else source.owner, signatures, tmp)
        _restore_methods(tmp, {k: s.method for k, s in kept.items()})
        metadata.save(tmp)
    return metadata


def _save(module: Any, owner: Any, signatures: dict[str, Any], out: Path) -> None:
    """Save the wrapped signatures with only the source state they read.

    A restored TF2 SavedModel brings its whole object graph (every Keras layer as an
    object, its own functions); tracked as it is, all of it would be written again and
    restored at every cold start, although the wrapped signatures read only its
    variables. So when the source holds nothing but variables, functions and plain
    containers, the wrapped model keeps just the variables its signatures capture: the
    bench MobileNetV2 224 then loads in 0.67 s instead of 1.10 s (its saved_model.pb
    0.97 MB instead of 1.44 MB). A source with anything else (assets, lookup tables and
    other resources) is kept whole, as is any whose lean save TensorFlow refuses.
    """
    import tensorflow as tf

    if owner is not None and _only_variables_and_functions(owner):
        module.source_variables = _captured_variables(signatures.values())
        try:
            tf.saved_model.save(module, str(out), signatures=signatures)
            return
        except (AssertionError, ValueError):  # a capture the variables do not cover
            del module.source_variables
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
    if owner is not None:
        module.original = owner  # tracked whole, so everything it holds is saved with us
    tf.saved_model.save(module, str(out), signatures=signatures)


def _frozen(source: Source, signatures: dict[str, Any], freeze: bool | None,
            progress: Callable[[str], None]) -> Any:
    """``serving_default`` with its variables as constants, when `freeze` asks or (None)
    the weights are small enough; None where they stay variables.

    Only a source whose state is all variables can be frozen (a lookup table or an
    asset stays a resource), and not beside kept signatures, which would need the
    variables as well.
    """
    concrete = signatures[DEFAULT_SIGNATURE]
    if freeze is False or not concrete.variables:
        return None  # a TF1 or GraphDef source has been frozen on loading
    size = sum(v.shape.num_elements() * v.dtype.size for v in concrete.variables)
    reason = None
    if len(signatures) > 1:
        reason = "kept signatures read the variables too"
    elif source.owner is None or not _only_variables_and_functions(source.owner):
        reason = "the source holds state other than variables"
    elif freeze is None and size > FREEZE_AUTO_LIMIT:
        reason = (f"{size / 2**20:.0f} MiB of weights, above the {FREEZE_AUTO_LIMIT // 2**20}"
                  " MiB that are frozen unless --freeze is given")
    frozen = None
    if reason is None:
        try:
            frozen = _constant_function(concrete)
        except Exception as exc:  # TensorFlow's converter refuses graphs it cannot fold
            reason = f"TensorFlow could not freeze it: {first_line(exc)}"
    if reason is not None:
        if freeze:
            raise ModelprepError(f"cannot freeze the weights: {reason}")
        progress(f"keeping the weights as variables: {reason}")
        return None
    progress(f"froze {len(concrete.variables)} variables ({size / 2**20:.1f} MiB) "
             "into the graph")
    return frozen


def _constant_function(concrete: Any) -> Any:
    """`concrete` with its variables read once, as constants, under the same signature."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(concrete)
    structure = concrete.structured_outputs

    def serve(*args):
        return tf.nest.pack_sequence_as(structure, frozen(*args))

    specs = concrete.structured_input_signature[0]
    return tf.function(serve, input_signature=specs, autograph=False).get_concrete_function()


def _only_variables_and_functions(owner: Any) -> bool:
    import tensorflow as tf
    from tensorflow.python.trackable.data_structures import TrackableDataStructure

    for obj in tf.train.TrackableView(owner).descendants():
        stateless = (tf.Variable, TrackableDataStructure,
                     tf.types.experimental.GenericFunction, tf.types.experimental.ConcreteFunction)
        if not isinstance(obj, stateless) and type(obj).__name__ not in _PLAIN_OBJECTS:
            return False
    return True


_PLAIN_OBJECTS = frozenset({"_UserObject", "AutoTrackable", "Module", "_SignatureMap",
                            "RestoredFunction"})
"""Restored or built objects that hold nothing but other objects (no state of their own)."""


def _captured_variables(functions: Any) -> list[Any]:
    """Every variable the concrete functions capture, once each, in a stable order."""
    seen: dict[int, Any] = {}
    for function in functions:
        for variable in function.variables:
            seen.setdefault(id(variable), variable)
    return list(seen.values())


def _warn_about_hints(source: Source, inputs: list[InputPlan], options: WrapOptions,
                      warn: Callable[[str], None]) -> None:
    image = next((p for p in inputs if p.image is not None), None)
    if image is None or image.image is None:
        return
    for hint in source.hints:
        message = hint.disagreement(image.image.normalization,
                                    explicit=options.normalization is not None)
        if message:
            warn(f"input {image.source!r}: {message}")


def _hint_warning(message: str) -> None:
    warnings.warn(message, PreprocessingHintWarning, stacklevel=4)


def wrap_summary(metadata: ModelMetadata) -> str:
    """One line on what the wrapped model takes and returns, as ``modelprep wrap`` prints it."""
    parts = []
    for spec in metadata.inputs:
        if spec.image is not None:
            image = spec.image
            detail = (f"{image.height}x{image.width}x{image.channels}, "
                      f"{image.normalization.mode}")
            if spec.quantization is not None:
                detail += f", {spec.quantization.dtype}"
        else:
            detail = f"{spec.kind} {spec.dtype} {list(spec.shape)}"
        parts.append(f"input {spec.name!r} ({detail})")

    def output(spec) -> str:
        extra = [spec.encoding] if spec.encoding else []
        if spec.quantization is not None and not spec.encoding:
            extra.append(spec.quantization.dtype)
        return f"{spec.name} ({', '.join([spec.role, *extra])})"

    return ", ".join(parts) + ", outputs " + ", ".join(output(s) for s in metadata.outputs)


def _serve_function(source: Signature, inputs: list[InputPlan],
                    outputs: list[OutputPlan]) -> Callable[..., dict[str, Any]]:
    def serve(*args):
        feeds = {plan.source: _input_layer(plan, arg) for plan, arg in zip(inputs, args,
                                                                            strict=True)}
        results = source.fn(**feeds)
        return {plan.wire: _output_layer(plan, results[plan.source]) for plan in outputs}

    return serve


def _input_layer(plan: InputPlan, value):
    import tensorflow as tf

    from modelprep.input_ops import decode_base64_text, dequantize, image_batch, to_dtype

    kind = plan.layer.kind
    if kind == "tensor":
        return value
    assert plan.image is not None
    if kind == "quantized_pixels":
        assert plan.quantization is not None
        pixels = dequantize(value, plan.quantization)
    else:
        if kind == "image_base64":
            value = decode_base64_text(value)
        pixels = image_batch(value, plan.image)
    target_shape = [-1] + [int(d) for d in plan.target.shape[1:]]
    return to_dtype(tf.reshape(pixels, target_shape), plan.target.dtype)


def _output_layer(plan: OutputPlan, value):
    from modelprep.output_ops import encode_png_batch, quantize

    kind = plan.layer.kind
    if kind == "float":
        return value
    if kind == "quantize":
        assert plan.quantization is not None
        return quantize(value, plan.quantization)
    if plan.quantization is not None:
        value = quantize(value, plan.quantization)
    return encode_png_batch(value)


def _passthrough_function(sig: Signature):
    """A kept signature, re-traced so it saves with the same input and output keys."""
    import tensorflow as tf

    names = sorted(sig.inputs)
    specs = [tf.TensorSpec(sig.inputs[n].shape, sig.inputs[n].dtype, name=n) for n in names]

    def call(*args):
        return dict(sig.fn(**dict(zip(names, args, strict=True))))

    return tf.function(call, input_signature=specs, autograph=False)


def _kept_signatures(source: Source, keep: bool | tuple[str, ...],
                     progress: Callable[[str], None]) -> dict[str, Signature]:
    if keep is False or keep == ():
        return {}
    available = {**source.other_signatures}
    every = sorted({*available, *source.unusable_signatures})
    explicit = not isinstance(keep, bool)
    names = list(keep) if not isinstance(keep, bool) else every
    result = {}
    for name in names:
        if name == source.signature:
            raise SpecMismatch(f"signature {name!r} is the one being wrapped; it cannot also "
                               "be kept unchanged")
        if name == DEFAULT_SIGNATURE:
            if explicit:
                raise SpecMismatch(f"cannot keep {DEFAULT_SIGNATURE!r} unchanged: the wrapped "
                                   f"signature {source.signature!r} takes its place")
            progress(f"not keeping the source's {DEFAULT_SIGNATURE!r}: the wrapped signature "
                     "takes its place")
            continue
        if name in source.unusable_signatures:
            raise SourceError(f"cannot keep signature {name!r}: "
                              f"{source.unusable_signatures[name]}")
        if name not in available:
            raise SpecMismatch(f"no signature {name!r} to keep; the source's other signatures "
                               f"are {every or 'none'}")
        result[name] = available[name]
    return result


def _restore_methods(model_dir: Path, methods: Mapping[str, str]) -> None:
    """Give kept signatures their source method (``tf.saved_model.save`` writes every
    signature as predict; TF Serving's classify and regress APIs check the method)."""
    changed = {k: m for k, m in methods.items() if m and m != PREDICT_METHOD}
    if not changed:
        return
    from tensorflow.core.protobuf import saved_model_pb2

    pb = model_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(pb.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        for key, method in changed.items():
            if key in meta_graph.signature_def:
                meta_graph.signature_def[key].method_name = method
    pb.write_bytes(saved_model.SerializeToString())


def _check_labels(metadata: ModelMetadata) -> None:
    if not metadata.labels:
        return
    for out in metadata.outputs:
        if out.role in ("probabilities", "logits") and out.shape[-1] not in (-1, len(
                metadata.labels)):
            raise SpecMismatch(f"output {out.name!r} has {out.shape[-1]} classes but "
                               f"{len(metadata.labels)} labels were given")


@contextlib.contextmanager
def _atomic_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place on success."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.chmod(0o755)
    old = None
    if out.exists():
        old = out.with_name(tmp.name + ".old")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
