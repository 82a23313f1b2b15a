"""What a SavedModel offers: its signatures, inputs and outputs, without loading it.

`describe` reads ``saved_model.pb`` (or ``saved_model.pbtxt``) as a protocol
buffer, so it is quick, works for TF1 (SavedModelBuilder) and TF2
(``tf.saved_model.save``) models alike, and works even when the model uses ops
this TensorFlow does not have.  `format_info` turns the result into the text
``modelprep inspect`` prints.

A path may also be a TF Serving model base (``BASE/`` holding numeric version
folders such as ``BASE/00000123/``): like TF Serving, the highest version is
the one described.

TensorFlow is imported inside the functions, never at module import, so that
``modelprep --help`` stays fast.  Note that importing even just
``tensorflow.core.protobuf.saved_model_pb2`` runs ``tensorflow/__init__.py``
and so costs a full TensorFlow import (seconds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelprep.errors import SourceError

PB_NAME = "saved_model.pb"
PBTXT_NAME = "saved_model.pbtxt"
CPB_NAME = "saved_model.cpb"
METADATA_NAME = "assets.extra/model_metadata.json"
SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
_SERVING_METHOD_PREFIX = "tensorflow/serving/"
# "__saved_model_init_op" (TF2's variable/table initializer) and the like: not callable.
_INTERNAL_SIGNATURE_PREFIX = "__saved_model_"


class InspectError(SourceError):
    """The path is not a readable SavedModel (or TF Serving model base)."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    """The signature's key for the tensor (its alias), e.g. ``"images"``."""
    dtype: str
    """numpy-style name: ``"float32"``, ``"string"``, ``"int8"``, ..."""
    shape: tuple[int, ...] | None
    """-1 for a dimension of unknown size; () for a scalar; None when even the rank is
    unknown (or the signature does not record a shape)."""
    tensor: str
    """The graph tensor, e.g. ``"serving_default_images:0"`` (sparse and composite
    tensors list their component tensors)."""


@dataclass(frozen=True)
class SignatureInfo:
    key: str
    method: str
    """e.g. ``"tensorflow/serving/predict"``; may be empty in hand-made protos."""
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class SavedModelInfo:
    path: str
    """The SavedModel directory described (the version folder for a model base)."""
    tags: tuple[tuple[str, ...], ...]
    """The tag-set of every MetaGraph in the file."""
    signatures: tuple[SignatureInfo, ...]
    """Of the "serve" MetaGraph (or the only one); serving_default first, then by key.
    Internal ones (``__saved_model_init_op``) are left out."""
    format: str
    """``"tf2"`` (has an object graph: tf.saved_model.save) or ``"tf1"`` (SavedModelBuilder)."""
    tf_version: str | None
    metadata: dict | None
    """``assets.extra/model_metadata.json`` as parsed by json.loads, or None if absent."""
    signature_tags: tuple[str, ...] = ()
    """The tag-set of the MetaGraph the signatures come from."""
    model_base: str | None = None
    """The TF Serving model base the caller named, when `path` is its highest version."""
    versions: tuple[int, ...] = ()
    """All version numbers found in `model_base`, ascending (empty without one)."""


# --- reading -----------------------------------------------------------------


