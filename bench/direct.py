"""Drive `bench.bare` from the runner: the model's own cold start, latency and throughput.

The model runs in its own process, never in the runner's: the runner stays a
light HTTP client, and the direct call gets a process of its own exactly like
the server's worker, with TensorFlow's default thread pools.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.client import BenchError
from bench.models import BenchModel
from bench.server import ROOT, quiet_env

READY_TIMEOUT = 300.0
"""Longest a bare process may take to answer one line; then it is killed."""


def _readline(process: subprocess.Popen, timeout: float = READY_TIMEOUT) -> bytes:
    """One line of the process's stdout, killing the process if it takes over ``timeout``."""
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        return process.stdout.readline()
    finally:
        timer.cancel()


def bare_argv(model: BenchModel, image: Path, *, wrapped: bool = False,
              serve: bool = False) -> list[str]:
    """The bare script's command line for ``model`` (its original form unless ``wrapped``)."""
    argv = [sys.executable, "-m", "bench.bare"]
    if wrapped:
        argv += [model.served, "--input", "image_bytes", "--bytes"]
    else:
        argv += [model.original, "--input", model.input_name,
                 "--shape", ",".join(str(d) for d in model.input_shape),
                 "--normalization", model.normalization]
    argv += ["--image", str(image)]
    if serve:
        argv.append("--serve")
    return argv


@dataclass(frozen=True)
class ColdStart:
    seconds: float
    """From just before spawning the process to reading its "ready" line."""
    peak_rss: int | None
    ready: dict


def cold_start(argv: list[str]) -> ColdStart:
    """Run a bare script once; time spawn to its first answer, and its peak memory."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=ROOT, env=quiet_env({}), stdout=subprocess.PIPE,
                                   stderr=errors, stdin=subprocess.DEVNULL)
        try:
            line = _readline(process)
            seconds = time.perf_counter() - started
            # wait4, not wait: it also returns the child's peak resident memory.
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            process.stdout.close()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    if process.returncode != 0 or not line:
        raise BenchError(f"bare script failed ({process.returncode}): {stderr[-800:]}")
    return ColdStart(seconds=seconds, peak_rss=usage.ru_maxrss * 1024, ready=json.loads(line))


class BareWorker:
    """A bare script kept running (``--serve``), answering timing commands."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log = log.open("wb")
        if "--serve" not in argv:
            raise BenchError("a bare worker needs the --serve command line")
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env or quiet_env({}),
                                        stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._log,
                                        start_new_session=True)
        self.log = log
        self.ready = self._read("starting")

    def _read(self, what: str) -> dict:
        line = _readline(self.process)
        if not line:
            self.process.wait(timeout=30)
            raise BenchError(f"the bare model process died while {what} "
                             f"(exit {self.process.returncode}); see {self.log}")
        message = json.loads(line)
        if "error" in message:
            raise BenchError(f"bare model: {message['error']}")
        return message

    def _ask(self, command: dict) -> dict:
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()
        return self._read(f"running {command['cmd']}")

    def latencies(self, count: int, warmup: int) -> list[float]:
        return self._ask({"cmd": "time", "count": count, "warmup": warmup})["seconds"]

    def one(self) -> float:
        """Seconds of one direct call, timed inside the bare process."""
        return self.latencies(1, 0)[0]

    def sequential_seconds(self, count: int) -> float:
        """Wall time of ``count`` back-to-back calls (after one untimed call)."""
        return self._ask({"cmd": "burst", "count": count})["seconds"]

    def threaded_seconds(self, count: int, threads: int) -> float:
        """Wall time of ``count`` calls shared by ``threads`` threads calling at once."""
        return self._ask({"cmd": "threads", "count": count, "threads": threads})["seconds"]

    def batched(self, calls: int, batch: int, threads: int = 1) -> tuple[int, float]:
        """Images done and wall time of ``calls`` calls on ``batch`` copies of the image,
        shared by ``threads`` threads calling at once."""
        answer = self._ask({"cmd": "batch", "count": calls, "batch": batch,
                            "threads": threads})
        return answer["count"], answer["seconds"]

    def peak_rss(self) -> int | None:
        return procs.peak_rss(self.process.pid)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(b'{"cmd": "exit"}\n')
                self.process.stdin.close()
                self.process.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self._log.close()
