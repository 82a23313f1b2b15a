"""gunicorn's settings for the function: a config module gunicorn reads as it is.

    python -m functions.serving                    # runs gunicorn with these settings
    gunicorn -c python:functions.serving.gunicorn_conf functions.serving.wsgi:app

Everything comes from the environment through `functions.config` (HOST, PORT, WORKERS,
THREADS, CLOUD_RUN_TIMEOUT_SECONDS, GUNICORN_LOG_LEVEL as functions-framework reads them;
REQUEST_READ_TIMEOUT, KEEPALIVE_LINGER_MS, MAX_BODY_BYTES and WORKER_MAX_RSS_MB for what
is added). What differs from functions-framework's own gunicorn:

* ``limit_request_line`` is gunicorn's maximum, 8190 bytes, instead of 0 (unlimited):
  a request line of megabytes is a 414 at once, not a parse in quadratic time that slows
  every other request. Header fields keep gunicorn's limits (100 fields of 8190 bytes).
* the worker is `functions.serving.worker.BufferingWorker`: requests are read whole in
  the event loop before a thread is taken, within REQUEST_READ_TIMEOUT, and a thread that
  has answered takes the connection's next request itself if it arrives whole within
  KEEPALIVE_LINGER_MS.
* after each POST, a worker over WORKER_MAX_RSS_MB is replaced (`memory`).
* the app is imported once in the master (``preload_app``), which never loads the model:
  each worker, and each replacement, forks from it and loads the model itself.
"""

from __future__ import annotations

from typing import Any

from functions.config import ConfigError, ServerSettings, Settings
from functions.serving.memory import recycle_if_grown

_server = ServerSettings.from_env()
try:
    _ceiling_mb = Settings.from_env().worker_max_rss_mb
except ConfigError:
    _ceiling_mb = Settings.worker_max_rss_mb  # the app answers what is misconfigured

bind = [f"{_server.host}:{_server.port}"]
workers = _server.workers
threads = _server.thread_count
worker_class = "functions.serving.worker.BufferingWorker"
timeout = _server.timeout
keepalive = 5
loglevel = _server.log_level
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
preload_app = True
wsgi_app = "functions.serving.wsgi:app"


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """After every POST (what decodes images): replace this worker if its memory has grown
    past the ceiling. Health checks never do, so a worker still loading its model (which
    grows it) is not replaced for that."""
    if environ.get("REQUEST_METHOD") == "POST":
        recycle_if_grown(worker, _ceiling_mb)
