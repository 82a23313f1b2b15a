"""Platform-neutral HTTP request and response.

Each platform binding (functions-framework, Lambda, SCF) converts its own event
into an `HttpRequest` and an `HttpResponse` back, and nothing else: all routing,
parsing and error handling happen on these two types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive header map (platforms disagree on case)."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = {k.lower(): str(v) for k, v in (items or {}).items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key.lower(), default)  # (Mapping.get goes through a raise)

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        """The media type alone, lower-cased, without parameters."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def with_headers(self, headers: dict[str, str]) -> HttpResponse:
        return HttpResponse(self.status, self.body, {**self.headers, **headers})

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None):
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return cls(status, body, {"Content-Type": "application/json; charset=utf-8",
                                  **(headers or {})})
