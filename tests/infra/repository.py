"""A TF Serving model repository of real models, and the local model server over it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SHARED_FIXTURES

TFSERVING_FIXTURES = SHARED_FIXTURES / "tfserving"
HALF_PLUS_TWO = TFSERVING_FIXTURES / "saved_model_half_plus_two_cpu"
HALF_PLUS_THREE = TFSERVING_FIXTURES / "saved_model_half_plus_three"
GOLDEN_METADATA = TFSERVING_FIXTURES / "saved_model_half_plus_two_2_versions_metadata.json"

MODELS_CONFIG = """
model_config_list {
  config {
    name: "digits"
    base_path: "digits"
    model_platform: "tensorflow"
    version_labels { key: "stable" value: 1 }
  }
  config {
    name: "saved_model_half_plus_two_2_versions"
    base_path: "%(half_plus_two)s"
    model_platform: "tensorflow"
    version_labels { key: "stable" value: 123 }
  }
  config {
    name: "half_plus_three"
    base_path: "%(half_plus_three)s"
  }
}
"""


def make_repository(base: Path, digits_model: Path) -> Path:
    """``base/digits/1`` -> the demo model; the TF Serving fixtures by absolute path."""
    (base / "digits").mkdir(parents=True, exist_ok=True)
    link = base / "digits" / "1"
    if not link.exists():
        link.symlink_to(digits_model, target_is_directory=True)
    config = base / "models.config"
    config.write_text(MODELS_CONFIG % {"half_plus_two": HALF_PLUS_TWO,
                                       "half_plus_three": HALF_PLUS_THREE})
    return config


def start_local_model_server(base: Path, digits_model: Path, **options):
    """The config has version labels, so the server starts as TF Serving must with them:
    with ``--allow_version_labels_for_unavailable_models``."""
    from infra.modelserver.server import ModelServer, ServerOptions

    config = make_repository(base, digits_model)
    options.setdefault("allow_version_labels_for_unavailable_models", True)
    return ModelServer(ServerOptions(port=0, rest_api_port=0, model_config_file=config,
                                     **options)).start()
