"""Retention benchmark: how fast ``fmn-daemon prune`` works off a backlog, and how long it
holds its locks, against the plain ``DELETE`` an operator would otherwise run.

Run ``python benchmarks/retention.py`` from the project's virtualenv (PostgreSQL on
loopback); ``nox -s bench`` runs it at full size, 1,000,000 bus messages, since at
100,000 (``--quick``) each transaction's fixed cost hides the rate.

Set-up, twice, in two fresh databases built the same way (then ``VACUUM ANALYZE``):
bus messages with ~2 KB bodies, 80% of them received 40 days ago and 20% 10 days
ago; two in five have an e-mail notification for one of 100 users, sent when the
message came, except one in fifty of those, which still waits (a digest); and 1,000
old dead messages. As on the bus, most messages notified nobody.

Then, with a 30-day window:

- **baseline**: one transaction of plain ``DELETE`` statements with fmn's conditions
  (finished notifications, then messages nothing waits on, then dead messages);
- **fmn**: ``fmn_core.retention.Pruning`` in transactions of ``retention.batch_rows``
  rows (5,000), as the daemon and ``fmn-daemon prune`` run it.

Printed: rows deleted per second by each, fmn's share of the baseline's rate, the
longest transaction of each (what another writer may wait behind; for fmn's steps,
nothing, as they skip locked rows, but the database still does the work), and a check
that both left exactly the same rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import BenchDatabase, print_services  # noqa: E402
from machine import print_machine  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402

from fmn_core.config import Config, ConfirmationConfig  # noqa: E402
from fmn_core.db import Database  # noqa: E402
from fmn_core.models import utcnow  # noqa: E402
from fmn_core.retention import Pruned, Pruning, cutoff_for  # noqa: E402

DAYS = 30
BATCH_ROWS = 5000

_SEED = """
INSERT INTO users (id, name, is_admin, created_at, confirm_failures)
SELECT u, 'user' || u, false, now(), 0 FROM generate_series(1, 100) AS u;

INSERT INTO messages (id, topic, body, headers, received_at)
SELECT 'msg-' || g, 'org.fedoraproject.prod.bodhi.update.comment',
       json_build_object('comment', repeat(md5(g::text), 60)), '{}',
       CASE WHEN g % 5 = 4 THEN now() - interval '10 days' ELSE now() - interval '40 days' END
         + (g % 3600) * interval '1 second'
FROM generate_series(1, :messages) AS g;

INSERT INTO notifications (message_id, user_id, context, filter_name, state, attempts,
                           next_attempt_at, created_at, sent_at)
SELECT m.id, 1 + g % 100, 'email', 'my packages',
       CASE WHEN g % 50 = 0 THEN 'pending' ELSE 'sent' END, 0,
       CASE WHEN g % 50 = 0 THEN now() + interval '1 day' ELSE m.received_at END,
       m.received_at,
       CASE WHEN g % 50 = 0 THEN NULL ELSE m.received_at END
FROM generate_series(1, :messages) AS g JOIN messages m ON m.id = 'msg-' || g
WHERE g % 5 IN (0, 1);

