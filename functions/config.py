"""Every setting of the function, read from the environment in one place.

`Settings.from_env()` is called once, lazily, by the app; tests build
`Settings(...)` directly. Each field's default is what the README documents.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from functions.auth import AuthSettings
from modelmeta import LITERT_FLAVOURS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL_DIR = PROJECT_ROOT / "build" / "models" / "digits" / "served"
"""Where `modelprep demo` writes the wrapped demo model the function serves by default."""

BACKENDS = ("inprocess", "tfserving-rest", "tfserving-grpc", "litert")
REMOTE_BACKENDS = ("tfserving-rest", "tfserving-grpc")
REST_FORMATS = ("columnar", "row")
METRICS_KINDS = ("off", "prometheus", "emf")


class ConfigError(ValueError):
    """A setting has a value the function cannot start with."""


@dataclass(frozen=True)
class Settings:
    model_uri: str = str(DEMO_MODEL_DIR)
    """MODEL_URI: the prepared SavedModel directory to serve, or ``s3://bucket/prefix/`` /
    ``gs://bucket/prefix/`` to fetch it from S3 / Cloud Storage at cold start
    (functions/storage/)."""
    backend: str = "inprocess"
    """BACKEND: where the model runs."""
    model_name: str | None = None
    """MODEL_NAME: name reported in responses; default: the name in the model's metadata."""
    model_version: str | None = None
    """MODEL_VERSION: version reported in responses; default: the model directory's name
    when it is a number (TF Serving layout), else none. With a TF Serving backend it is
    also the version called (a number); unset, the server's latest."""
    model_version_label: str | None = None
    """MODEL_VERSION_LABEL: with a TF Serving backend, the version label to call
    (``stable``, ``canary``); not together with MODEL_VERSION."""
    model_metadata: str | None = None
    """MODEL_METADATA: with a TF Serving backend, the model's ``model_metadata.json`` or the
    prepared model directory holding it; default: the one under MODEL_URI."""
    tfserving_url: str | None = None
    """TFSERVING_URL: the model server; default ``http://127.0.0.1:8501`` for
    tfserving-rest, ``127.0.0.1:8500`` for tfserving-grpc (``grpcs://host:port`` for TLS)."""
    tfserving_rest_format: str = "columnar"
    """TFSERVING_REST_FORMAT: ``columnar`` (``{"inputs": ...}``) or ``row``
    (``{"instances": ...}``)."""
    request_timeout: float = 10.0
    """REQUEST_TIMEOUT: seconds one call to the model server may take, retries included."""
    upstream_retries: int = 2
    """UPSTREAM_RETRIES: further tries, with backoff, when the model server refuses the
    connection or answers 503 (unavailable); 0 turns them off."""
    max_body_bytes: int = 6_000_000
    """MAX_BODY_BYTES: largest request body; just under Lambda's and SCF's 6 MB."""
    max_response_bytes: int = 6_291_456
    """MAX_RESPONSE_BYTES: largest response body: Lambda's and SCF's 6 MB synchronous
    limit; a larger answer is a 413 that says which mask formats would fit."""
    max_image_pixels: int = 25_000_000
    """MAX_IMAGE_PIXELS: largest width x height of one image, checked from its header."""
    max_images: int = 16
    """MAX_IMAGES: most images in one request."""
    max_jpeg_scans: int = 100
    """MAX_JPEG_SCANS: most scans in one JPEG, counted from its markers before decoding
    (each scan of a progressive JPEG is a pass over the whole image; real ones have ~10)."""
    max_upstream_reply_bytes: int = 64 * 1024 * 1024
    """MAX_UPSTREAM_REPLY_BYTES: largest reply read from a TF Serving backend (REST body or
    gRPC message); a larger one is a 502."""
    request_read_timeout: float = 30.0
    """REQUEST_READ_TIMEOUT: seconds a client has to send a whole request (head and body)
    to the server `python -m functions.serving` runs; see functions/serving/."""
    keepalive_linger_ms: float = 2.0
    """KEEPALIVE_LINGER_MS: after answering on a kept-alive connection, how long the request
    thread waits for the client's next request, already whole, before handing the connection
    back to the server's event loop (functions/serving/worker.py); 0 turns it off."""
    worker_max_rss_mb: int = 2048
    """WORKER_MAX_RSS_MB: a server worker whose resident memory has grown past this is
    replaced by a fresh one after the request that took it there; 0 turns it off."""
    default_top_k: int = 5
    """TOP_K: how many classes each prediction lists unless the request says."""
    batch_max_images: int = 16
    """BATCH_MAX_IMAGES: with the in-process and LiteRT backends, requests that arrive while
    every model call (MODEL_CALLS) is busy are merged into the next one, up to this many
    images (functions/backends/batching.py); 1 turns merging off. A lone request never
    waits."""
    model_calls: int = 0
    """MODEL_CALLS: with the in-process backend, model calls that may run at once (each
    merging the requests queued while all were busy); 0 means two per CPU the process may
    use. LiteRT always runs one (its interpreter is not shared between threads)."""
    malloc_arenas: int = 2
    """MALLOC_ARENA_MAX (glibc's own variable): malloc arenas in a server worker; the
    function's workers apply it themselves when it is unset (functions/platforms/process.py)."""
    intra_op_threads: int = 0
    """INTRA_OP_THREADS: threads TensorFlow gives one operation (the in-process backend);
    0 means 1 when the process may use at most 2 CPUs (measured faster there for every
    model in the bench, with concurrent requests using the other CPU), else TensorFlow's
    own default, or TF_NUM_INTRAOP_THREADS when that is set."""
    preload: bool = True
    """PRELOAD: load the model when the worker starts rather than on first request."""
    auth: AuthSettings = field(default_factory=AuthSettings)
    """API_KEYS, HMAC_KEYS, HMAC_WINDOW_SECONDS, HMAC_MAX_NONCES, ALLOWED_APPIDS,
    TRUST_WECHAT_CLOUDRUN: see functions/auth.py. All off by default."""
    cors_origins: tuple[str, ...] = ()
    """CORS_ORIGINS: comma-separated origins allowed to call from a browser, or ``*``."""
    log_format: str = "json"
    """LOG_FORMAT: ``json`` (one object per line, for log services) or ``text``."""
    log_level: str = "INFO"
    """LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    demo_page: bool = False
    """DEMO_PAGE: answer ``GET /`` with a page to try the model from a browser. Off unless
    asked, so a deployed function exposes nothing but its API; ``make serve`` turns it on."""
    litert_allow_unverified: bool = False
    """LITERT_ALLOW_UNVERIFIED: serve a LiteRT flavour whose export missed its tolerance
    (``verified: false`` in its metadata), with a warning in the log; off, such a flavour
    is refused as not ready, with the reason."""
    litert_flavour: str = "float"
    """LITERT_FLAVOUR: with BACKEND=litert, ``float`` or ``int8``. MODEL_URI is then a
    ``.tflite`` file (its metadata beside it, ``.json``), a directory holding
    ``model_<flavour>.tflite``, or a prepared model directory holding ``litert/``."""
    model_cache_dir: str = str(Path(tempfile.gettempdir()) / "models")
    """MODEL_CACHE_DIR: where an ``s3://`` or ``gs://`` MODEL_URI is downloaded
    (``/tmp/models``; on Lambda, /tmp is the only writable place); see functions/storage/."""
    model_lock_timeout: float = 600.0
    """MODEL_LOCK_TIMEOUT: seconds a process waits for another one's download of the
    same model before it answers 503."""
    response_offload_uri: str | None = None
    """RESPONSE_OFFLOAD_URI: ``s3://bucket/prefix/`` where a Lambda or SCF response too
    large to return is stored; the client then gets a presigned URL to it. Unset, such a
    response is a 413. Raise MAX_RESPONSE_BYTES with it to let larger bodies through."""
    response_url_seconds: int = 900
    """RESPONSE_URL_SECONDS: how long that presigned URL works (at most 7 days)."""
    cloud_env: str | None = None
    """CLOUD_ENV: the WeChat cloud environment whose file ids (``{"file_id": "cloud://..."}``)
    the function fetches images from; unset, file ids are refused. See
    functions/request/cloudfiles.py."""
    wechat_api_url: str = "http://api.weixin.qq.com"
    """WECHAT_API_URL: WeChat's open API. Inside WeChat Cloud Run its open-API service answers
    this plain-HTTP address without an access token."""
    wechat_appid: str | None = None
    """WECHAT_APPID, WECHAT_APPSECRET: outside Cloud Run, the mini-program's credentials for
    an access token (``cgi-bin/stable_token``); unset, no token is sent."""
    wechat_appsecret: str | None = None
    cloud_file_timeout: float = 10.0
    """CLOUD_FILE_TIMEOUT: seconds to resolve and download a request's cloud files, all of
    them; callContainer waits 15 s for the whole answer."""
    metrics: str = "off"
    """METRICS: ``off``; ``prometheus`` (counted in the process, served as Prometheus text at
    ``GET /metrics``); or ``emf`` (one CloudWatch embedded-metric JSON line per request on
    stdout, for Lambda, which has nothing to scrape). See functions/metrics.py."""
    metrics_namespace: str = "tf-image-functions"
    """METRICS_NAMESPACE: the CloudWatch namespace of the ``emf`` metrics."""
    openapi: bool = False
    """OPENAPI: serve the API's OpenAPI 3.1 document at ``GET /openapi.json``."""
    trace_project: str | None = None
    """TRACE_PROJECT, else GOOGLE_CLOUD_PROJECT: the Google Cloud project that log lines'
    ``logging.googleapis.com/trace`` field names; unset, that field is left out."""
    otel_traces_exporter: str | None = None
    """OTEL_TRACES_EXPORTER (OpenTelemetry's own variable): when set, and not ``none``, each
    request becomes a span sent there (``otlp``, ``console``), if the OpenTelemetry SDK is
    installed; it is not imported otherwise. See functions/spans.py."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            model_uri=env.get("MODEL_URI") or cls.model_uri,
            backend=env.get("BACKEND", cls.backend).strip().lower(),
            model_name=env.get("MODEL_NAME") or None,
            model_version=env.get("MODEL_VERSION") or None,
            model_version_label=env.get("MODEL_VERSION_LABEL") or None,
            model_metadata=env.get("MODEL_METADATA") or None,
            tfserving_url=env.get("TFSERVING_URL") or None,
            tfserving_rest_format=env.get("TFSERVING_REST_FORMAT",
                                          cls.tfserving_rest_format).strip().lower(),
            request_timeout=_seconds(env, "REQUEST_TIMEOUT", cls.request_timeout),
            upstream_retries=_count(env, "UPSTREAM_RETRIES", cls.upstream_retries),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", cls.max_body_bytes),
            max_response_bytes=_int(env, "MAX_RESPONSE_BYTES", cls.max_response_bytes),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_images=_int(env, "MAX_IMAGES", cls.max_images),
            max_jpeg_scans=_int(env, "MAX_JPEG_SCANS", cls.max_jpeg_scans),
            max_upstream_reply_bytes=_int(env, "MAX_UPSTREAM_REPLY_BYTES",
                                          cls.max_upstream_reply_bytes),
            request_read_timeout=_seconds(env, "REQUEST_READ_TIMEOUT",
                                          cls.request_read_timeout),
            keepalive_linger_ms=_milliseconds(env, "KEEPALIVE_LINGER_MS",
                                              cls.keepalive_linger_ms),
            worker_max_rss_mb=_count(env, "WORKER_MAX_RSS_MB", cls.worker_max_rss_mb),
            default_top_k=_int(env, "TOP_K", cls.default_top_k),
            batch_max_images=_int(env, "BATCH_MAX_IMAGES", cls.batch_max_images),
            model_calls=_count(env, "MODEL_CALLS", cls.model_calls),
            malloc_arenas=_int(env, "MALLOC_ARENA_MAX", cls.malloc_arenas),
            intra_op_threads=(_count(env, "INTRA_OP_THREADS", cls.intra_op_threads)
                              or _count(env, "TF_NUM_INTRAOP_THREADS", 0)),
            preload=_bool(env, "PRELOAD", cls.preload),
            auth=AuthSettings(
                api_keys=_list(env, "API_KEYS"),
                hmac_keys=_pairs(env, "HMAC_KEYS"),
                hmac_window_seconds=_int(env, "HMAC_WINDOW_SECONDS", 300),
                allowed_appids=_list(env, "ALLOWED_APPIDS"),
                trust_wechat_cloudrun=_bool(env, "TRUST_WECHAT_CLOUDRUN", False),
                max_nonces=_int(env, "HMAC_MAX_NONCES", AuthSettings.max_nonces),
            ),
            cors_origins=_list(env, "CORS_ORIGINS"),
            log_format=env.get("LOG_FORMAT", cls.log_format).strip().lower(),
            log_level=env.get("LOG_LEVEL", cls.log_level).strip().upper(),
            demo_page=_bool(env, "DEMO_PAGE", cls.demo_page),
            litert_flavour=env.get("LITERT_FLAVOUR", cls.litert_flavour).strip().lower(),
            litert_allow_unverified=_bool(env, "LITERT_ALLOW_UNVERIFIED",
                                          cls.litert_allow_unverified),
            model_cache_dir=env.get("MODEL_CACHE_DIR") or cls.model_cache_dir,
            model_lock_timeout=_seconds(env, "MODEL_LOCK_TIMEOUT", cls.model_lock_timeout),
            response_offload_uri=env.get("RESPONSE_OFFLOAD_URI") or None,
            response_url_seconds=_int(env, "RESPONSE_URL_SECONDS", cls.response_url_seconds),
            cloud_env=env.get("CLOUD_ENV", "").strip() or None,
            wechat_api_url=env.get("WECHAT_API_URL", "").strip() or cls.wechat_api_url,
            wechat_appid=env.get("WECHAT_APPID", "").strip() or None,
            wechat_appsecret=env.get("WECHAT_APPSECRET", "").strip() or None,
            cloud_file_timeout=_seconds(env, "CLOUD_FILE_TIMEOUT", cls.cloud_file_timeout),
            metrics=env.get("METRICS", "").strip().lower() or cls.metrics,
            metrics_namespace=env.get("METRICS_NAMESPACE", "").strip() or cls.metrics_namespace,
            openapi=_bool(env, "OPENAPI", cls.openapi),
            trace_project=(env.get("TRACE_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT")
                           or None),
            otel_traces_exporter=env.get("OTEL_TRACES_EXPORTER", "").strip().lower() or None,
        )
        settings.validate()
        return settings

    def model_call_count(self) -> int:
        """MODEL_CALLS resolved: model calls at once in the in-process backend."""
        return self.model_calls or 2 * usable_cpus()

    def intra_op_thread_count(self) -> int | None:
        """INTRA_OP_THREADS resolved; None leaves TensorFlow's own default."""
        return self.intra_op_threads or (1 if usable_cpus() <= 2 else None)

    def validate(self) -> None:
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"LOG_FORMAT must be json or text, got {self.log_format!r}")
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                              f"got {self.log_level!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"BACKEND must be one of {', '.join(BACKENDS)}, "
                              f"got {self.backend!r}")
        if self.metrics not in METRICS_KINDS:
            raise ConfigError(f"METRICS must be one of {', '.join(METRICS_KINDS)}, "
                              f"got {self.metrics!r}")
        if len(self.metrics_namespace) > 255 or self.metrics_namespace.startswith("AWS/"):
            raise ConfigError("METRICS_NAMESPACE must be at most 255 characters and not "
                              f"start with AWS/, got {self.metrics_namespace[:300]!r}")
        if self.backend in REMOTE_BACKENDS:
            self._validate_remote()
        if self.backend == "litert" and self.litert_flavour not in LITERT_FLAVOURS:
            raise ConfigError(f"LITERT_FLAVOUR must be one of {', '.join(LITERT_FLAVOURS)}, "
                              f"got {self.litert_flavour!r}")
        self._validate_s3()
        if bool(self.wechat_appid) != bool(self.wechat_appsecret):
            raise ConfigError("set WECHAT_APPID and WECHAT_APPSECRET together, or neither "
                              "(inside WeChat Cloud Run, neither)")

    def _validate_remote(self) -> None:
        if self.model_version is not None and not self.model_version.strip().isdigit():
            raise ConfigError(f"MODEL_VERSION must be a version number with BACKEND="
                              f"{self.backend}, got {self.model_version!r}")
        if self.model_version is not None and self.model_version_label is not None:
            raise ConfigError("set MODEL_VERSION or MODEL_VERSION_LABEL, not both")
        if self.tfserving_rest_format not in REST_FORMATS:
            raise ConfigError(f"TFSERVING_REST_FORMAT must be columnar or row, "
                              f"got {self.tfserving_rest_format!r}")
        if not (0 < self.request_timeout <= 3600):
            raise ConfigError(f"REQUEST_TIMEOUT must be between 0 and 3600 seconds, "
                              f"got {self.request_timeout}")
        if self.upstream_retries > 10:
            raise ConfigError(f"UPSTREAM_RETRIES must be at most 10, got {self.upstream_retries}")

    def _validate_s3(self) -> None:
        for name, uri in (("MODEL_URI", self.model_uri),
                          ("RESPONSE_OFFLOAD_URI", self.response_offload_uri)):
            scheme = (uri or "")[:5].lower()
            if scheme in ("s3://", "gs://") and not (uri or "")[5:].split("/", 1)[0]:
                raise ConfigError(f"{name} must name a bucket: {scheme}BUCKET/PREFIX/, "
                                  f"got {uri!r}")
        if self.response_offload_uri and not self.response_offload_uri.lower().startswith(
                "s3://"):
            raise ConfigError("RESPONSE_OFFLOAD_URI must be an s3://BUCKET/PREFIX/ URI, "
                              f"got {self.response_offload_uri!r}")
        if self.response_url_seconds > 604_800:
            raise ConfigError("RESPONSE_URL_SECONDS must be at most 604800 (7 days), "
                              f"got {self.response_url_seconds}")


