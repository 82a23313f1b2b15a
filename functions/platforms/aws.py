"""Entry point for AWS Lambda: API Gateway (REST and HTTP APIs), Function URLs and ALB.

    Handler: functions.platforms.aws.lambda_handler        (zip function)
    CMD ["functions.platforms.aws.lambda_handler"]   (container image)

This module only converts between Lambda events and `functions.httpio` (the dialects are
in `functions.platforms.events`); the function itself is `functions.app.App`, exactly as for
`functions.main` and `functions.platforms.scf`. Inside Lambda, the model is loaded while the
module is imported, in the init phase, so the first request does not wait for it
(PRELOAD=false turns that off). Nothing is loaded when the module is merely imported
elsewhere.
"""

from __future__ import annotations

import os
from typing import Any

from functions.platforms.events import lambda_event
from functions.platforms.gateway import serve
from functions.platforms.process import ProcessApp

_app = ProcessApp()


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    return serve(lambda_event(event), _app, getattr(context, "aws_request_id", None))


if os.environ.get("AWS_LAMBDA_RUNTIME_API"):  # set by Lambda (and its emulator) only
    _app.preload(wait=True)
