"""One `App` per process, built lazily, shared by every platform binding.

A server's master process imports the entry module and then forks workers, and
TensorFlow must not be loaded before a fork; Lambda and SCF reuse one process for many
invocations. So the app is built on first use (or right after a fork), from the
environment, and kept.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import TYPE_CHECKING

from functions.config import ConfigError, Settings
from functions.errors import ServiceError

if TYPE_CHECKING:
    from functions.app import App

log = logging.getLogger("functions")

_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)

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
                # Imported here, not at the top: a server's master process imports the
                # entry module and forks, and the app's modules (numpy, Pillow, ...)
                # imported in the master would be held twice, once per process, as
                # their objects are written to (about 15 MB measured).
                from functions.app import App

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


def limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas in a server worker at MALLOC_ARENA_MAX (default 2).

    glibc gives threads that allocate at once their own arenas (up to 8 per CPU), and
    each keeps the memory it once held: with eight request threads and TensorFlow's
    pools, the worker's peak grew 10-18 MB more under the bench's load than with two
    (MobileNetV2 224, 2 CPUs; throughput within the noise). glibc reads the variable
    itself only when a process starts, so the worker applies it; elsewhere than glibc
    this does nothing.
    """
    try:
        arenas = Settings.from_env().malloc_arenas
    except ConfigError:
        arenas = Settings.malloc_arenas  # the app answers every request with what is wrong
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, arenas)
