"""Servers the bench measures, started as users start them, on a free loopback port.

`start_function` runs ``python -m functions.serving`` exactly as ``make serve`` does
(or ``functions-framework --target predict``, as Cloud Functions runs it), and
`ServerProcess` works for any server command: the peer uses it too. The time
the process was started is kept, so cold start is measured from the moment
the process is asked for, not from when it first answers a health check.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import client, procs
from bench.client import BenchError, Request

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((client.HOST, 0))
        return sock.getsockname()[1]


def quiet_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment, TensorFlow's C++ chatter off, every TensorFlow process on
    the intra-op threads the function picks (`tf_threads_env`), plus ``extra``."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
            **tf_threads_env(), **extra}


def tf_threads_env() -> dict[str, str]:
    """``TF_NUM_INTRAOP_THREADS`` set to what the function's in-process backend uses here
    (INTRA_OP_THREADS, by default 1 on 2 CPUs), so the direct call and the peer run
    TensorFlow exactly as the function does and the comparison is of everything else.
    Empty when the function leaves TensorFlow's default."""
    from functions.config import Settings

    threads = Settings.from_env().intra_op_thread_count()
    return {"TF_NUM_INTRAOP_THREADS": str(threads)} if threads else {}


@dataclass
class ServerProcess:
    name: str
    port: int
    process: subprocess.Popen
    log: Path
    started: float
    """``time.perf_counter()`` just before the process was spawned."""
    listening_after: float | None = None
    """Seconds from spawn to the first accepted TCP connection (set by `wait_ready`)."""

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, request: Request, timeout: float = 300.0) -> float:
        """Seconds from spawn to the first 200 for ``request``."""
        def listening(now: float) -> None:
            self.listening_after = now - self.started

        try:
            answered = client.wait_until_ok(self.port, request, time.perf_counter() + timeout,
                                            self.alive, what=self.name, on_listen=listening)
        except BenchError as exc:
            raise BenchError(f"{exc}; its log ({self.log}) ends:\n{self.log_tail()}") from exc
        return answered - self.started

    def peak_rss(self) -> int | None:
        """Sum of the peak resident memory of the server's processes, in bytes."""
        return procs.tree_peak_rss(self.process.pid) if self.alive() else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM to the server's process group (it is its own), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path,
          port: int, cwd: Path = ROOT) -> ServerProcess:
    """Start ``argv`` in its own process group (so stopping it stops its children)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name.replace(' ', '-')}-{port}.log"
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return ServerProcess(name=name, port=port, process=process, log=log, started=started)


SERVERS = ("functions.serving", "functions-framework")
"""How the function is served: the project's server (`make serve`, containers, Cloud Run,
SCF, WeChat Cloud Run) or functions-framework's own (Cloud Functions)."""


def start_function(model_dir: str, log_dir: Path, extra_env: Mapping[str, str] | None = None,
                   name: str = "function", server: str = "functions.serving") -> ServerProcess:
    """The function with the in-process backend serving ``model_dir``, started with the
    command users type: ``python -m functions.serving`` (what ``make serve`` runs) or
    ``functions-framework --target predict``."""
    if server not in SERVERS:
        raise ValueError(f"server must be one of {', '.join(SERVERS)}, got {server!r}")
    port = free_port()
    if server == "functions-framework":
        argv = [str(Path(sys.executable).parent / "functions-framework"), "--target",
                "predict"]
    else:
        argv = [sys.executable, "-m", "functions.serving"]
    argv += ["--host", client.HOST, "--port", str(port)]
    env = quiet_env({"MODEL_URI": model_dir, **(extra_env or {})})
    return spawn(name, argv, env, log_dir, port)
