"""Entry point for Tencent SCF (WeChat cloud): API Gateway triggers and function URLs.

    Handler: functions.platforms.scf.main_handler

SCF's API Gateway integration wants ``{"isBase64Encoded", "statusCode", "headers",
"body"}`` back; header names arrive in any case and are matched case-insensitively.
This module only converts (the dialect is `functions.platforms.events.ScfEvent`); the function is
`functions.app.App`, as for every platform. The model loads on the first request:
SCF's init phase is short by default, and importing TensorFlow can outlast it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from functions.platforms.events import scf_event
from functions.platforms.gateway import serve
from functions.platforms.process import ProcessApp

_app = ProcessApp()


def main_handler(event: Any, context: Any) -> dict[str, Any]:
    request_id = context.get("request_id") if isinstance(context, Mapping) else None
    return serve(scf_event(event), _app, request_id if isinstance(request_id, str) else None)
