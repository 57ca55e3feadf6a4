"""What one ingested message costs PostgreSQL: rows, bytes stored, WAL, statements.

    python benchmarks/pg_footprint.py [--messages 5000] [--users 10000]

The inputs of the scaling model in docs/performance.md ("Where one PostgreSQL
stops scaling"). A fresh database at the newest migration holds the usual 10k
user population; corpus messages (fresh ids) go through
``fmn_daemon.ingest.ingest_batch`` in batches of ``delivery.batch_size``, one
transaction each, exactly as the consumer writes them, without AMQP. Measured:

- rows written per message (messages, outbox);
- bytes stored per message: the growth of ``pg_total_relation_size`` of the
  two tables (heap, TOAST and indexes);
- WAL per message: ``pg_current_wal_lsn()`` before and after. WAL is
  cluster-wide, so other sessions' writes during the run count too: an upper
  bound on a shared machine (the load average is printed);
- statements and transactions per batch, from ``pg_stat_database`` of this
  database;
- the PostgreSQL backend's CPU time per message.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    BackendCpu,
    BenchDatabase,
    corpus_templates,
    decode_template,
    draw,
    print_services,
    store_population,
)
from machine import print_machine  # noqa: E402
from populations import build_population, corpus_names  # noqa: E402
from sqlalchemy import text  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument(
        "--app-watchers",
        type=float,
        default=50,
        help="app watchers: a number (>= 1) or a share of users (< 1)",
    )
    args = parser.parse_args(argv)

    from fmn_core.config import Config
    from fmn_core.db import Database
    from fmn_core.matcher import Matcher
    from fmn_daemon.ingest import ingest_batch

    print_machine()
    print_services()
    templates, _ = corpus_templates()
    population = build_population(
        args.users, corpus_names(t.facts for t in templates), app_watchers=args.app_watchers
    )
    items = draw(templates, args.messages, 7)
    messages = []
    for index, message_id in items:
        message = decode_template(templates[index])
        message.id = message_id
        messages.append(message)
    with BenchDatabase() as bench:
        engine = bench.engine()
        store_population(engine, population)
        db = Database(Config(database_url=bench.url))
        with db.begin() as session:
            matcher = Matcher.load(session, ownership=population.ownership)

        def probe() -> tuple[str, int, int, int]:
            with engine.connect() as c:
                lsn = c.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()
                size = c.execute(
                    text(
                        "SELECT pg_total_relation_size('messages') "
                        "+ pg_total_relation_size('notifications')"
                    )
                ).scalar_one()
                stats = c.execute(
                    text(
                        "SELECT xact_commit, tup_inserted FROM pg_stat_database "
                        "WHERE datname = current_database()"
                    )
                ).one()
            return lsn, int(size), int(stats[0]), int(stats[1])

        with db.begin() as session:  # the writer's connection is open and warm
            session.execute(text("SELECT 1"))
        cpu = BackendCpu(engine)
        lsn0, size0, xact0, _ = probe()
        cpu.start()
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        outbox = 0
        for start in range(0, len(messages), args.batch):
            with db.begin() as session:
                result = ingest_batch(session, matcher, messages[start : start + args.batch])
            outbox += result.notifications
        seconds = time.perf_counter() - started
        backend_cpu = cpu.stop()
        lsn1, size1, xact1, _ = probe()
        with engine.connect() as c:
            wal = c.execute(
                text("SELECT pg_wal_lsn_diff(:b, :a)"), {"a": lsn0, "b": lsn1}
            ).scalar_one()
        load = (load_before, os.getloadavg()[0])
        db.dispose()
        engine.dispose()
    n = len(messages)
    batches = -(-n // args.batch)
    print(
        f"\nPostgreSQL footprint: {n:,} messages in {batches} batches of {args.batch}, "
        f"{args.users:,} users, {seconds:.1f}s; load (1 min) {load[0]:.1f} / {load[1]:.1f}"
    )
    print(f"  rows per message: 1 message + {outbox / n:.2f} outbox rows")
    print(f"  stored per message (heap, TOAST, indexes): {(size1 - size0) / n:,.0f} bytes")
    print(f"  WAL per message: {float(wal) / n:,.0f} bytes (cluster-wide: an upper bound)")
    print(
        f"  transactions committed in this database: {xact1 - xact0} "
        f"({(xact1 - xact0) / batches:.1f} per batch, probes included)"
    )
    print(f"  PostgreSQL backend CPU: {backend_cpu / n * 1e6:.0f} us per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
