"""What machine a benchmark ran on: CPU model, cores, RAM, Python and OS.

Every benchmark prints this first, so its figures can be compared with a run
elsewhere. Run it alone with ``python benchmarks/machine.py``.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


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
    }


def print_machine() -> None:
    """Print the machine's description, one ``label: value`` line each."""
    print("Machine")
    for label, value in describe_machine().items():
        print(f"  {label + ':':8} {value}")


if __name__ == "__main__":
    print_machine()
