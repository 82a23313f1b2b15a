"""``modelprep export``: a prepared model into TF Serving's layout, warm and configured.

TF Serving watches ``BASE/NAME/`` for numeric version folders and loads the
highest. Export therefore

* copies the prepared SavedModel to ``BASE/NAME/VERSION/`` (next version by
  default), built under a dotted temporary name beside it and renamed into
  place, so the server never sees half a model; versions are never overwritten;
* writes ``VERSION/assets.extra/tf_serving_warmup_requests``: a TFRecord file of
  `PredictionLog` protos, one PredictRequest per sample image in the input
  kind the metadata gives, which TF Serving replays before it serves the
  version, so the first client does not pay for graph tracing. A failing
  record fails the model load on the server, so every record is first run
  against the copy here;
* writes NAME into the copy's metadata (and its LiteRT flavours'), since the
  function asks the model server for the model by the name its metadata gives;
* adds or updates the model's entry in ``BASE/models.config`` (text-format
  `ModelServerConfig`, the ``--model_config_file`` of the server), keeping
  every other entry and any version policy or labels of this one.

A lock file in BASE serialises concurrent exports to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelmeta import LITERT_DIR, LITERT_FLAVOURS, ModelMetadata, litert_files
from modelprep.errors import ModelprepError, SourceError, SpecMismatch, first_line
from modelprep.samples import SAMPLE_KINDS, build_feed, collect_images

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP = 1000
"""TF Serving reads at most this many warmup records."""
DEFAULT_WARMUP = 3
CONFIG_FILE = "models.config"
LOCK_FILE = ".modelprep-export.lock"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ExportOptions:
    """How to export; every field is a CLI flag and a recipe key of the same name."""

    name: str | None = None
    """Model name under BASE and in models.config; default: the name in the metadata."""
    version: int | None = None
    """Version number; default: the highest under BASE/NAME plus one (1 for a new model)."""
    warmup: int = DEFAULT_WARMUP
    """How many warmup records to write (0 for none, at most 1000)."""
    images: Path | None = None
    """A folder of images for the warmup requests; default: generated ones."""
    samples: str = "auto"
    """Which generated images: auto, digits or synthetic (see `modelprep.samples`)."""
    seed: int = 0
    serving_base: str | None = None
    """BASE as the model server sees it (``/models`` in the tensorflow/serving
    container); models.config gets ``SERVING_BASE/NAME``. Default: BASE's absolute path."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    """The version folder, ``BASE/NAME/VERSION``."""
    name: str
    version: int
    warmup_records: int
    config: Path
    base_path: str
    """What models.config says the model's base path is."""
    seconds: float


def export(prepared: str | Path, base: str | Path, options: ExportOptions | None = None,
           progress: Callable[[str], None] = lambda _msg: None) -> ExportResult:
    """Copy `prepared` to ``base/NAME/VERSION`` with warmup records; update models.config."""
    options = options or ExportOptions()
    started = time.monotonic()
    prepared = Path(prepared)
    metadata = _prepared_metadata(prepared)
    name = options.name or metadata.name
    _check_options(name, options)
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    config_path = base / CONFIG_FILE
    model_dir = base / name
    if model_dir.exists() and not model_dir.is_dir():
        raise ModelprepError(f"{model_dir} exists and is not a folder; it cannot hold versions")
    base_path = (f"{options.serving_base.rstrip('/')}/{name}" if options.serving_base
                 else str(model_dir.resolve()))
    with _locked(base):
        config = read_models_config(config_path)  # refuse a broken file before copying
        model_dir.mkdir(exist_ok=True)
        existing = versions(model_dir)
        version = options.version if options.version is not None else max(existing, default=0) + 1
        if version in existing:
            raise ModelprepError(
                f"{model_dir / existing[version]} already exists (version {version}); versions "
                f"are never overwritten: export as version {max(existing) + 1} or remove it")
        target = model_dir / str(version)
        records = 0
        with _building(model_dir, version) as tmp:
            progress(f"copying {prepared} to {target}")
            shutil.copytree(prepared, tmp, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(WARMUP_FILE.rsplit("/", 1)[1]))
            if name != metadata.name:
                progress(f"naming the model {name!r} in its metadata (was {metadata.name!r})")
                metadata = rename(tmp, metadata, name)
            if options.warmup:
                progress(f"writing {options.warmup} warmup request(s)")
                records = write_warmup(tmp / WARMUP_FILE, metadata, name, options)
                progress("replaying the warmup requests against the copy, as TF Serving will")
                check_warmup(tmp, metadata)
            tmp.chmod(0o755)  # not mkdtemp's 0700: a server may run as another user
            tmp.rename(target)
        progress(f"updating {config_path}")
        set_model_entry(config, name, base_path)
        write_models_config(config_path, config)
    return ExportResult(path=target, name=name, version=version, warmup_records=records,
                        config=config_path, base_path=base_path,
                        seconds=time.monotonic() - started)


