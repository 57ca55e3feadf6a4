"""Migration 0010: the outbox's (user, context, state) index also holds sent_at, so the
hour's sends a claim counts are read without every older sent row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

from fmn_core.db import make_engine
from fmn_core.delivery_policy import _stats_statement, group_stats
from fmn_core.models import User
from fmn_core.schema import downgrade, upgrade

from .plans import plan_values

_NAME = "ix_notifications_user_context"


def _columns(url: str) -> list[str | None]:
    engine = make_engine(url)
    try:
        indexes = inspect(engine).get_indexes("notifications")
        return next(i["column_names"] for i in indexes if i["name"] == _NAME)
    finally:
        engine.dispose()


def test_migration_0010_adds_sent_at_to_the_index_and_goes_back_on_sqlite(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(url, "0009")
    assert _columns(url) == ["user_id", "context", "state"]
    upgrade(url, "0010")
    assert _columns(url) == ["user_id", "context", "state", "sent_at"]
    downgrade(url, "0009")
    assert _columns(url) == ["user_id", "context", "state"]


@pytest.mark.postgres
def test_migration_0010_counts_the_hours_sends_from_the_index_on_postgres(
    empty_postgres_url: str,
) -> None:
    upgrade(empty_postgres_url)
    engine = make_engine(empty_postgres_url)
    now = dt.datetime.now(dt.UTC)
    try:
        with Session(engine) as session:
            session.add_all([User(id=1, name="alice"), User(id=2, name="bob")])
            session.commit()
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO messages (id, topic, body, headers, received_at) "
                    "SELECT 'm' || g, 't', '{}', '{}', now() FROM generate_series(1, 20000) g"
                )
            )
            # Alice has 19,990 sent rows, one every ten seconds back from now (360 within
            # the hour), and 10 pending ones; Bob one sent row a minute ago.
            connection.execute(
                text(
                    "INSERT INTO notifications (message_id, user_id, context, filter_name, "
                    "state, attempts, next_attempt_at, created_at, sent_at) "
                    "SELECT 'm' || g, 1, 'email', 'f', "
                    "CASE WHEN g <= 19990 THEN 'sent' ELSE 'pending' END, 0, :now, "
                    ":now - make_interval(secs => g), "
                    "CASE WHEN g <= 19990 THEN :now - make_interval(secs => 10 * g - 5) END "
                    "FROM generate_series(1, 20000) g"
                ),
                {"now": now},
            )
            connection.execute(
                text(
                    "INSERT INTO notifications (message_id, user_id, context, filter_name, "
                    "state, attempts, next_attempt_at, created_at, sent_at) "
                    "VALUES ('m1', 2, 'email', 'f', 'sent', 1, :now, :now, :sent)"
                ),
                {"now": now, "sent": now - dt.timedelta(minutes=1)},
            )
            connection.execute(text("ANALYZE notifications"))
        with Session(engine) as session:
            stats = group_stats(session, [(1, "email"), (2, "email"), (1, "irc")], now=now)
        assert stats[(1, "email")].sent_last_hour == 360
        assert stats[(1, "email")].waiting == 10
        assert stats[(2, "email")].sent_last_hour == 1
        assert stats[(1, "irc")].sent_last_hour == 0
        expanded = (
            _stats_statement()
            .compile(dialect=engine.dialect)
            .construct_expanded_state(
                {"users": [1], "contexts": ["email"], "since": now - dt.timedelta(hours=1)}
            )
        )
        with engine.connect() as connection:
            (plan,) = connection.exec_driver_sql(
                f"EXPLAIN (FORMAT JSON) {expanded.statement}", expanded.parameters
            ).one()
        conditions = plan_values(plan, "Index Cond")
        # The hour's sends are a range of the index, not a filter over all of Alice's.
        assert any("sent_at" in condition for condition in conditions), plan
    finally:
        engine.dispose()
    downgrade(empty_postgres_url, "0009")
    assert _columns(empty_postgres_url) == ["user_id", "context", "state"]