@dataclass(frozen=True)
class ServerSettings:
    """How `python -m functions.serving` runs gunicorn: the same variables (and defaults)
    as functions-framework's own server, which it replaces."""

    host: str = "0.0.0.0"
    """HOST (or ``--host``): the address to listen on."""
    port: int = 8080
    """PORT (or ``--port``)."""
    workers: int = 1
    """WORKERS: server processes, each with its own model."""
    threads: int = 0
    """THREADS: request threads per worker; 0 means 4 per CPU, as functions-framework."""
    timeout: int = 0
    """CLOUD_RUN_TIMEOUT_SECONDS: a worker silent this long is restarted; 0: never."""
    log_level: str = "error"
    """GUNICORN_LOG_LEVEL: gunicorn's own log (the function's is LOG_LEVEL)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if environ is None else environ
        settings = cls(
            host=env.get("HOST", "").strip() or cls.host,
            port=_int(env, "PORT", cls.port),
            workers=_int(env, "WORKERS", cls.workers),
            threads=_count(env, "THREADS", cls.threads),
            timeout=_count(env, "CLOUD_RUN_TIMEOUT_SECONDS", cls.timeout),
            log_level=env.get("GUNICORN_LOG_LEVEL", "").strip().lower() or cls.log_level,
        )
        if settings.port > 65535:
            raise ConfigError(f"PORT must be at most 65535, got {settings.port}")
        if settings.log_level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError("GUNICORN_LOG_LEVEL must be debug, info, warning, error or "
                              f"critical, got {settings.log_level!r}")
        return settings

    @property
    def thread_count(self) -> int:
        return self.threads or (os.cpu_count() or 1) * 4


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, which containers narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number that may be 0 (``_int`` wants at least 1)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not raw.strip().isdigit():
        raise ConfigError(f"{name} must be a whole number of 0 or more, got {raw!r}")
    return int(raw.strip())


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _milliseconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A short wait in milliseconds: 0 (off) up to a second."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of milliseconds, got {raw!r}") from None
    if not 0 <= value <= 1000:
        raise ConfigError(f"{name} must be between 0 and 1000 milliseconds, got {raw!r}")
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
