"""Start-up benchmark: the daemon's cold start to ready, and its memory, with many users.

Run ``python benchmarks/startup.py`` from the project's virtualenv (PostgreSQL
and RabbitMQ on loopback; ``--quick`` for 0 and 10k users). ``nox -s bench``
runs it at 0 and 100k users, the goal's size, with ``--whole``.

For each population size (0 users, then 100,000 by default, with 5% of them
watching whole applications as in the matcher benchmark), a fresh PostgreSQL
database at the newest migration holds the population, written with bulk
inserts. Then ``fmn-daemon run --no-deliver --no-http`` starts as a subprocess
on an empty queue, three times one after the other (``--starts``), and this
script notes for each start:

- the time from spawning the process to its ``daemon ready`` log line (the
  matcher compiled from the database, the validators built, the queue
  declared): the cold start;
- the process's resident memory once ready (``VmRSS``) and its peak
  (``VmHWM``), read from ``/proc``.

The 0-user run is the in-run baseline: what the interpreter, the imports and
the connections cost by themselves. Targets (at 100k users): ready <= 5 s,
RSS <= 400 MB, in decimal megabytes as written (400 MB is 381.5 MiB), judged
on the start with the median time to ready (every start is printed): one start
on this shared machine moves by a second from one minute to the next.

``--daemon-python`` runs the daemon with another interpreter: ``nox -s bench``
passes one from a virtualenv holding ``pip install -e .`` alone, as a deployment
has it. The benchmark's own virtualenv carries the test extras, and
fedora-messaging imports pytest whenever it is importable (~6 MiB that no
deployment holds). ``--whole`` also starts the whole daemon (senders and HTTP
as well) at the largest size, for its memory beside the consumer's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backlog import DaemonLog  # noqa: E402
from common import (  # noqa: E402
    BenchBroker,
    BenchDatabase,
    corpus_templates,
    cpu_seconds,
    print_services,
    print_target,
    store_population,
    write_fmn_config,
)
from machine import print_machine  # noqa: E402
from plots import judged_start  # noqa: E402
from populations import build_population, corpus_names  # noqa: E402

TARGET_READY_S = 5.0
TARGET_RSS_MB = 400.0


def _status_kib(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` size field (``VmRSS``, ``VmHWM``) in KiB; NaN if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


#: Bytes in a MiB and in a MB: the figures are read in KiB, the goal is written in MB.
MIB = 1024 * 1024
MB = 1000 * 1000


def run_size(
    users: int, app_watchers: float, workdir: Path, python: str, whole: bool, starts: int
) -> list[dict[str, Any]]:
    """One population size: store it, start the daemon, time it to ready, read its memory.

    The consumer (``--no-deliver --no-http``) is started ``starts`` times; with
    ``whole``, the whole daemon is started once on the same database afterwards.
    """
    templates, _ = corpus_templates()
    population = build_population(
        users, corpus_names(t.facts for t in templates), app_watchers=app_watchers
    )
    with BenchDatabase() as db, BenchBroker() as broker:
        engine = db.engine()
        started = time.perf_counter()
        rows = store_population(engine, population)
        engine.dispose()
        print(
            f"\n{users:,} users: database {db.name}: {rows} in "
            f"{time.perf_counter() - started:.1f}s",
            flush=True,
        )
        fm_config = broker.write_config(workdir / f"fedora-messaging-{users}.toml")
        runs = [
            {
                **_start(users, population.filters, python, db.url, fm_config, workdir, False),
                "start": n,
            }
            for n in range(1, starts + 1)
        ]
        if starts > 1:
            middle = judged_start(runs)
            every = ", ".join(f"{r['ready_s']:.2f}" for r in runs)
            print(
                f"  consumer, median of {starts} starts: ready after {middle['ready_s']:.2f}s "
                f"(start {middle['start']}; all: {every} s), "
                f"{middle['ready_cpu_s']:.2f} CPU-seconds, RSS {middle['rss_mib']:.0f} MiB",
                flush=True,
            )
        if whole:
            runs.append(_start(users, population.filters, python, db.url, fm_config, workdir, True))
    return runs


def _start(
    users: int,
    filters: int,
    python: str,
    database_url: str,
    fm_config: Path,
    workdir: Path,
    whole: bool,
) -> dict[str, Any]:
    """Start one daemon on a stored population; its time to ready and its memory."""
    parts = "whole" if whole else "consumer"
    # The whole daemon serves HTTP on a port of its own; its senders find no mail.
    http = "[http]\nport = 0\n" if whole else "[http]\nenabled = false\n"
    fmn_config = write_fmn_config(workdir / f"fmn-{users}-{parts}.toml", database_url, http)
    env = {**os.environ, "XDG_STATE_HOME": str(workdir / "state"), "FMN_LOG_LEVEL": "INFO"}
    only = [] if whole else ["--no-deliver", "--no-http"]
    command = [
        python,
        "-m",
        "fmn_daemon.cli",
        "--config",
        str(fmn_config),
        "run",
        "--fedora-messaging-config",
        str(fm_config),
        *only,
        "--startup-timeout",
        "300",
    ]
    load_before = os.getloadavg()[0]
    spawned = time.monotonic()
    # Started in the work directory: ``python -m`` puts the current directory first on
    # the path, so from a checkout's root the checkout's packages would run, not the
    # ones installed for ``--daemon-python``.
    daemon = subprocess.Popen(
        command,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        cwd=workdir,
    )
    log = DaemonLog(
        daemon.stderr,
        workdir / f"daemon-{users}-{parts}.log",
        ("matcher loaded", "daemon ready"),
    )
    try:
        deadline = spawned + 300
        while "daemon ready" not in log.seen:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the daemon did not start:\n  " + "\n  ".join(log.tail[-15:]))
            time.sleep(0.02)
        ready_s = log.seen["daemon ready"] - spawned
        ready_cpu = cpu_seconds(daemon.pid) or float("nan")
        matcher_s = log.seen.get("matcher loaded", spawned) - spawned
        time.sleep(1.0)  # settled: what it holds while consuming
        rss = _status_kib(daemon.pid, "VmRSS") / 1024
        peak = _status_kib(daemon.pid, "VmHWM") / 1024
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            code: int | None = daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait(10)
        log.join(5)
    load = (load_before, os.getloadavg()[0])
    print(
        f"  {parts}: ready after {ready_s:.2f}s, {ready_cpu:.2f} CPU-seconds (matcher loaded at "
        f"{matcher_s:.2f}s); RSS {rss:.0f} MiB ({rss * MIB / MB:.0f} MB) "
        f"(peak {peak:.0f} MiB); exit status {code}; load (1 min) {load[0]:.1f} / {load[1]:.1f}"
    )
    return {
        "users": users,
        "parts": parts,
        "filters": filters,
        "ready_s": ready_s,
        "matcher_s": matcher_s,
        "ready_cpu_s": ready_cpu,
        "rss_mib": rss,
        "rss_mb": rss * MIB / MB,
        "peak_mib": peak,
        "exit": code,
        "load": list(load),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--users",
        default="0,100000",
        help="population sizes, comma-separated; 0 is the baseline (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="0 and 10,000 users")
    parser.add_argument(
        "--app-watchers",
        type=float,
        default=0.05,
        help="app watchers: a number (>= 1) or a share of users (< 1)",
    )
    parser.add_argument(
        "--daemon-python",
        default=sys.executable,
        help="the interpreter that runs the daemon (default: this one)",
    )
    parser.add_argument(
        "--whole",
        action="store_true",
        help="also start the whole daemon (senders, HTTP) at the largest size",
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=3,
        help="consumer starts per population size, judged on the median (default: %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = parser.parse_args(argv)
    if args.starts < 1:
        parser.error("--starts: at least 1")
    # The daemon starts in its own work directory (see ``_start``): a relative path
    # such as nox's ``.nox/.cache/deployed/bin/python`` is made absolute first, and
    # a bare name is looked up on the PATH.
    located = shutil.which(args.daemon_python)
    if located is None:
        parser.error(f"--daemon-python {args.daemon_python}: no such interpreter")
    args.daemon_python = os.path.abspath(located)
    sizes = [0, 10_000] if args.quick else [int(s) for s in args.users.split(",") if s.strip()]

    print_machine()
    print_services()
    print(
        f"\nStart-up: fmn-daemon run --no-deliver --no-http, populations of "
        f"{', '.join(f'{s:,}' for s in sizes)} users"
        + (" (and the whole daemon at the largest)" if args.whole else "")
    )
    probe = "import importlib.util as u; print(u.find_spec('pytest') is not None)"
    has_pytest = subprocess.run(
        [args.daemon_python, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"  daemon interpreter: {args.daemon_python} (pytest importable: {has_pytest})")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fmn-bench-") as tmp:
        for users in sizes:
            whole = args.whole and users == max(sizes)
            results += run_size(
                users, args.app_watchers, Path(tmp), args.daemon_python, whole, args.starts
            )
    ok = all(r["exit"] == 0 for r in results)
    baseline = [r for r in results if r["users"] == 0]
    base = judged_start(baseline) if baseline else None
    print("\nResults")
    print(
        "  | users | daemon | filters | ready (s) | CPU to ready (s) | RSS (MiB) | RSS (MB) "
        "| peak (MiB) | load |"
    )
    print("  |---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"  | {r['users']:,} | {r['parts']} | {r['filters']:,} | {r['ready_s']:.2f} "
            f"| {r['ready_cpu_s']:.2f} | {r['rss_mib']:.0f} | {r['rss_mb']:.0f} "
            f"| {r['peak_mib']:.0f} | {r['load'][0]:.1f}-{r['load'][1]:.1f} |"
        )
    # The goals are judged on the consumer, the part that holds the matcher, as every
    # earlier run was; the whole daemon's figures are printed beside them.
    largest = judged_start(results)
    if base is not None and largest is not base:
        print(
            f"  over the 0-user baseline: +{largest['ready_s'] - base['ready_s']:.2f}s to ready, "
            f"+{largest['rss_mib'] - base['rss_mib']:.0f} MiB RSS"
        )
    print("\nGoals")
    label = f"at {largest['users']:,} users" + (
        f" (median of {args.starts} starts)" if args.starts > 1 else ""
    )
    ok &= print_target(
        f"cold start to ready {label}", largest["ready_s"], TARGET_READY_S, "s", at_least=False
    )
    ok &= print_target(
        f"daemon RSS {label}", largest["rss_mb"], TARGET_RSS_MB, "MB", at_least=False
    )
    for r in results:
        if r["parts"] == "whole":
            verdict = "under" if r["rss_mb"] <= TARGET_RSS_MB else "over"
            print(
                f"  (the whole daemon, senders and HTTP too, not judged: "
                f"ready {r['ready_s']:.1f} s, RSS {r['rss_mb']:.0f} MB = {r['rss_mib']:.0f} MiB, "
                f"{verdict} {TARGET_RSS_MB:.0f} MB once ready, before any mail or request)"
            )
    print(f"  (load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(f"\nall targets and checks met: {'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