def rename(model_dir: Path, metadata: ModelMetadata, name: str) -> ModelMetadata:
    """Write `name` into the metadata at `model_dir` and its LiteRT flavours' metadata.

    The function asks TF Serving for the model by this name (and the LiteRT backend
    reports it), so it must be the name the model is served under, not the folder
    the model was wrapped into.
    """
    renamed = dataclasses.replace(metadata, name=name)
    renamed.save(model_dir)
    for flavour in LITERT_FLAVOURS:
        path = model_dir / LITERT_DIR / litert_files(flavour)[1]
        if path.is_file():
            flavour_metadata = ModelMetadata.from_json(path.read_text(encoding="utf-8"))
            path.write_text(dataclasses.replace(flavour_metadata, name=name).to_json(),
                            encoding="utf-8")
    return renamed


def format_export(result: ExportResult) -> str:
    """The line ``modelprep export`` prints."""
    warmup = (f"{result.warmup_records} warmup record{'s' if result.warmup_records != 1 else ''}"
              if result.warmup_records else "no warmup records")
    return (f"exported {result.name} version {result.version} to {result.path} ({warmup}); "
            f"{result.config}: base_path {result.base_path}")


def versions(model_dir: Path) -> dict[int, str]:
    """TF Serving's rule: every sub-folder whose name is a non-negative integer is a version."""
    found: dict[int, str] = {}
    if not model_dir.is_dir():
        return found
    for entry in model_dir.iterdir():
        if entry.name.isascii() and entry.name.isdigit() and entry.is_dir():
            found[int(entry.name)] = entry.name
    return found


# --- warmup ------------------------------------------------------------------------


