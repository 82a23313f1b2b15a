"""Every setting of the function, read from the environment in one place.

`Settings.from_env()` is called once, lazily, by the app; tests build
`Settings(...)` directly. Each field's default is what the README documents.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from functions.auth import AuthSettings

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
    auth: AuthSettings = field(default_factory=AuthSettings)
    """API_KEYS, HMAC_KEYS, HMAC_WINDOW_SECONDS, ALLOWED_APPIDS, TRUST_WECHAT_CLOUDRUN:
    see functions/auth.py. All off by default."""
    cors_origins: tuple[str, ...] = ()
    """CORS_ORIGINS: comma-separated origins allowed to call from a browser, or ``*``."""
    log_format: str = "json"
    """LOG_FORMAT: ``json`` (one object per line, for log services) or ``text``."""
    log_level: str = "INFO"
    """LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""

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
            auth=AuthSettings(
                api_keys=_list(env, "API_KEYS"),
                hmac_keys=_pairs(env, "HMAC_KEYS"),
                hmac_window_seconds=_int(env, "HMAC_WINDOW_SECONDS", 300),
                allowed_appids=_list(env, "ALLOWED_APPIDS"),
                trust_wechat_cloudrun=_bool(env, "TRUST_WECHAT_CLOUDRUN", False),
            ),
            cors_origins=_list(env, "CORS_ORIGINS"),
            log_format=env.get("LOG_FORMAT", cls.log_format).strip().lower(),
            log_level=env.get("LOG_LEVEL", cls.log_level).strip().upper(),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"LOG_FORMAT must be json or text, got {self.log_format!r}")
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                              f"got {self.log_level!r}")
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


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _pairs(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _list(env, name):
        key, sep, value = item.partition(":")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{name} takes id:secret pairs separated by commas")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


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
