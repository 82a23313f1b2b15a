"""One `App` per process, built lazily, shared by every platform binding.

A server's master process imports the entry module and then forks workers, and
TensorFlow must not be loaded before a fork; Lambda and SCF reuse one process for many
invocations. So the app is built on first use (or right after a fork), from the
environment, and kept.
"""

from __future__ import annotations

import logging
import threading

from functions.app import App
from functions.config import ConfigError, Settings
from functions.errors import ServiceError

log = logging.getLogger("functions")

MISCONFIGURED = ServiceError("the function is misconfigured; the server log has the details")
"""What a client gets while the settings are invalid (the log says which one)."""


class ProcessApp:
    """The process's `App`, built from the environment on first use."""

    def __init__(self) -> None:
        self._app: App | None = None
        self._lock = threading.Lock()

    def get(self) -> App:
        """The app; raises `ConfigError` (logged) when the settings are invalid."""
        with self._lock:
            if self._app is None:
                try:
                    self._app = App(Settings.from_env())
                except ConfigError as exc:
                    log.error("configuration error: %s", exc)
                    raise
            return self._app

    def forget(self) -> None:
        """Drop the app and its lock: a forked child must never inherit the parent's."""
        self._app, self._lock = None, threading.Lock()

    def preload(self, *, wait: bool) -> None:
        """Start loading the model now, if PRELOAD says so; ``wait`` blocks until loaded.

        Failures are kept by the model and answered as 503 on each request, so this
        never raises: a function that cannot load its model still answers why.
        """
        try:
            if not Settings.from_env().preload:
                return
            model = self.get().model
            if wait:
                model.get()
            else:
                model.start_loading()
        except ConfigError:
            pass  # logged by get(); every request answers MISCONFIGURED
        except ServiceError:
            pass  # recorded by the model; every request will say what went wrong
        except Exception:
            log.exception("preloading the model failed")