def warmup_requests(metadata: ModelMetadata, model_name: str, count: int, *,
                    images: str | Path | None = None, samples: str = "auto",
                    seed: int = 0) -> list[Any]:
    """`count` PredictionLogs, one sample each, fed as clients feed the model."""
    import tensorflow as tf
    model_pb2, predict_pb2, prediction_log_pb2 = _serving_api(
        "apis.model_pb2", "apis.predict_pb2", "apis.prediction_log_pb2")
    spec = metadata.image_input
    found = collect_images(spec.image if spec else None, images=images, samples=samples,
                           count=count, seed=seed)
    total = len(found.images) if spec else count
    rng = np.random.default_rng(seed)
    logs = []
    for i in range(total):
        chunk = found.images[i:i + 1] if spec else ()
        feed = build_feed(metadata, chunk, 1, rng, first_index=i, with_reference=False)
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=metadata.signature))
        for input_name, value in feed.prepared.items():
            request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value))
        logs.append(prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup(path: Path, metadata: ModelMetadata, model_name: str,
                 options: ExportOptions) -> int:
    """Write the warmup TFRecord file; return the number of records."""
    import tensorflow as tf

    logs = warmup_requests(metadata, model_name, options.warmup, images=options.images,
                           samples=options.samples, seed=options.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return len(logs)


def read_warmup(path: str | Path) -> list[Any]:
    """The PredictionLogs of a warmup file (raises if a record is not one)."""
    import tensorflow as tf
    (prediction_log_pb2,) = _serving_api("apis.prediction_log_pb2")
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(str(path))]


def check_warmup(model_dir: Path, metadata: ModelMetadata) -> None:
    """Run every warmup request against the SavedModel at `model_dir`, as TF Serving
    does when it loads the version; a failure names the record and the error."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    for i, log in enumerate(read_warmup(model_dir / WARMUP_FILE)):
        request = log.predict_log.request
        signature = request.model_spec.signature_name or "serving_default"
        if signature not in loaded.signatures:
            raise SpecMismatch(f"warmup record {i} asks for signature {signature!r}, which the "
                               f"model lacks; it has {sorted(loaded.signatures)}")
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        try:
            loaded.signatures[signature](**inputs)
        except (tf.errors.OpError, TypeError, ValueError) as exc:
            raise ModelprepError(f"warmup record {i} (inputs {sorted(inputs)}) fails against "
                                 f"the model: {first_line(exc)}") from exc


# --- models.config -----------------------------------------------------------------


def read_models_config(path: str | Path) -> Any:
    """The `ModelServerConfig` in `path`, or an empty one when the file does not exist."""
    from google.protobuf import text_format
    (model_server_config_pb2,) = _serving_api("config.model_server_config_pb2")
    config = model_server_config_pb2.ModelServerConfig()
    path = Path(path)
    if not path.exists():
        return config
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ModelprepError(f"{path} is not a text-format ModelServerConfig: {exc}") from exc
    if config.WhichOneof("config") == "custom_model_config":
        raise ModelprepError(f"{path} holds a custom_model_config; export can only add "
                             "entries to a model_config_list")
    return config


def set_model_entry(config: Any, name: str, base_path: str) -> None:
    """Add the model, or point its existing entry at `base_path`; other fields and entries
    stay as they are."""
    entries = config.model_config_list.config
    matches = [entry for entry in entries if entry.name == name]
    if len(matches) > 1:
        raise ModelprepError(f"models.config lists model {name!r} {len(matches)} times; "
                             "TF Serving refuses that, fix the file first")
    entry = matches[0] if matches else entries.add(name=name)
    entry.base_path = base_path
    entry.model_platform = "tensorflow"


def write_models_config(path: Path, config: Any) -> None:
    """Write atomically: a server re-reading the file never sees half of it."""
    from google.protobuf import text_format

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text_format.MessageToString(config), encoding="utf-8")
    tmp.replace(path)


# --- helpers -----------------------------------------------------------------------


def _serving_api(*modules: str) -> tuple[Any, ...]:
    """TF Serving's protos, from the tensorflow-serving-api package."""
    import importlib

    try:
        return tuple(importlib.import_module(f"tensorflow_serving.{m}") for m in modules)
    except ModuleNotFoundError as exc:
        raise ModelprepError("export needs TF Serving's protos: pip install --no-deps "
                             "tensorflow-serving-api (--no-deps keeps it from pulling in the "
                             "full tensorflow package beside tensorflow-cpu)") from exc


def _prepared_metadata(prepared: Path) -> ModelMetadata:
    from modelprep.verify import load_metadata

    if not prepared.is_dir():
        raise SourceError(f"prepared model {prepared} does not exist")
    if not any((prepared / f).is_file() for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise SourceError(f"{prepared} is not a SavedModel directory (no saved_model.pb)")
    return load_metadata(prepared)


def _check_options(name: str, options: ExportOptions) -> None:
    if not _NAME.match(name):
        raise ModelprepError(f"model name {name!r} cannot be a TF Serving model name: use "
                             "letters, digits, '_', '.' and '-', starting with a letter or digit")
    if options.version is not None and options.version < 0:
        raise ModelprepError(f"version must be a non-negative integer, got {options.version}")
    if not 0 <= options.warmup <= MAX_WARMUP:
        raise ModelprepError(f"warmup must be 0..{MAX_WARMUP} records (TF Serving reads at "
                             f"most {MAX_WARMUP}), got {options.warmup}")
    if options.samples not in SAMPLE_KINDS:
        raise ModelprepError(f"samples must be one of {', '.join(SAMPLE_KINDS)}, "
                             f"got {options.samples!r}")


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    with open(base / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _building(model_dir: Path, version: int) -> Iterator[Path]:
    """A temporary folder TF Serving ignores (not numeric); removed unless renamed away."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".partial", dir=model_dir))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