def describe(path: str | Path) -> SavedModelInfo:
    """Read the SavedModel at `path` (a directory, its saved_model.pb(txt) file, or a
    TF Serving model base) without loading it.  Raises `InspectError`."""
    given = Path(path)
    if not given.exists():
        raise InspectError(f"{path}: no such file or directory")
    model_base: str | None = None
    versions: tuple[int, ...] = ()
    if given.is_dir():
        proto_file = _proto_file(given)
        if proto_file is None:
            folders = _version_folders(given)
            if not folders:
                if (given / CPB_NAME).is_file():
                    raise InspectError(f"{path}: has only {CPB_NAME} (a chunked SavedModel "
                                       "over 2 GB), which inspect cannot read")
                raise InspectError(f"{path}: no {PB_NAME} or {PBTXT_NAME} here, and no "
                                   "numeric version folders of a TF Serving model base")
            model_base = str(given)
            versions = tuple(sorted(folders))
            version_dir = given / folders[versions[-1]]
            proto_file = _proto_file(version_dir)
            if proto_file is None:
                raise InspectError(f"{version_dir}: the highest version of model base {path} "
                                   f"has no {PB_NAME} or {PBTXT_NAME}")
        model_dir = proto_file.parent
    else:
        proto_file, model_dir = given, given.parent

    saved_model = _parse(proto_file)
    meta_graphs = list(saved_model.meta_graphs)
    if not meta_graphs:
        raise InspectError(f"{proto_file}: has no MetaGraphs (corrupt, or not a SavedModel)")
    tags = tuple(tuple(mg.meta_info_def.tags) for mg in meta_graphs)
    chosen = meta_graphs[_serving_meta_graph(tags)]
    signatures = tuple(
        _signature_info(key, chosen.signature_def[key])
        for key in sorted(chosen.signature_def, key=_signature_order)
        if not key.startswith(_INTERNAL_SIGNATURE_PREFIX)
    )
    return SavedModelInfo(
        path=str(model_dir),
        tags=tags,
        signatures=signatures,
        format="tf2" if chosen.HasField("object_graph_def") else "tf1",
        tf_version=chosen.meta_info_def.tensorflow_version or None,
        metadata=_read_metadata(model_dir),
        signature_tags=tuple(chosen.meta_info_def.tags),
        model_base=model_base,
        versions=versions,
    )


def _proto_file(directory: Path) -> Path | None:
    # Like TensorFlow's loader: the binary form wins when both are present.
    for name in (PB_NAME, PBTXT_NAME):
        if (directory / name).is_file():
            return directory / name
    return None


def _version_folders(base: Path) -> dict[int, str]:
    """TF Serving's rule: every sub-folder whose name is a non-negative integer."""
    folders: dict[int, str] = {}
    try:
        entries = list(base.iterdir())
    except OSError as exc:
        raise InspectError(f"{base}: cannot list: {exc.strerror or exc}") from exc
    for entry in entries:
        if entry.name.isascii() and entry.name.isdigit() and entry.is_dir():
            version = int(entry.name)
            # "123" and "0123" are the same version; TF Serving would refuse both.
            if version in folders:
                raise InspectError(f"{base}: version {version} appears twice "
                                   f"({folders[version]} and {entry.name})")
            folders[version] = entry.name
    return folders


def _parse(proto_file: Path):
    from tensorflow.core.protobuf import saved_model_pb2

    try:
        data = proto_file.read_bytes()
    except OSError as exc:
        raise InspectError(f"{proto_file}: cannot read: {exc.strerror or exc}") from exc
    saved_model = saved_model_pb2.SavedModel()
    if proto_file.suffix == ".pbtxt":
        from google.protobuf import text_format

        try:
            text_format.Parse(data.decode("utf-8"), saved_model)
        except (text_format.ParseError, UnicodeDecodeError) as exc:
            raise InspectError(f"{proto_file}: not a valid SavedModel in text format "
                               f"({exc})") from exc
    else:
        from google.protobuf.message import DecodeError

        try:
            saved_model.ParseFromString(data)
        except DecodeError as exc:
            raise InspectError(f"{proto_file}: cannot parse as a SavedModel protocol buffer "
                               "(corrupt, truncated, or not a SavedModel)") from exc
    return saved_model


def _serving_meta_graph(tags: tuple[tuple[str, ...], ...]) -> int:
    """The MetaGraph TF Serving loads: tags exactly {serve}, else the first that has
    serve, else the only (or first) one."""
    for i, tag_set in enumerate(tags):
        if set(tag_set) == {SERVE_TAG}:
            return i
    for i, tag_set in enumerate(tags):
        if SERVE_TAG in tag_set:
            return i
    return 0


def _signature_order(key: str) -> tuple[bool, str]:
    return key != DEFAULT_SIGNATURE, key


def _signature_info(key: str, sig) -> SignatureInfo:
    return SignatureInfo(
        key=key,
        method=sig.method_name,
        inputs=tuple(_tensor_info(alias, sig.inputs[alias]) for alias in sorted(sig.inputs)),
        outputs=tuple(_tensor_info(alias, sig.outputs[alias]) for alias in sorted(sig.outputs)),
    )


