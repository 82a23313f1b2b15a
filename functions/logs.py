"""Structured logs: one JSON object per line, with the request id, its trace, timings, sizes.

Log services (Cloud Logging, CloudWatch, CLS) index JSON lines without parsing rules.
What is logged about a request is chosen here, field by field: never bodies, images,
keys or signatures.

Every line a request produces carries its trace, read from whichever the caller or the
platform sent, first found first:

    traceparent: 00-TRACE(32 hex)-SPAN(16 hex)-FLAGS      W3C Trace Context (any client)
    X-Cloud-Trace-Context: TRACE/SPAN(decimal);o=1         Google Cloud's load balancers
    X-Amzn-Trace-Id: Root=1-8hex-24hex;Parent=16hex;...    AWS load balancers, API Gateway
    _X_AMZN_TRACE_ID (environment, per invocation)         Lambda with X-Ray tracing

and written in the fields each log viewer links on: ``trace_id`` and ``span_id`` (W3C
form) always; ``logging.googleapis.com/trace`` (``projects/PROJECT/traces/TRACE``),
``logging.googleapis.com/spanId`` and ``logging.googleapis.com/trace_sampled`` when the
Google Cloud project is known (TRACE_PROJECT or GOOGLE_CLOUD_PROJECT); ``xray_trace_id``
(``1-8hex-24hex``) when the trace came from X-Ray. Calls to a TF Serving backend carry a
``traceparent`` of the same trace (`outgoing_headers`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request this thread is serving, added to every log line it writes."""


@dataclass(frozen=True)
class TraceContext:
    """The trace a request belongs to, as the caller or the platform named it."""

    trace_id: str
    """32 lower-case hex digits (W3C form; an X-Ray id without its ``1-`` and dash)."""
    span_id: str | None = None
    """The caller's span: 16 lower-case hex digits."""
    sampled: bool | None = None
    xray_trace_id: str | None = None
    """``1-5759e988-bd862e3fe1be46a994272793``, when X-Ray named the trace."""
    project: str | None = None
    """The Google Cloud project the ``logging.googleapis.com/trace`` field names."""

    def ids(self) -> dict[str, object]:
        """The fields every log line of the request carries."""
        fields: dict[str, object] = {"trace_id": self.trace_id}
        if self.span_id:
            fields["span_id"] = self.span_id
        if self.project:
            fields["logging.googleapis.com/trace"] = (
                f"projects/{self.project}/traces/{self.trace_id}")
            if self.span_id:
                fields["logging.googleapis.com/spanId"] = self.span_id
            if self.sampled is not None:
                fields["logging.googleapis.com/trace_sampled"] = self.sampled
        if self.xray_trace_id:
            fields["xray_trace_id"] = self.xray_trace_id
        return fields

    def traceparent(self, span_id: str | None = None) -> str:
        """A ``traceparent`` for a call this request makes, from span `span_id` (new if none)."""
        flags = "01" if self.sampled else "00"
        return f"00-{self.trace_id}-{span_id or os.urandom(8).hex()}-{flags}"


trace: ContextVar[TraceContext | None] = ContextVar("trace", default=None)
"""The trace of the request this thread is serving, added to every log line it writes."""

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([01]))?$")
_XRAY_ROOT = re.compile(r"^1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def trace_context(headers: Mapping[str, str], lambda_trace: str | None = None,
                  project: str | None = None) -> TraceContext | None:
    """The request's trace from its headers (or Lambda's ``_X_AMZN_TRACE_ID``); None if none.

    A malformed header is ignored, never an error: tracing must not fail a request.
    """
    amazon = (_xray(headers.get("x-amzn-trace-id", "")) or _xray(lambda_trace or ""))
    found = (_w3c(headers.get("traceparent", ""))
             or _cloud(headers.get("x-cloud-trace-context", "")) or amazon)
    if found is None:
        return None
    trace_id, span_id, sampled = found
    xray_id = f"1-{amazon[0][:8]}-{amazon[0][8:]}" if amazon else None
    return TraceContext(trace_id, span_id, sampled, xray_id, project)


def request_trace(headers: Mapping[str, str], project: str | None) -> TraceContext | None:
    """`trace_context` of a request being served, with Lambda's ``_X_AMZN_TRACE_ID``.

    Lambda sets that variable afresh for each invocation: it is the invocation's context,
    not a setting, so it is read here, per request, and not in functions/config.py.
    """
    return trace_context(headers, os.environ.get("_X_AMZN_TRACE_ID"), project)


def outgoing_headers() -> dict[str, str]:
    """``{"traceparent": ...}`` for a call to a model server, of the request's trace."""
    context = trace.get()
    return {"traceparent": context.traceparent()} if context is not None else {}


_Found = tuple[str, str | None, bool | None]


def _w3c(value: str) -> _Found | None:
    match = _TRACEPARENT.match(value.strip())
    if not match:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE \
            or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def _cloud(value: str) -> _Found | None:
    match = _CLOUD_TRACE.match(value.strip())
    if not match or match.group(1) == _ZERO_TRACE:
        return None
    span = int(match.group(2)) if match.group(2) else 0
    span_id = f"{span:016x}" if 0 < span < 2 ** 64 else None
    sampled = None if match.group(3) is None else match.group(3) == "1"
    return match.group(1).lower(), span_id, sampled


def _xray(value: str) -> _Found | None:
    parts = dict(p.strip().partition("=")[::2] for p in value.split(";") if "=" in p)
    root = _XRAY_ROOT.match(parts.get("Root", ""))
    if not root:
        return None
    trace_id = (root.group(1) + root.group(2)).lower()
    if trace_id == _ZERO_TRACE:
        return None
    parent = parts.get("Parent", "").lower()
    span_id = parent if re.fullmatch(r"[0-9a-f]{16}", parent) and parent != _ZERO_SPAN else None
    sampled = {"1": True, "0": False}.get(parts.get("Sampled", ""))
    return trace_id, span_id, sampled

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        context = trace.get()
        if context is not None:
            for key, value in context.ids().items():
                record.__dict__.setdefault(key, value)
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
