"""Every setting of the function, read from the environment in one place.

`Settings.from_env()` is called once, lazily, by the app; tests build
`Settings(...)` directly. Each field's default is what the README documents.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL_DIR = PROJECT_ROOT / "build" / "models" / "digits" / "served"
"""Where `modelprep demo` writes the wrapped demo model the function serves by default."""

BACKENDS = ("inprocess",)


class ConfigError(ValueError):
    """A setting has a value the function cannot start with."""


@dataclass(frozen=True)
class Settings:
    model_uri: str = str(DEMO_MODEL_DIR)
    """MODEL_URI: the prepared SavedModel directory to serve."""
    backend: str = "inprocess"
    """BACKEND: where the model runs."""
    model_name: str | None = None
    """MODEL_NAME: name reported in responses; default: the name in the model's metadata."""
    model_version: str | None = None
    """MODEL_VERSION: version reported in responses; default: the model directory's name
    when it is a number (TF Serving layout), else none."""
    max_body_bytes: int = 6_000_000
    """MAX_BODY_BYTES: largest request body; just under Lambda's and SCF's 6 MB."""
    max_image_pixels: int = 25_000_000
    """MAX_IMAGE_PIXELS: largest width x height of one image, checked from its header."""
    max_images: int = 16
    """MAX_IMAGES: most images in one request."""
    default_top_k: int = 5
    """TOP_K: how many classes each prediction lists unless the request says."""
    preload: bool = True
    """PRELOAD: load the model when the worker starts rather than on first request."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            model_uri=env.get("MODEL_URI") or cls.model_uri,
            backend=env.get("BACKEND", cls.backend).strip().lower(),
            model_name=env.get("MODEL_NAME") or None,
            model_version=env.get("MODEL_VERSION") or None,
            max_body_bytes=_int(env, "MAX_BODY_BYTES", cls.max_body_bytes),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_images=_int(env, "MAX_IMAGES", cls.max_images),
            default_top_k=_int(env, "TOP_K", cls.default_top_k),
            preload=_bool(env, "PRELOAD", cls.preload),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"BACKEND must be one of {', '.join(BACKENDS)}, "
                              f"got {self.backend!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")
