"""What machine a benchmark ran on: CPU model, cores, RAM, Python, OS and its speed.

Every benchmark prints this first, so its figures can be compared with a run
elsewhere. Run it alone with ``python benchmarks/machine.py``.

The CPU's name says little about its speed here: machines named "AMD EPYC" have
run the same code at figures three to five times apart. ``python_speed`` times a
fixed pure-Python loop (dict lookups, a set, integer arithmetic, the matcher's
kind of work) on the thread's CPU clock, so the goals that have no baseline of
their own in the run (the matcher's rate, the cold start) can be read against
how fast the interpreter ran that day.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

#: Steps of the reference loop per timing, and timings (the best counts).
SPEED_STEPS = 200_000
SPEED_REPEATS = 5


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _usable_cores() -> int | None:
    # The affinity mask, not the machine's total: containers and taskset limit it.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def python_speed(steps: int = SPEED_STEPS, repeats: int = SPEED_REPEATS) -> float:
    """Nanoseconds of thread CPU per step of the reference loop, the best of ``repeats``."""
    keys = [f"package-{i}" for i in range(1000)]
    table = {key: i for i, key in enumerate(keys)}
    best = float("inf")
    for _ in range(repeats):
        # Each step uses what it read (a set to fill, a sum), as the matcher's loops do.
        found: set[str] = set()
        total = 0
        started = time.thread_time_ns()
        for i in range(steps):
            key = keys[i % 1000]
            value = table.get(key, -1)
            if value & 1:
                found.add(key)
            total += value
        best = min(best, time.thread_time_ns() - started)
    return best / steps


def describe_machine() -> dict[str, str]:
    """The machine's description as label -> value, in print order."""
    ram = _ram_bytes()
    return {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {_usable_cores()} usable by this process",
        "RAM": f"{ram / 2**30:.1f} GiB" if ram else "unknown",
        "Python": f"{platform.python_implementation()} {platform.python_version()} "
        f"({sys.executable})",
        "OS": platform.platform(),
        "speed": f"{python_speed():.1f} ns per step of the reference loop "
        "(machine.py; lower is faster)",
    }


def print_machine() -> None:
    """Print the machine's description, one ``label: value`` line each."""
    print("Machine")
    for label, value in describe_machine().items():
        print(f"  {label + ':':8} {value}")


if __name__ == "__main__":
    print_machine()
