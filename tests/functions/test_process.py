"""What a server's master process holds, and what each forked worker sets up for itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from functions.platforms import process

ROOT = Path(__file__).resolve().parents[2]


def test_the_entry_module_imports_nothing_heavy_for_the_master_to_hold():
    # The master imports main.py and forks: what it imports is held twice, once per
    # process, as its objects are written to. The app's modules load in the worker.
    script = ("import json, sys, main\n"
              "print(json.dumps({m: m in sys.modules for m in "
              "('numpy', 'PIL', 'tensorflow', 'functions.app', 'functions.pipeline')}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True,
                          env={**os.environ, "PRELOAD": "false"})
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "numpy": False, "PIL": False, "tensorflow": False, "functions.app": False,
        "functions.pipeline": False}


class FakeLibc:
    """Stands in for glibc: the arena count itself cannot be read back from a process."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def test_a_worker_caps_malloc_arenas_at_the_setting(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(process.ctypes, "CDLL", lambda name: libc)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    process.limit_malloc_arenas()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    process.limit_malloc_arenas()
    assert libc.calls == [(-8, 2), (-8, 4)]  # M_ARENA_MAX is -8 in glibc's malloc.h


def test_a_bad_setting_or_no_glibc_leaves_the_worker_running(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(process.ctypes, "CDLL", lambda name: libc)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "lots")
    process.limit_malloc_arenas()  # the app answers every request with what is wrong
    assert libc.calls == [(-8, 2)]

    def no_libc(name):
        raise OSError("no such library")

    monkeypatch.setattr(process.ctypes, "CDLL", no_libc)
    process.limit_malloc_arenas()


def test_the_real_glibc_accepts_the_cap():
    # In a child process, so this test process keeps its own arenas.
    script = ("from functions.platforms.process import limit_malloc_arenas\n"
              "import ctypes\n"
              "limit_malloc_arenas()\n"
              "print(ctypes.CDLL(None).mallopt(-8, 2))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "1"  # mallopt answers 1 when it took the value
