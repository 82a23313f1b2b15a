"""Reading /proc: peak memory fields, parent pids, process trees."""

from __future__ import annotations

import os
import subprocess
import sys

from bench import procs

STATUS = """Name:\tpython3
VmPeak:\t 1773224 kB
VmHWM:\t  701076 kB
VmRSS:\t  650000 kB
Threads:\t12
"""


def test_parse_status_fields_in_bytes():
    assert procs.parse_status_kib(STATUS, "VmHWM") == 701076 * 1024
    assert procs.parse_status_kib(STATUS, "VmRSS") == 650000 * 1024
    assert procs.parse_status_kib(STATUS, "VmSwap") is None
    assert procs.parse_status_kib(STATUS, "Threads") is None  # not a kB field
    assert procs.parse_status_kib("MemTotal:       24576000 kB\n", "MemTotal") == 24576000 * 1024


def test_parse_stat_ppid_survives_odd_command_names():
    assert procs.parse_stat_ppid("4242 (python3) S 17 4242 4242 0 -1") == 17
    assert procs.parse_stat_ppid("4242 (a) b (c)) R 99 1 1 0") == 99


def test_process_tree_and_peak_memory_of_a_live_child():
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"ready\n"  # measure a child that has started
        tree = procs.process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        # Peaks only grow, so reading the parts before the whole keeps the sum honest.
        own, theirs = procs.peak_rss(os.getpid()), procs.peak_rss(child.pid)
        both = procs.tree_peak_rss(os.getpid())
        assert own is not None and own > 1024 * 1024
        assert both >= own + theirs
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    assert procs.peak_rss(child.pid) is None  # gone: no figure rather than a wrong one


def test_machine_description():
    machine = procs.machine()
    assert machine.cpus == os.cpu_count()
    assert machine.memory_gib > 0
    assert machine.describe().startswith(f"{machine.cpus} cores (")
