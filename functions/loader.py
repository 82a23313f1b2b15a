"""The model of this process: loaded once, shared by every request thread.

Loading takes seconds (importing TensorFlow, restoring variables), so it is
done once per process: in the background as soon as a server worker starts
(`start_loading`), or by the first request that needs it. Requests wait for a
load under way; health checks do not, they report "loading".

A failed load is tried again by the first request or health check that comes
`RETRY_SECONDS` after it, so a model store that was unreachable at cold start, or
a model file replaced in place, heals without a restart.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable

from functions.backends import Backend
from functions.errors import ModelNotReady, ServiceError

log = logging.getLogger(__name__)

RETRY_SECONDS = 30.0


class LoadedModel:
    def __init__(self, factory: Callable[[], Backend]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = False
        self._backend: Backend | None = None
        self._error: ServiceError | None = None
        self._failed_at = 0.0
        self.load_seconds: float | None = None

    def start_loading(self) -> None:
        """Begin loading in a background thread (once, or again after a failure); return."""
        with self._lock:
            self._forget_old_failure()
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def get(self, timeout: float | None = None) -> Backend:
        """The loaded backend; loads it now if nobody has started to."""
        with self._lock:
            self._forget_old_failure()
            first = not self._started
            self._started = True
        if first:
            self._load()
        elif not self._done.wait(timeout):
            raise ModelNotReady("the model is still loading; retry shortly",
                                headers={"Retry-After": "2"})
        if self._error is not None:
            raise self._error
        assert self._backend is not None
        return self._backend

    def status(self) -> tuple[str, ServiceError | None]:
        """``("ready" | "loading" | "failed" | "idle", error)``, without waiting."""
        if not self._done.is_set():
            return ("loading" if self._started else "idle"), None
        return ("failed", self._error) if self._error else ("ready", None)

    def _forget_old_failure(self) -> None:
        """Under the lock: after a failure and a pause, allow one more load."""
        if (self._done.is_set() and self._error is not None
                and time.monotonic() - self._failed_at >= RETRY_SECONDS):
            self._started, self._error = False, None
            self._done.clear()

    def _load(self) -> None:
        start = time.monotonic()
        try:
            backend = self._factory()
            try:
                _warm_up(backend)
            except ServiceError as exc:
                if exc.status < 502:  # the model itself refuses: loading failed
                    raise
                # A model server that is down or slow now may be up by the next request.
                log.warning("warm-up skipped: %s", exc.message)
            self._backend = backend
            self.load_seconds = time.monotonic() - start
            log.info("model %r loaded in %.2f s", backend.metadata.name, self.load_seconds)
        except ServiceError as exc:
            log.error("model failed to load: %s", exc.message)
            self._error, self._failed_at = exc, time.monotonic()
        except Exception as exc:
            log.exception("model failed to load")
            self._failed_at = time.monotonic()
            self._error = ModelNotReady(f"the model failed to load ({type(exc).__name__}); "
                                        "the server log has the details")
        finally:
            self._done.set()


def _warm_up(backend: Backend) -> None:
    """Run one blank image through the model, so the first client does not pay the tracing.

    It goes through the same input building as a request (`functions.feed`), so models
    that take quantized pixels and extra tensors are warmed as well as those taking files.
    """
    spec = backend.metadata.image_input
    if spec is None or spec.image is None:
        return
    from PIL import Image

    from functions.feed import model_inputs
    from functions.request.images import inspect_image

    buf = io.BytesIO()
    mode = "L" if spec.image.channels == 1 else "RGB"
    Image.new(mode, (spec.image.width, spec.image.height)).save(buf, format="PNG")
    image = inspect_image(buf.getvalue(), "warm-up", spec.image.width * spec.image.height)
    backend.predict(model_inputs(backend.metadata, [image]))
