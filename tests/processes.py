"""Processes the tests start on loopback: wait until one listens, and stop it for good."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def wait_listening(process: subprocess.Popen, port: int, log: Path, what: str,
                   timeout: float = 30) -> None:
    """Return once ``process`` accepts connections on ``port``; raise with its log if it
    exits first or is still not listening after ``timeout`` seconds (then it is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n"
                               f"{log.read_text()[-5000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"{what} is not listening on {port} after {timeout} s:\n"
                       f"{log.read_text()[-5000:]}")


def stop(process: subprocess.Popen) -> None:
    """Terminate, and kill what does not end within 15 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
