"""A worker whose memory has grown past a ceiling is replaced after its request.

Decoding limits keep each request's memory bounded, but a process rarely gives freed
memory back to the system (glibc keeps its arenas), so one large request leaves a worker
inflated for the rest of its life. After each POST the worker's resident memory is read
(`/proc/self/statm`, Linux); past WORKER_MAX_RSS_MB the worker stops taking requests,
finishes the ones it has, and exits; gunicorn's master forks a fresh one (the master never
loads the model, so the fork is clean and the new worker loads the model as the first did).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("functions")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """This process's resident memory, or None where /proc is not available."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def recycle_if_grown(worker: Any, ceiling_mb: int) -> bool:
    """Tell the gunicorn worker to exit gracefully if it is over ``ceiling_mb`` MiB."""
    if ceiling_mb <= 0 or not getattr(worker, "alive", False):
        return False
    rss = rss_bytes()
    if rss is None or rss <= ceiling_mb * 1024 * 1024:
        return False
    log.warning("worker %d uses %d MiB, over WORKER_MAX_RSS_MB=%d: replacing it after this "
                "request", os.getpid(), rss // (1024 * 1024), ceiling_mb)
    worker.alive = False
    return True
