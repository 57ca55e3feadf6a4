"""Benchmark item 3, "Backlog": how long the daemon takes to work off a queue that filled up.

Run ``python benchmarks/backlog.py`` from the project's virtualenv (PostgreSQL and
RabbitMQ on loopback); ``--quick`` queues 10,000 messages instead of 100,000
(what ``nox -s bench`` runs).

Set-up: a fresh PostgreSQL database holding a 10k-user population
(``benchmarks/populations.py``), and 100,000 messages drawn from the shared
corpus (unique ids, fedora-messaging's headers) queued on a unique durable
queue *before* the daemon starts, as after an outage.

Then the real daemon starts: ``fmn-daemon run --no-deliver --no-http`` as a
subprocess with a generated configuration (the senders are left out: the
backlog is about getting the bus into the outbox; the latency benchmark
covers sending). The clock runs from the process's start (so start-up and
loading the matcher count) until the queue is empty and every message is
committed. Then the daemon gets SIGTERM, and the run is checked:

- nothing went back to the queue, every message is stored once;
- the outbox holds exactly the (message, user, context) rows that
  ``fmn_core.matcher`` computes for these messages and users: none lost,
  none extra.

Baseline in the same run: the time the broker took to take the same messages
in (publishing with pika, no confirms), i.e. the rate the backlog built up at.

Target: the 100k backlog is drained within 2 minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    BackendCpu,
    BenchBroker,
    BenchDatabase,
    check_ingest,
    corpus_templates,
    count_rows,
    cpu_seconds,
    draw,
    expected_recipients,
    print_services,
    print_target,
    store_population,
    write_fmn_config,
)
from machine import print_machine  # noqa: E402
from populations import build_population, corpus_names  # noqa: E402

TARGET_SECONDS = 120.0


class DaemonLog:
    """Reads a daemon's stderr in a thread; notes when lines first contain some text."""

    def __init__(self, stream: object, path: Path, marks: tuple[str, ...]) -> None:
        self.seen: dict[str, float] = {}
        self.marks = marks
        self.path = path
        self.tail: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        with self.path.open("w", encoding="utf-8") as out:
            for line in stream:  # type: ignore[attr-defined]
                out.write(line)
                self.tail = [*self.tail[-40:], line.rstrip()]
                for mark in self.marks:
                    if mark in line and mark not in self.seen:
                        self.seen[mark] = time.monotonic()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages queued")
    parser.add_argument("--users", type=int, default=10_000, help="population size")
    parser.add_argument("--quick", action="store_true", help="10,000 messages (for nox -s bench)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds the drain may take at most before the run is abandoned",
    )
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    n = 10_000 if args.quick else args.messages

    print_machine()
    print_services()
    print(
        f"\nBacklog: {n:,} messages queued before the daemon starts, {args.users:,} users, "
        "PostgreSQL and RabbitMQ on loopback\n"
    )
    templates, unreadable = corpus_templates()
    population = build_population(args.users, corpus_names(t.facts for t in templates))
    expected = expected_recipients(templates, population)
    items = draw(templates, n, args.seed)
    print(
        f"  corpus: {len(templates)} messages usable ({unreadable} unreadable); population: "
        f"{len(population.users):,} users, {population.filters:,} filters"
    )

    ok = True
    with (
        tempfile.TemporaryDirectory(prefix="fmn-bench-") as tmp,
        BenchDatabase() as db,
        BenchBroker() as broker,
    ):
        workdir = Path(tmp)
        engine = db.engine()
        started = time.perf_counter()
        rows = store_population(engine, population)
        print(f"  database {db.name}: {rows} in {time.perf_counter() - started:.1f}s", flush=True)
        fmn_config = write_fmn_config(workdir / "fmn.toml", db.url, "[http]\nenabled = false\n")
        fm_config = broker.write_config(workdir / "fedora-messaging.toml")
        published, publish_seconds = broker.publish_all(templates, items)
        print(
            f"  queued {published:,} messages on {broker.queue} in {publish_seconds:.1f}s",
            flush=True,
        )

        env = {**os.environ, "XDG_STATE_HOME": str(workdir / "state"), "FMN_LOG_LEVEL": "INFO"}
        command = [
            sys.executable,
            "-m",
            "fmn_daemon.cli",
            "--config",
            str(fmn_config),
            "run",
            "--fedora-messaging-config",
            str(fm_config),
            "--no-deliver",
            "--no-http",
            "--startup-timeout",
            "120",
        ]
        spawned = time.monotonic()
        daemon = subprocess.Popen(
            command, env=env, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        log = DaemonLog(daemon.stderr, workdir / "daemon.log", ("matcher loaded", "daemon ready"))
        drained = None
        ready_cpu = None
        backends = BackendCpu(engine)
        try:
            deadline = spawned + args.timeout
            while time.monotonic() < deadline and daemon.poll() is None:
                if ready_cpu is None and "daemon ready" in log.seen:
                    ready_cpu = cpu_seconds(daemon.pid)
                    backends.start()
                ready, _ = broker.depth()
                if ready == 0 and count_rows(engine, "messages") >= n:
                    drained = time.monotonic()
                    break
                time.sleep(0.2 if ready == 0 else 0.5)
            daemon_cpu = cpu_seconds(daemon.pid)
            postgres_cpu = backends.stop()
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                code = daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                code = daemon.wait(10)
            log.join(5)
        if drained is None:
            print(
                f"\n  the daemon did not drain the queue within {args.timeout:.0f}s "
                f"(exit status {daemon.returncode}); its last log lines:"
            )
            for line in log.tail[-15:]:
                print(f"    {line}")
            checks = check_ingest(engine, broker, items, expected)
            for check in checks:
                print(f"  check {check}")
            engine.dispose()
            return 0
        checks = check_ingest(engine, broker, items, expected)
        engine.dispose()

    total = drained - spawned
    ready_at = log.seen.get("daemon ready", spawned)
    consuming = drained - ready_at
    print("\nResults")
    print(
        f"  baseline: the broker took the {published:,} messages in {publish_seconds:.1f}s "
        f"({published / publish_seconds:,.0f} messages/s, pika, no confirms)"
    )
    matcher_at = log.seen.get("matcher loaded")
    if matcher_at is not None:
        print(
            f"  start-up: matcher loaded after {matcher_at - spawned:.1f}s, "
            f"daemon ready after {ready_at - spawned:.1f}s"
        )
    print(
        f"  drained {n:,} messages {total:.1f}s after the daemon started "
        f"({consuming:.1f}s of consuming: {n / consuming:,.0f} messages/s)"
    )
    if ready_cpu is not None and daemon_cpu is not None:
        used = daemon_cpu - ready_cpu
        print(
            f"  daemon CPU while consuming: {used:.1f}s ({n / used:,.0f} messages per "
            f"CPU-second); its PostgreSQL backends: {postgres_cpu:.1f}s "
            f"({postgres_cpu / n * 1e6:.0f} us per message); load average now "
            f"{os.getloadavg()[0]:.1f}"
        )
    print(f"  daemon exit status after SIGTERM: {code}")
    for check in checks:
        print(f"  check {check}")
        ok &= check.ok
    ok &= code == 0
    ok &= print_target("drain time", total, TARGET_SECONDS, "s", at_least=False)
    print(f"\nall targets and checks met: {'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
