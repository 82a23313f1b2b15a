"""Loaded model versions and how a ModelSpec finds one, with TF Serving's answers.

Each version is a SavedModel loaded with TensorFlow; its SignatureDefs are read
from ``saved_model.pb`` as they are stored (tensor names, method names), because
that is what TF Serving's metadata API returns. A ModelSpec picks a version by
number, by label or, with neither, the latest; misses are NOT_FOUND with TF
Serving's wording, unknown labels INVALID_ARGUMENT as TF Serving has them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infra.modelserver.repository import (
    ModelEntry,
    RepositoryError,
    version_dir,
    versions_to_serve,
)
from infra.modelserver.status import TF_ERROR_CODES, ServingError

log = logging.getLogger("infra.modelserver")

SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"


@dataclass
class Servable:
    """One loaded version, run as TF Serving runs it: a TF session fed and fetched by the
    tensor names in the SignatureDef (so TF1 graph models and TF2 exports both work, and,
    as in TF Serving, fed shapes are checked by the graph, not against placeholders)."""

    name: str
    version: int
    path: Path
    signature_defs: dict[str, Any]
    """alias -> tensorflow.SignatureDef, as stored in saved_model.pb."""
    _session: Any
    _callables: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, name: str, version: int, path: Path) -> Servable:
        import tensorflow as tf

        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph)
        with graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], str(path))
        return cls(name, version, path, dict(meta_graph.signature_def), session)

    def run(self, signature_name: str, inputs: dict[str, np.ndarray],
            outputs: list[str]) -> dict[str, np.ndarray]:
        """Run one signature; TensorFlow errors become `ServingError`s with their code."""
        import tensorflow as tf

        signature = self.signature_defs[signature_name]
        feed_aliases = sorted(inputs)
        key = (signature_name, tuple(feed_aliases), tuple(outputs))
        with self._lock:
            function = self._callables.get(key)
            if function is None:
                from tensorflow.core.protobuf import config_pb2

                options = config_pb2.CallableOptions(
                    feed=[signature.inputs[a].name for a in feed_aliases],
                    fetch=[signature.outputs[a].name for a in outputs])
                function = self._session._make_callable_from_options(options)
                self._callables[key] = function
        try:
            values = function(*[inputs[a] for a in feed_aliases])
        except tf.errors.OpError as exc:
            raise ServingError(TF_ERROR_CODES.get(exc.error_code, "UNKNOWN"),
                               exc.message) from exc
        return dict(zip(outputs, values, strict=True))

    def close(self) -> None:
        self._session.close()


def unavailable_label_message(model: str, version: int) -> str:
    """TF Serving's words when a label names a version that is not available
    (tensorflow_serving/model_servers/server_core.cc, a FAILED_PRECONDITION)."""
    return (f"Request to assign label to version {version} of model {model}, which is not "
            "currently available for inference")


class ModelManager:
    """Every served version of every model, and the labels that point at them."""

    def __init__(self, entries: list[ModelEntry], *,
                 allow_labels_for_unavailable: bool = False) -> None:
        self.entries = {entry.name: entry for entry in entries}
        self.allow_labels_for_unavailable = allow_labels_for_unavailable
        self.servables: dict[str, dict[int, Servable]] = {}
        self.labels: dict[str, dict[str, int]] = {}

    def assign_labels(self) -> None:
        """The config's version labels, checked as TF Serving's ServerCore checks them
        (UpdateModelVersionLabelMap): a label may name a version that is not available
        only with ``--allow_version_labels_for_unavailable_models``. TF Serving does this
        before loading the config's models, so at start no version is available yet and
        any label at all needs the flag; `load_all` keeps that order."""
        labels: dict[str, dict[str, int]] = {}
        for entry in self.entries.values():
            available = self.servables.get(entry.name, {})
            # By version, then label: the config's map has no order (nor has TF Serving's).
            for label, version in sorted(entry.labels.items(), key=lambda kv: (kv[1], kv[0])):
                if version not in available and not self.allow_labels_for_unavailable:
                    raise RepositoryError(
                        f"{unavailable_label_message(entry.name, version)} (labels are "
                        "assigned before any version loads: start the server with "
                        "--allow_version_labels_for_unavailable_models, as TF Serving needs)")
                labels.setdefault(entry.name, {})[label] = version
        self.labels = labels

    def load_all(self, warm_up=None) -> None:
        """Assign the labels, then load what every policy asks for; fail on the first
        version that will not load."""
        self.assign_labels()
        for entry in self.entries.values():
            versions = {}
            for version in versions_to_serve(entry):
                path = version_dir(entry.base_path, version)
                log.info("loading %s version %d from %s", entry.name, version, path)
                try:
                    servable = Servable.load(entry.name, version, path)
                except RepositoryError:
                    raise
                except Exception as exc:
                    raise RepositoryError(f"model {entry.name!r} version {version} failed to "
                                          f"load from {path}: {exc}") from exc
                if warm_up is not None:
                    warm_up(servable)
                versions[version] = servable
            self.servables[entry.name] = versions
            for label, version in sorted(entry.labels.items()):
                if version not in versions:
                    log.warning("label %s of model %s names version %d, which is not served: "
                                "requests for the label get NOT_FOUND", label, entry.name,
                                version)

    def resolve(self, model_spec: Any) -> Servable:
        """The version a ModelSpec names; TF Serving's errors for the misses."""
        name = model_spec.name
        versions = self.servables.get(name, {})
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            label = model_spec.version_label
            version = self.labels.get(name, {}).get(label)
            if version is None:
                raise ServingError("INVALID_ARGUMENT",
                                   f"Unrecognized servable version label: {label}")
        elif choice == "version":
            version = model_spec.version.value
        else:
            if not versions:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({name})")
            version = max(versions)
        if version not in versions:
            raise ServingError("NOT_FOUND", f"Servable not found for request: "
                                            f"Specific({name}, {version})")
        return versions[version]

    def versions(self, name: str) -> dict[int, Servable]:
        return self.servables.get(name, {})
