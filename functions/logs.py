"""Structured logs: one JSON object per line, with the request id, timings and sizes.

Log services (Cloud Logging, CloudWatch, CLS) index JSON lines without parsing rules.
What is logged about a request is chosen here, field by field: never bodies, images,
keys or signatures.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request this thread is serving, added to every log line it writes."""

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items()
                      if k not in _RESERVED and v is not None})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(log_format: str, level: str) -> None:
    """Send the function's logs to stderr in the chosen format (once per process)."""
    root = logging.getLogger("functions")
    if any(getattr(h, "_functions_handler", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._functions_handler = True  # type: ignore[attr-defined]
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
