"""Which models and versions to serve: TF Serving's model repository and models.config.

A model repository is laid out as TF Serving expects: ``BASE/NAME/VERSION/`` with
VERSION a number (``00000123`` is version 123) holding a SavedModel. ``models.config``
is a text-format ``ModelServerConfig`` read with tensorflow-serving-api's own
protos: per model a name, a base path, a version policy (``latest`` N, ``all``,
``specific`` versions; default the latest one) and version labels.

Difference from TF Serving: a relative ``base_path`` is taken relative to the
config file (TF Serving takes it relative to its working directory), and the
repository is read once at start (no polling for new versions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2


class RepositoryError(ValueError):
    """models.config or the repository it points at cannot be served."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    base_path: Path
    policy: str = "latest"
    """``latest``, ``all`` or ``specific``."""
    num_versions: int = 1
    """For ``latest``: how many of the newest versions to serve."""
    versions: tuple[int, ...] = ()
    """For ``specific``: the versions to serve."""
    labels: dict[str, int] = field(default_factory=dict)


def parse_model_config(text: str, base_dir: Path | None = None) -> list[ModelEntry]:
    """``models.config`` text as model entries; `RepositoryError` says what is wrong."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise RepositoryError(f"models.config does not parse: {exc}") from exc
    if config.WhichOneof("config") != "model_config_list":
        raise RepositoryError("models.config needs a model_config_list")
    entries = []
    for model in config.model_config_list.config:
        if not model.name:
            raise RepositoryError("every model in models.config needs a name")
        if model.model_platform not in ("", "tensorflow"):
            raise RepositoryError(f"model {model.name!r}: model_platform "
                                  f"{model.model_platform!r} is not served here (tensorflow is)")
        if not model.base_path:
            raise RepositoryError(f"model {model.name!r} needs a base_path")
        base = Path(model.base_path)
        if not base.is_absolute() and base_dir is not None:
            base = base_dir / base
        policy = model.model_version_policy.WhichOneof("policy_choice") or "latest"
        entries.append(ModelEntry(
            name=model.name,
            base_path=base,
            policy=policy,
            num_versions=max(1, model.model_version_policy.latest.num_versions or 1),
            versions=tuple(model.model_version_policy.specific.versions),
            labels=dict(model.version_labels),
        ))
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise RepositoryError(f"models.config names a model twice: {names}")
    return entries


def read_model_config(path: str | Path) -> list[ModelEntry]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_model_config(text, path.parent)


def versions_on_disk(base_path: Path) -> list[int]:
    """Numbered subdirectories holding a SavedModel, in ascending order."""
    if not base_path.is_dir():
        raise RepositoryError(f"model base path {base_path} is not a directory")
    versions = []
    for child in base_path.iterdir():
        if child.name.isdigit() and child.is_dir() and (
                (child / "saved_model.pb").is_file() or (child / "saved_model.pbtxt").is_file()):
            versions.append(int(child.name))
    return sorted(versions)


def version_dir(base_path: Path, version: int) -> Path:
    """The directory of a version, whatever zero padding its name has."""
    for child in base_path.iterdir():
        if child.name.isdigit() and int(child.name) == version:
            return child
    raise RepositoryError(f"no version {version} under {base_path}")


def versions_to_serve(entry: ModelEntry) -> list[int]:
    """What the version policy picks from what is on disk."""
    found = versions_on_disk(entry.base_path)
    if not found:
        raise RepositoryError(f"model {entry.name!r}: no versions under {entry.base_path} "
                              "(expected numbered directories holding a SavedModel)")
    if entry.policy == "all":
        return found
    if entry.policy == "specific":
        missing = sorted(set(entry.versions) - set(found))
        if missing:
            raise RepositoryError(f"model {entry.name!r}: specific versions {missing} are not "
                                  f"under {entry.base_path} (found {found})")
        return sorted(set(entry.versions))
    return found[-entry.num_versions:]
