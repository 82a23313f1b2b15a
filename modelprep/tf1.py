"""TF1 artifacts as callable signatures: graph-mode SavedModels and frozen GraphDefs.

A TF1 SavedModel (written by ``SavedModelBuilder``) keeps its weights in
reference variables that live only in a session.  Loaded with
`tf.saved_model.load` it runs, but saving anything that calls it loses the
variable values (the new model fails with "uninitialized value").  So a TF1
SavedModel is frozen first, as the field has always done: loaded in a session,
its variables turned into constants (``convert_variables_to_constants``), which
gives the same kind of GraphDef as a frozen ``.pb`` file.

A GraphDef becomes a signature by importing it inside a `tf.function` with the
inputs mapped onto the caller's tensors (``import_graph_def(input_map=...)``).
Imported during tracing, the graph sees the real input shapes, so outputs whose
shape the old graph left open (TF Serving's ``half_plus_three``) get one.

Limits: a frozen graph is a protocol buffer, so models over 2 GB cannot be
frozen; lookup tables initialised from asset files do not survive freezing and
are refused by name.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf

from modelprep.errors import SourceError, first_line

PREDICT_METHOD = "tensorflow/serving/predict"
TABLE_OPS = frozenset({
    "HashTable", "HashTableV2", "MutableHashTable", "MutableHashTableV2",
    "MutableHashTableOfTensors", "MutableHashTableOfTensorsV2", "MutableDenseHashTable",
    "MutableDenseHashTableV2", "AnonymousHashTable", "AnonymousMutableHashTable",
})
"""Ops whose state freezing cannot carry (filled by an init op at load time)."""


def read_graph_def(path: Path) -> Any:
    """A binary GraphDef file (``convert_variables_to_constants`` output)."""
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except (DecodeError, RuntimeWarning) as exc:
        raise SourceError(f"{path}: cannot parse as a frozen GraphDef (corrupt, or not a "
                          "GraphDef)") from exc
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not graph_def.node:
        raise SourceError(f"{path}: the GraphDef has no nodes (empty, or not a GraphDef)")
    return graph_def


def freeze_saved_model(path: Path, tags: tuple[str, ...],
                       progress=lambda _msg: None) -> tuple[Any, dict[str, Any]]:
    """Load a TF1 SavedModel in a session and freeze it: ``(graph_def, signature_defs)``.

    Every signature's outputs are kept, so other signatures can be kept too.
    """
    graph = tf.Graph()
    with _quiet(), graph.as_default(), tf.compat.v1.Session(graph=graph) as sess:
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(sess, list(tags), str(path))
        except Exception as exc:  # TF raises many kinds; all mean "cannot load"
            raise SourceError(f"cannot load TF1 SavedModel {path}: {first_line(exc)}") from exc
        signatures = {key: sig for key, sig in meta_graph.signature_def.items()
                      if not key.startswith("__saved_model_")}
        keep = sorted({_op_name(info.name) for sig in signatures.values()
                       for infos in (sig.inputs, sig.outputs) for info in infos.values()
                       if info.name})
        progress(f"freezing variables to constants for {len(signatures)} signature(s)")
        try:
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), keep)
        except Exception as exc:
            raise SourceError(f"cannot freeze TF1 SavedModel {path}: {first_line(exc)}") \
                from exc
        for node in frozen.node:
            node.device = ""  # a GPU pin in the source must not tie the result to a GPU
            if node.op == "Placeholder":
                # Exports before TF 1.2 wrote "shape {}" for an unknown shape; re-exported
                # at today's graph version it would read as a scalar.
                shape = graph.get_operation_by_name(node.name).outputs[0].shape
                node.attr["shape"].shape.CopyFrom(shape.as_proto())
    return frozen, signatures


def signature_tensors(key: str, signature_def: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The ``{alias: tensor name}`` inputs and outputs of a TF1 SignatureDef."""
    result = []
    for side, infos in (("input", signature_def.inputs), ("output", signature_def.outputs)):
        names = {}
        for alias, info in sorted(infos.items()):
            if info.WhichOneof("encoding") != "name":
                raise SourceError(f"signature {key!r} {side} {alias!r} is a sparse or "
                                  "composite tensor; only dense tensors can be wrapped")
            names[alias] = info.name
        result.append(names)
    return result[0], result[1]


class FrozenGraph:
    """A GraphDef with every constant in it, imported once to read tensor dtypes and shapes."""

    def __init__(self, graph_def: Any, where: str) -> None:
        self.graph_def = graph_def
        self.where = where
        self.graph = tf.Graph()
        with self.graph.as_default():
            try:
                tf.graph_util.import_graph_def(graph_def, name="")
            except Exception as exc:
                raise SourceError(f"{where}: the graph does not import: {first_line(exc)}") \
                    from exc

    def tensor(self, side: str, alias: str, name: str) -> tf.Tensor:
        try:
            return self.graph.get_tensor_by_name(name)
        except (KeyError, ValueError) as exc:
            placeholders = sorted(op.name + ":0" for op in self.graph.get_operations()
                                  if op.type == "Placeholder")
            raise SourceError(f"{self.where}: {side} {alias!r}: the graph has no tensor "
                              f"{name!r} (its placeholders: "
                              f"{', '.join(placeholders) or 'none'})") from exc

    def signature(self, key: str, feeds: Mapping[str, str],
                  fetches: Mapping[str, str]) -> GraphSignature:
        return GraphSignature(self, key, feeds, fetches)