def _tensor_info(alias: str, info) -> TensorInfo:
    encoding = info.WhichOneof("encoding")
    if encoding == "coo_sparse":
        sparse = info.coo_sparse
        tensor = (f"SparseTensor(indices={sparse.indices_tensor_name}, "
                  f"values={sparse.values_tensor_name}, "
                  f"dense_shape={sparse.dense_shape_tensor_name})")
    elif encoding == "composite_tensor":
        parts = ", ".join(c.name for c in info.composite_tensor.components)
        tensor = f"CompositeTensor({parts})"
    else:
        tensor = info.name
    # An absent tensor_shape means the exporter did not record one (very old TF1
    # exports), not a scalar: a real scalar is a present, empty TensorShapeProto.
    shape_proto = info.tensor_shape
    if not info.HasField("tensor_shape") or shape_proto.unknown_rank:
        shape = None
    else:
        shape = tuple(int(d.size) for d in shape_proto.dim)
    return TensorInfo(name=alias, dtype=dtype_name(info.dtype), shape=shape, tensor=tensor)


_DTYPE_RENAMES = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16"}


def dtype_name(enum_value: int) -> str:
    """The numpy-style name TensorFlow gives a ``DataType`` enum value (``tf.as_dtype(v).name``),
    without importing all of TensorFlow's Python API for it."""
    from tensorflow.core.framework import types_pb2

    try:
        enum_name = types_pb2.DataType.Name(enum_value)
    except ValueError:
        return f"dtype{enum_value}"
    base = enum_name.removesuffix("_REF")
    name = _DTYPE_RENAMES.get(base, base.removeprefix("DT_").lower())
    return name + "_ref" if base != enum_name else name


def _read_metadata(model_dir: Path) -> dict | None:
    path = model_dir / METADATA_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InspectError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") \
            from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InspectError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InspectError(f"{path}: must hold a JSON object, not {type(data).__name__}")
    return data


# --- text --------------------------------------------------------------------


def format_info(info: SavedModelInfo) -> str:
    """The human-readable description ``modelprep inspect`` prints (no trailing newline)."""
    kind = info.format.upper()
    saved_by = f", saved by TensorFlow {info.tf_version}" if info.tf_version else ""
    lines = [f"SavedModel {info.path}  ({kind}{saved_by})"]
    if info.model_base is not None:
        version = info.versions[-1] if info.versions else "?"
        lines.append(f"TF Serving model base {info.model_base}: describing version {version}, "
                     f"the highest of {_join(map(str, info.versions))}")
    lines.append(f"MetaGraph tags: {'; '.join(_join(t) for t in info.tags)}")
    if len(info.tags) > 1:
        lines.append(f"signatures of the MetaGraph tagged: {_join(info.signature_tags)}")

    if not info.signatures:
        lines += ["", "no signatures: TF Serving cannot call this model"]
    for sig in info.signatures:
        lines += ["", *_signature_lines(sig)]

    if info.metadata is not None:
        lines += ["", *_metadata_lines(info)]
    return "\n".join(lines)


def _join(items) -> str:
    items = list(items)
    return ", ".join(items) if items else "(none)"


def _method_label(method: str) -> str:
    if method == PREDICT_METHOD:
        return ""
    if not method:
        return "  (no method)"
    if method.startswith(_SERVING_METHOD_PREFIX):
        return f"  ({method.removeprefix(_SERVING_METHOD_PREFIX)})"
    return f"  ({method})"


def format_shape(shape: tuple[int, ...] | None) -> str:
    """``[-1, 784]``; ``[]`` for a scalar; ``[?]`` for an unknown rank."""
    if shape is None:
        return "[?]"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _signature_lines(sig: SignatureInfo) -> list[str]:
    lines = [f'signature "{sig.key}"{_method_label(sig.method)}']
    # One table for inputs and outputs together, so both line up.
    def cells(t: TensorInfo) -> tuple[str, str, str]:
        return t.name, t.dtype, format_shape(t.shape)

    table = [cells(t) for t in (*sig.inputs, *sig.outputs)]
    widths = [max((len(r[i]) for r in table), default=0) for i in range(3)]

    def row(t: TensorInfo) -> str:
        text = "  ".join(c.ljust(w) for c, w in zip(cells(t), widths, strict=True))
        return f"    {text}  {t.tensor}".rstrip()

    for title, tensors in (("inputs", sig.inputs), ("outputs", sig.outputs)):
        if tensors:
            lines.append(f"  {title}")
            lines += [row(t) for t in tensors]
        else:
            lines.append(f"  {title}: none")
    return lines


