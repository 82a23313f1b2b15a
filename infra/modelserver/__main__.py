"""``python -m infra.modelserver``: tensorflow_model_server's command line, locally.

Flags keep tensorflow_model_server's names and meaning; flags of the real server
that have no effect here (batching, polling, TPU...) are accepted and reported as
ignored, so one command line works for both. When ready it prints one line,
``ready grpc=HOST:PORT rest=http://HOST:PORT``, which scripts wait for.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

IGNORED_FLAGS = ("enable_batching", "batching_parameters_file",
                 "model_config_file_poll_wait_seconds",
                 "file_system_poll_wait_seconds", "tensorflow_session_parallelism",
                 "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
                 "rest_api_num_threads", "num_load_threads", "num_unload_threads",
                 "platform_config_file",
                 "xla_cpu_compilation_enabled", "enable_grpc_healthcheck_service")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m infra.modelserver",
        description="Serve a TF Serving model repository over TF Serving's REST and gRPC APIs.")
    p.add_argument("--port", type=int, default=8500,
                   help="gRPC port (0: any free port; -1: no gRPC). Default 8500.")
    p.add_argument("--rest_api_port", type=int, default=-1,
                   help="REST port (0: any free port; -1: no REST, TF Serving's default).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (TF Serving uses every interface). "
                        "Default 127.0.0.1.")
    p.add_argument("--model_config_file", type=Path, help="models.config (ModelServerConfig text)")
    p.add_argument("--model_name", default="default", help="name of the one model of "
                   "--model_base_path")
    p.add_argument("--model_base_path", type=Path, help="BASE/NAME of one model to serve")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30_000)
    p.add_argument("--grpc_max_threads", type=int, default=16)
    p.add_argument("--enable_model_warmup", type=_bool, default=True)
    p.add_argument("--enable_serialization_as_tensor_content", type=_bool, default=False)
    p.add_argument("--monitoring_config_file", type=Path)
    p.add_argument("--allow_version_labels_for_unavailable_models", type=_bool, nargs="?",
                   const=True, default=False,
                   help="accept version_labels in models.config for versions not loaded yet. "
                        "TF Serving assigns labels before it loads anything, so a config "
                        "with labels needs this flag at start (as it does here). Default false.")
    for flag in IGNORED_FLAGS:
        p.add_argument(f"--{flag}", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    log = logging.getLogger("infra.modelserver")
    for flag in IGNORED_FLAGS:
        if getattr(args, flag) is not None:
            log.warning("--%s has no effect on the local model server", flag)
    if args.port < 0 and args.rest_api_port < 0:
        print("error: nothing to listen on: give --port or --rest_api_port", file=sys.stderr)
        return 2

    from infra.modelserver.repository import RepositoryError
    from infra.modelserver.server import ModelServer, ServerOptions

    options = ServerOptions(
        port=args.port if args.port >= 0 else None,
        rest_api_port=args.rest_api_port if args.rest_api_port >= 0 else None,
        host=args.host,
        model_config_file=args.model_config_file,
        model_name=args.model_name,
        model_base_path=args.model_base_path,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms,
        grpc_max_threads=args.grpc_max_threads,
        enable_model_warmup=args.enable_model_warmup,
        enable_serialization_as_tensor_content=args.enable_serialization_as_tensor_content,
        monitoring_config_file=args.monitoring_config_file,
        allow_version_labels_for_unavailable_models=(
            args.allow_version_labels_for_unavailable_models),
    )
    try:
        server = ModelServer(options).start()
    except (RepositoryError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    grpc_part = f"grpc={server.grpc_target}" if server.grpc else "grpc=off"
    rest_part = f"rest={server.rest_url}" if server.rest else "rest=off"
    print(f"ready {grpc_part} {rest_part}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