class GraphSignature:
    """One signature of a frozen graph: call with keyword tensors, get a dict back.

    Works eagerly (each new input shape is traced once) and inside another
    `tf.function`, where the graph is imported into the caller's trace.  Each
    input is cut out of the graph and replaced by a placeholder of its own, so
    nothing upstream of it (a ``tf.Example`` parser, say) is imported.
    """

    def __init__(self, graph: FrozenGraph, key: str, feeds: Mapping[str, str],
                 fetches: Mapping[str, str]) -> None:
        where = graph.where
        if not fetches:
            raise SourceError(f"{where}: signature {key!r} has no outputs")
        self.key = key
        feed_tensors = {a: graph.tensor("input", a, _canonical(n)) for a, n in feeds.items()}
        fetch_tensors = {a: graph.tensor("output", a, _canonical(n)) for a, n in fetches.items()}
        self.inputs = {a: tf.TensorSpec(t.shape, t.dtype.base_dtype, name=a)
                       for a, t in feed_tensors.items()}
        self.outputs = {a: tf.TensorSpec(t.shape, t.dtype.base_dtype, name=a)
                        for a, t in fetch_tensors.items()}
        self.graph_def, self.feeds, self.fetches = _cut(
            graph.graph_def, feed_tensors, {a: t.name for a, t in fetch_tensors.items()})
        tables = sorted({n.op for n in self.graph_def.node if n.op in TABLE_OPS})
        if tables:
            raise SourceError(f"{where}: signature {key!r} uses lookup tables "
                              f"({', '.join(tables)}), whose contents freezing cannot keep")
        self._call = tf.function(self._import, reduce_retracing=True, autograph=False)

    def __call__(self, **inputs: Any) -> dict[str, tf.Tensor]:
        unknown = sorted(set(inputs) - set(self.feeds))
        if unknown:
            raise TypeError(f"signature {self.key!r} has no input(s) {unknown}; it has "
                            f"{sorted(self.feeds)}")
        return self._call(**inputs)

    def _import(self, **inputs: Any) -> dict[str, tf.Tensor]:
        input_map = {self.feeds[alias]: tf.convert_to_tensor(value, self.inputs[alias].dtype)
                     for alias, value in inputs.items()}
        aliases = sorted(self.fetches)
        tensors = tf.graph_util.import_graph_def(
            self.graph_def, input_map=input_map, name="source",
            return_elements=[self.fetches[a] for a in aliases])
        return {alias: tf.identity(t) for alias, t in zip(aliases, tensors, strict=True)}


def _cut(graph_def: Any, feeds: Mapping[str, tf.Tensor], fetches: Mapping[str, str]
         ) -> tuple[Any, dict[str, str], dict[str, str]]:
    """The part of `graph_def` that computes `fetches` from placeholders put in place of
    `feeds`: ``(graph_def, {alias: placeholder tensor}, {alias: fetch tensor})``."""
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2

    cut = tf.compat.v1.GraphDef()
    cut.CopyFrom(graph_def)
    taken = {node.name for node in graph_def.node}
    replaced: dict[str, str] = {}
    feed_names: dict[str, str] = {}
    for alias, tensor in feeds.items():
        name = f"modelprep_input/{alias}"
        while name in taken:
            name += "_"
        taken.add(name)
        node = node_def_pb2.NodeDef(name=name, op="Placeholder")
        node.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(
            type=tensor.dtype.base_dtype.as_datatype_enum))
        node.attr["shape"].CopyFrom(attr_value_pb2.AttrValue(shape=tensor.shape.as_proto()))
        cut.node.append(node)
        replaced[tensor.name] = name + ":0"
        feed_names[alias] = name + ":0"
    for node in cut.node:
        for i, name in enumerate(node.input):
            if not name.startswith("^") and _canonical(name) in replaced:
                node.input[i] = replaced[_canonical(name)]
    fetch_names = {a: replaced.get(name, name) for a, name in fetches.items()}
    keep = sorted({_op_name(n) for n in (*feed_names.values(), *fetch_names.values())})
    return tf.compat.v1.graph_util.extract_sub_graph(cut, keep), feed_names, fetch_names


def _op_name(tensor_name: str) -> str:
    return tensor_name.lstrip("^").split(":")[0]


def _canonical(tensor_name: str) -> str:
    """``op`` and ``op:0`` are the same tensor."""
    return tensor_name if ":" in tensor_name else tensor_name + ":0"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """TF1 loading logs deprecation notices for every v1 call; they are not the user's
    business here."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
