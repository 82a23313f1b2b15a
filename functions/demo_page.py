"""The page at ``GET /`` that tries the model from a browser (setting DEMO_PAGE, off by default).

One static file, ``static/demo.html``, with the served model's input size filled in, so the
page shrinks a photo exactly as a mini-program should before it posts it back to the same
URL. The page's script and style are inline and allowed by their hashes alone; it may only
talk to its own origin, so it adds nothing a client could not already do with the API.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from functions.httpio import HttpResponse
from modelmeta import ModelMetadata

TEMPLATE = Path(__file__).resolve().parent / "static" / "demo.html"
PLACEHOLDER = "__CONFIG__"

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def page_config(metadata: ModelMetadata | None, model_info: dict[str, Any] | None,
                problem: str | None = None) -> dict[str, Any]:
    """What the page needs to know about the model: its name and its image input size."""
    spec = metadata.image_input if metadata is not None else None
    image = spec.image if spec is not None else None
    return {
        "model": model_info,
        "input": None if image is None else {
            "width": image.width, "height": image.height, "channels": image.channels,
            "resize": image.resize},
        "outputs": [] if metadata is None else [
            {"name": o.name, "role": o.role, "encoding": o.encoding} for o in metadata.outputs],
        "problem": problem,
    }


def render(config: dict[str, Any]) -> HttpResponse:
    """The page with `config` embedded, and headers that keep it to its own origin."""
    template, policy = _template()
    # Inside <script>, "</" must not appear; "\u003c" is the same JSON string.
    embedded = json.dumps(config, ensure_ascii=True).replace("<", "\\u003c")
    body = template.replace(PLACEHOLDER, embedded, 1).encode("utf-8")
    return HttpResponse(200, body, {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    })


@functools.lru_cache(maxsize=1)
def _template() -> tuple[str, str]:
    """The page and its Content-Security-Policy, read once per process."""
    text = TEMPLATE.read_text(encoding="utf-8")
    if text.count(PLACEHOLDER) != 1:
        raise RuntimeError(f"{TEMPLATE} must contain {PLACEHOLDER} exactly once")
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for match in _INLINE.finditer(text):
        digest = hashlib.sha256(match.group(2).encode("utf-8")).digest()
        hashes[match.group(1)].append(f"'sha256-{base64.b64encode(digest).decode('ascii')}'")
    policy = "; ".join([
        "default-src 'none'",
        f"script-src {' '.join(hashes['script'])}",
        f"style-src {' '.join(hashes['style'])}",
        "img-src 'self' blob: data:",
        "connect-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return text, policy
