"""Loading a source model, of any kind the field ships, as callable signatures.

Whatever the source format, wrapping (and verifying) needs the same things: a
function to call with keyword tensors, the specs of its inputs and outputs,
and the object that owns its variables (so that saving the wrapper saves them
too).  The kind is told from the path:

* a directory with ``saved_model.pb``: a TF2 SavedModel (``tf.saved_model.save``)
  or a TF1 one (``SavedModelBuilder``, frozen first: see `modelprep.tf1`);
* a TF Serving model base (numeric version folders): its highest version;
* a ``.keras``, ``.h5`` or ``.hdf5`` file: a Keras model, whose only signature
  (``serving_default``) is its call in inference mode;
* any other ``.pb`` file: a frozen GraphDef, whose inputs and outputs are named
  by the caller (``graph_inputs``/``graph_outputs``, ``{alias: "op:0"}``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelprep.errors import SourceError, first_line
from modelprep.hints import PreprocessHint, keras_hints

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
FORMATS = ("saved_model", "saved_model_tf1", "keras", "graph_def")
"""`Source.format` values: TF2 SavedModel, TF1 SavedModel, Keras file, frozen GraphDef."""


@dataclass
class Signature:
    key: str
    fn: Callable[..., Mapping[str, Any]]
    """Takes the inputs as keyword tensors, returns a dict of output tensors; works
    eagerly and inside a `tf.function`."""
    inputs: dict[str, Any]
    """Input name to `tf.TensorSpec`."""
    outputs: dict[str, Any]
    """Output name to `tf.TensorSpec`."""
    method: str = PREDICT_METHOD
    """The SignatureDef method (TF Serving's classify and regress APIs need theirs)."""


@dataclass
class Source:
    main: Signature
    """The signature to wrap."""
    owner: Any
    """The loaded object that tracks the variables (None when the graph holds them as
    constants); the wrapper keeps a reference."""
    format: str
    path: str
    """The model actually loaded (the version folder of a TF Serving model base)."""
    other_signatures: dict[str, Signature] = field(default_factory=dict)
    unusable_signatures: dict[str, str] = field(default_factory=dict)
    """Other signatures that cannot be called here, with the reason."""
    hints: tuple[PreprocessHint, ...] = ()
    """What the source says about the pixels it wants (see `modelprep.hints`)."""

    @property
    def signature(self) -> str:
        return self.main.key

    @property
    def fn(self) -> Callable[..., Mapping[str, Any]]:
        return self.main.fn

    @property
    def inputs(self) -> dict[str, Any]:
        return self.main.inputs

    @property
    def outputs(self) -> dict[str, Any]:
        return self.main.outputs


def source_kind(path: Path) -> str:
    """``saved_model``, ``keras`` or ``graph_def``, from the path alone."""
    if path.is_dir():
        return "saved_model"
    if path.name in ("saved_model.pb", "saved_model.pbtxt"):
        return "saved_model"
    if path.suffix.lower() in KERAS_SUFFIXES:
        return "keras"
    if path.suffix.lower() == ".pb":
        return "graph_def"
    raise SourceError(f"cannot tell what kind of model {path} is: expected a SavedModel "
                      "directory, a TF Serving model base, a Keras .keras/.h5 file or a "
                      "frozen GraphDef .pb")


def load_source(path: str | Path, signature: str = DEFAULT_SIGNATURE, *,
                graph_inputs: Mapping[str, str] | None = None,
                graph_outputs: Mapping[str, str] | None = None,
                progress: Callable[[str], None] = lambda _msg: None) -> Source:
    """Load the model at `path` with `signature` as its main signature.

    ``graph_inputs``/``graph_outputs`` name a frozen GraphDef's tensors
    (``{"images": "input:0"}``) and apply to nothing else.
    """
    path = Path(path)
    if not path.exists():
        raise SourceError(f"source model {path} does not exist")
    kind = source_kind(path)
    if kind != "graph_def" and (graph_inputs or graph_outputs):
        raise SourceError(f"{path} is not a frozen GraphDef; --graph-inputs and "
                          "--graph-outputs apply only to .pb graph files")
    if kind == "keras":
        return _keras(path, signature)
    if kind == "graph_def":
        return _graph_def(path, signature, graph_inputs, graph_outputs, progress)
    return _saved_model(path if path.is_dir() else path.parent, signature, progress)


# --- SavedModels -----------------------------------------------------------------


def _saved_model(path: Path, signature: str, progress) -> Source:
    from modelprep.inspect import describe

    info = describe(path)  # SourceError with a precise message when it is not one
    model_dir = Path(info.path)
    if info.model_base is not None:
        progress(f"TF Serving model base: loading version {info.versions[-1]} ({model_dir})")
    methods = {s.key: s.method or PREDICT_METHOD for s in info.signatures}
    if signature not in methods:
        raise SourceError(f"SavedModel {model_dir} has no signature {signature!r}; "
                          f"it has {sorted(methods) or 'none'}")
    if info.format == "tf1":
        return _tf1_saved_model(model_dir, info.signature_tags, signature, methods, progress)
    return _tf2_saved_model(model_dir, signature, methods)


def _tf2_saved_model(path: Path, signature: str, methods: dict[str, str]) -> Source:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many kinds; all mean "cannot load"
        raise SourceError(f"cannot load SavedModel {path}: {first_line(exc)}") from exc
    signatures = {}
    for key, fn in loaded.signatures.items():
        _, kwargs = fn.structured_input_signature
        outputs = {name: tf.TensorSpec(t.shape, t.dtype, name=name)
                   for name, t in fn.structured_outputs.items()}
        signatures[key] = Signature(key=key, fn=fn, inputs=dict(kwargs), outputs=outputs,
                                    method=methods.get(key, PREDICT_METHOD))
    if signature not in signatures:
        raise SourceError(f"SavedModel {path} has no signature {signature!r}; "
                          f"it has {sorted(signatures) or 'none'}")
    main = signatures.pop(signature)
    return Source(main=main, owner=loaded, format="saved_model", path=str(path),
                  other_signatures=signatures)


def _tf1_saved_model(path: Path, tags: tuple[str, ...], signature: str,
                     methods: dict[str, str], progress) -> Source:
    from modelprep.tf1 import FrozenGraph, freeze_saved_model, signature_tensors

    progress(f"loading TF1 SavedModel {path} in a session")
    graph_def, signature_defs = freeze_saved_model(path, tags, progress)
    graph = FrozenGraph(graph_def, f"TF1 SavedModel {path}")
    main = None
    others: dict[str, Signature] = {}
    unusable: dict[str, str] = {}
    for key in sorted(signature_defs):
        try:
            feeds, fetches = signature_tensors(key, signature_defs[key])
            graph_fn = graph.signature(key, feeds, fetches)
        except SourceError as exc:
            if key == signature:
                raise
            unusable[key] = str(exc)
            continue
        sig = Signature(key=key, fn=graph_fn, inputs=graph_fn.inputs, outputs=graph_fn.outputs,
                        method=methods.get(key, PREDICT_METHOD))
        if key == signature:
            main = sig
        else:
            others[key] = sig
    assert main is not None
    return Source(main=main, owner=None, format="saved_model_tf1", path=str(path),
                  other_signatures=others, unusable_signatures=unusable)


# --- frozen GraphDefs ------------------------------------------------------------


def _graph_def(path: Path, signature: str, graph_inputs: Mapping[str, str] | None,
               graph_outputs: Mapping[str, str] | None, progress) -> Source:
    from modelprep.tf1 import FrozenGraph, read_graph_def

    if not graph_inputs or not graph_outputs:
        raise SourceError(f"{path} is a frozen GraphDef: name its input and output tensors "
                          "(--graph-inputs images=input:0 --graph-outputs probs=softmax:0)")
    _only_default(path, "a frozen GraphDef", signature)
    progress(f"reading frozen GraphDef {path}")
    graph = FrozenGraph(read_graph_def(path), f"frozen GraphDef {path}")
    graph_fn = graph.signature(DEFAULT_SIGNATURE, graph_inputs, graph_outputs)
    main = Signature(key=DEFAULT_SIGNATURE, fn=graph_fn, inputs=graph_fn.inputs,
                     outputs=graph_fn.outputs)
    return Source(main=main, owner=None, format="graph_def", path=str(path))


# --- Keras -----------------------------------------------------------------------


def _keras(path: Path, signature: str) -> Source:
    import keras
    import tensorflow as tf

    _only_default(path, "a Keras model", signature)
    if not path.is_file():
        raise SourceError(f"{path} is not a file; a Keras model is a .keras or .h5 file")
    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises many kinds; all mean "cannot load"
        raise SourceError(f"cannot load Keras model {path}: {first_line(exc)}") from exc
    try:
        model_inputs = list(model.inputs)
        model_outputs = list(model.outputs)
    except (AttributeError, ValueError):
        model_inputs = model_outputs = []
    if not model_inputs or not model_outputs:
        raise SourceError(f"Keras model {path} has no defined inputs and outputs (a "
                          "subclassed model?); build it functionally or export a SavedModel")
    names = [t.name for t in model_inputs]
    output_names = list(getattr(model, "output_names", None) or [t.name for t in model_outputs])
    if len(output_names) != len(model_outputs) or len(set(output_names)) != len(output_names):
        output_names = [f"output_{i}" for i in range(len(model_outputs))]

    def call(**inputs: Any) -> dict[str, Any]:
        args = [inputs[name] for name in names]
        result = model(args if len(args) > 1 else args[0], training=False)
        if isinstance(result, Mapping):
            return dict(result)
        flat = list(result) if isinstance(result, (list, tuple)) else [result]
        return dict(zip(output_names, flat, strict=True))

    def specs(names: list[str], tensors: list[Any]) -> dict[str, Any]:
        return {n: tf.TensorSpec(t.shape, t.dtype, name=n)
                for n, t in zip(names, tensors, strict=True)}

    main = Signature(key=DEFAULT_SIGNATURE,
                     fn=tf.function(call, reduce_retracing=True, autograph=False),
                     inputs=specs(names, model_inputs),
                     outputs=specs(output_names, model_outputs))
    # Track the variables, not the Keras model: saving the model's whole object graph
    # (every layer and its functions) makes the wrapped model slower to save and to load.
    owner = tf.Module()
    owner.keras_variables = [getattr(v, "value", v) for v in model.variables]
    return Source(main=main, owner=owner, format="keras", path=str(path),
                  hints=keras_hints(model))


def _only_default(path: Path, what: str, signature: str) -> None:
    if signature != DEFAULT_SIGNATURE:
        raise SourceError(f"{path} is {what}, whose only signature is {DEFAULT_SIGNATURE!r}; "
                          f"there is no signature {signature!r}")