def _metadata_lines(info: SavedModelInfo) -> list[str]:
    import modelmeta

    head = f"metadata ({METADATA_NAME}"
    version = info.metadata.get("schema_version") if info.metadata else None
    head += f", schema {version})" if version is not None else ")"
    try:
        meta = modelmeta.ModelMetadata.from_dict(info.metadata)
    except modelmeta.MetadataError as exc:
        return [head, f"  invalid: {exc}"]

    lines = [head, f"  name       {meta.name}", f"  signature  {meta.signature}"]
    rows: list[tuple[str, str, str]] = []
    rows += [("in", spec.name, _input_summary(spec)) for spec in meta.inputs]
    rows += [("out", out.name, _output_summary(out)) for out in meta.outputs]
    width = max(len(name) for _, name, _ in rows)
    for title, side in (("inputs", "in"), ("outputs", "out")):
        lines.append(f"  {title}")
        lines += [f"    {name.ljust(width)}  {text}" for s, name, text in rows if s == side]
    if meta.labels is not None:
        lines.append(f"  labels     {len(meta.labels)}  ({_preview(meta.labels)})")
    lines += [f"  warning: {w}" for w in _metadata_warnings(meta, info)]
    return lines


def _input_summary(spec: Any) -> str:
    parts = [spec.kind]
    if spec.image is not None:
        image = spec.image
        norm = image.normalization
        norm_text = norm.mode
        if norm.mode == "meanstd":
            norm_text += f" mean={_numbers(norm.mean)} std={_numbers(norm.std)}"
        if norm.invert:
            norm_text += ", inverted"
        parts.append(f"{image.height}x{image.width}x{image.channels}")
        parts.append(f"normalize {norm_text}")
        parts.append(f"resize {image.resize}")
        if image.layout != "nhwc":
            parts.append(f"layout {image.layout}")
    else:
        parts.append(f"{spec.dtype} {format_shape(spec.shape)}")
    if spec.quantization is not None:
        parts.append(_quant_text(spec.quantization))
    return ", ".join(parts)


def _output_summary(spec: Any) -> str:
    parts = [spec.role, f"{spec.dtype} {format_shape(spec.shape)}"]
    if spec.encoding:
        parts.append(f"{spec.encoding}-encoded")
    if spec.quantization is not None:
        parts.append(_quant_text(spec.quantization))
    return ", ".join(parts)


def _quant_text(q: Any) -> str:
    return f"quantized {q.dtype} scale={q.scale:g} zero_point={q.zero_point}"


def _numbers(values) -> str:
    return "/".join(f"{v:g}" for v in values)


def _preview(labels, limit: int = 5) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (", ..." if len(labels) > limit else "")


def _metadata_warnings(meta: Any, info: SavedModelInfo) -> list[str]:
    """Where the metadata and the signatures disagree on names: serving would fail."""
    warnings = []
    if info.model_base is not None and Path(info.model_base).name != meta.name:
        folder = Path(info.model_base).name
        warnings.append(f'the metadata names the model "{meta.name}" but it is served as '
                        f'"{folder}" (its folder): the function asks the server for '
                        f'"{meta.name}"; export it again with --name {folder}')
    sig = next((s for s in info.signatures if s.key == meta.signature), None)
    if sig is None:
        return [*warnings,
                f'the metadata names signature "{meta.signature}", which the model lacks']
    for side, specs, tensors in (("input", meta.inputs, sig.inputs),
                                 ("output", meta.outputs, sig.outputs)):
        have = {t.name for t in tensors}
        for spec in specs:
            if spec.name not in have:
                warnings.append(f'the metadata {side} "{spec.name}" is not in signature '
                                f'"{sig.key}"')
    return warnings
