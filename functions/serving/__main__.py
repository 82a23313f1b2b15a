"""``python -m functions.serving [--host HOST] [--port PORT]``: the function on gunicorn.

The flags are functions-framework's (``--host`` / HOST, ``--port`` / PORT); every other
setting is an environment variable (`functions.serving.gunicorn_conf`).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from gunicorn.app.base import BaseApplication


class Server(BaseApplication):
    """gunicorn with the settings of `functions.serving.gunicorn_conf` and nothing else."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from functions.serving.wsgi import app

        return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m functions.serving",
        description="Serve the function on gunicorn as the project configures it; every "
                    "other setting is an environment variable (see the README).")
    parser.add_argument("--host", help="address to listen on (HOST; default 0.0.0.0)")
    parser.add_argument("--port", help="port to listen on (PORT; default 8080)")
    args = parser.parse_args(argv)
    if args.host:
        os.environ["HOST"] = args.host
    if args.port:
        os.environ["PORT"] = args.port
    from functions.config import ConfigError

    try:
        from functions.serving import gunicorn_conf
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    options = {name: getattr(gunicorn_conf, name) for name in (
        "bind", "workers", "threads", "worker_class", "timeout", "keepalive", "loglevel",
        "limit_request_line", "limit_request_fields", "limit_request_field_size",
        "preload_app", "post_request")}
    Server(options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
