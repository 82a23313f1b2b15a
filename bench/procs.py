"""What Linux says about processes and the machine: peak memory, children, CPU.

Peak resident memory is the kernel's high-water mark (``VmHWM`` in
``/proc/PID/status``), read while the process is still alive. A server that is
several processes (gunicorn's master and worker, BentoML's supervisor and
worker) is reported as the sum of its processes' peaks: an upper bound on the
peak of the whole, and exact when one process dominates, as the one holding
the model does.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
MIB = 1024 * 1024


def parse_status_kib(status_text: str, key: str) -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` (``VmHWM``, ``VmRSS``) in bytes."""
    for line in status_text.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
                return int(parts[0]) * 1024
            return None
    return None


def parse_stat_ppid(stat_text: str) -> int:
    """The parent pid from ``/proc/PID/stat``; the command name may hold spaces and ')'."""
    after_name = stat_text.rsplit(")", 1)[1].split()
    return int(after_name[1])


def children_map() -> dict[int, list[int]]:
    """Every live process's children, from one scan of /proc."""
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = parse_stat_ppid((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree = children_map()
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(tree.get(current, []))
    return out


def peak_rss(pid: int) -> int | None:
    try:
        return parse_status_kib((PROC / str(pid) / "status").read_text(), "VmHWM")
    except OSError:
        return None


def tree_peak_rss(pid: int) -> int | None:
    """Sum of the peak resident memory of ``pid`` and its descendants, in bytes."""
    peaks = [p for p in (peak_rss(child) for child in process_tree(pid)) if p is not None]
    return sum(peaks) if peaks else None


@dataclass(frozen=True)
class Machine:
    cpus: int
    cpu_model: str
    memory_gib: float
    python: str
    kernel: str

    def describe(self) -> str:
        return (f"{self.cpus} cores ({self.cpu_model}), {self.memory_gib:.0f} GiB, "
                f"Linux {self.kernel}, Python {self.python}")


def machine() -> Machine:
    cpu_model = "unknown"
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = parse_status_kib((PROC / "meminfo").read_text(), "MemTotal") or 0
    except OSError:
        memory = 0
    return Machine(cpus=os.cpu_count() or 1, cpu_model=cpu_model, memory_gib=memory / 2**30,
                   python=platform.python_version(), kernel=platform.release())


def load_average() -> tuple[float, float, float]:
    """What else the machine was doing: other work shows up here and in the spread."""
    return os.getloadavg()