INSERT INTO dead_messages (message_id, topic, reason, attempts, received_at, raw, truncated)
SELECT 'dead-' || g, 't', 'kept failing', 3, now() - interval '40 days', '\\x00', false
FROM generate_series(1, 1000) AS g;
"""

#: fmn's conditions (``fmn_core.retention``) as plain statements, each without a limit.
_BARE = (
    (
        "notifications",
        "DELETE FROM notifications WHERE state IN ('sent', 'dead') "
        "AND next_attempt_at < :cutoff AND (sent_at IS NULL OR sent_at < :cutoff)",
    ),
    (
        "messages",
        "DELETE FROM messages m WHERE m.received_at < :cutoff "
        "AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.message_id = m.id)",
    ),
    ("dead_messages", "DELETE FROM dead_messages WHERE received_at < :cutoff"),
)


def _seed(engine: Engine, messages: int) -> None:
    with engine.begin() as connection:
        for statement in _SEED.split(";\n"):
            if statement.strip():
                connection.execute(text(statement), {"messages": messages})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


def _remaining(engine: Engine) -> tuple[int, int, int, int]:
    with engine.connect() as connection:
        return (
            int(connection.scalar(text("SELECT count(*) FROM notifications")) or 0),
            int(connection.scalar(text("SELECT count(*) FROM messages")) or 0),
            int(connection.scalar(text("SELECT count(*) FROM dead_messages")) or 0),
            # Which rows are left, not only how many: a sum over their ids' numbers.
            int(
                connection.scalar(
                    text("SELECT coalesce(sum(substr(id, 5)::bigint), 0) FROM messages")
                )
                or 0
            ),
        )


def _bare(engine: Engine, cutoff: object) -> tuple[Pruned, float]:
    pruned = Pruned()
    started = time.perf_counter()
    with engine.begin() as connection:
        for name, statement in _BARE:
            count = connection.execute(text(statement), {"cutoff": cutoff}).rowcount
            setattr(pruned, name, count)
    return pruned, time.perf_counter() - started


def _fmn(url: str, cutoff: object) -> tuple[Pruned, float, float, int]:
    db = Database(Config(database_url=url))
    pruning = Pruning(
        cutoff,  # type: ignore[arg-type]
        BATCH_ROWS,
        codes_counted_for=ConfirmationConfig().counted_for,
    )
    steps, longest = 0, 0.0
    started = time.perf_counter()
    try:
        while True:
            step_started = time.perf_counter()
            with db.begin() as session:
                step = pruning.step(session)
            longest = max(longest, time.perf_counter() - step_started)
            if not step:
                break
            steps += 1
            if steps % 20 == 0:
                print(f"  fmn: {pruning.done.total:,} rows pruned", flush=True)
    finally:
        db.dispose()
    return pruning.done, time.perf_counter() - started, longest, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="bus messages stored")
    parser.add_argument("--quick", action="store_true", help="100,000 messages, a smoke run")
    args = parser.parse_args(argv)
    messages = 100_000 if args.quick else args.messages
    print_machine()
    print_services()
    print(
        f"\nRetention: {messages:,} bus messages (80% received 40 days ago), a {DAYS}-day "
        f"window; PostgreSQL on loopback"
    )
    cutoff = cutoff_for(DAYS, utcnow())
    with BenchDatabase() as bare_db, BenchDatabase() as fmn_db:
        for db in (bare_db, fmn_db):
            started = time.perf_counter()
            engine = db.engine()
            _seed(engine, messages)
            engine.dispose()
            print(f"  stored in {db.name} in {time.perf_counter() - started:.1f}s", flush=True)
        bare_engine, fmn_engine = bare_db.engine(), fmn_db.engine()
        try:
            bare, bare_s = _bare(bare_engine, cutoff)
            fmn, fmn_s, longest, steps = _fmn(fmn_db.url, cutoff)
            left = (_remaining(bare_engine), _remaining(fmn_engine))
        finally:
            bare_engine.dispose()
            fmn_engine.dispose()
    bare_rate, fmn_rate = bare.total / bare_s, fmn.total / fmn_s
    print(
        f"  baseline (plain DELETE, one transaction): {bare.describe()} in {bare_s:.2f}s, "
        f"{bare_rate:,.0f} rows/s; its one transaction held its rows {bare_s * 1000:,.0f} ms"
    )
    print(
        f"  fmn (Pruning, {BATCH_ROWS:,} rows a transaction): {fmn.describe()} in "
        f"{fmn_s:.2f}s, {fmn_rate:,.0f} rows/s over {steps} transactions; the longest took "
        f"{longest * 1000:,.0f} ms"
    )
    print(
        f"  fmn / baseline: {fmn_rate / bare_rate:.2f}x the rate; longest transaction "
        f"{longest / bare_s:.3f}x the baseline's"
    )
    same = left[0] == left[1] and bare == fmn
    print(
        f"  check {'ok' if same else 'FAILED'}: both left {left[1][0]:,} notifications, "
        f"{left[1][1]:,} messages and {left[1][2]:,} dead messages"
        + ("" if same else f" (baseline {left[0]}, fmn {left[1]})")
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
