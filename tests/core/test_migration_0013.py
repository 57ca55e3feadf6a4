"""Migration 0013: a dead message's id is never handed out again (SQLite rebuilds the
table with AUTOINCREMENT); the rows already there keep their ids and everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from fmn_core.db import make_engine
from fmn_core.schema import downgrade, upgrade

_ROWS = (
    "SELECT id, message_id, topic, reason, attempts, raw, truncated FROM dead_messages ORDER BY id"
)


def _run(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(sql))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _bury(url: str, message_id: str) -> int:
    """A dead message inserted the way ``bury`` does, the database choosing its id."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO dead_messages (message_id, topic, reason, attempts, "
                    "received_at, raw, truncated) "
                    "VALUES (:m, 't', 'r', 3, CURRENT_TIMESTAMP, :raw, false)"
                ),
                {"m": message_id, "raw": b"{}"},
            )
            return int(
                connection.execute(
                    text("SELECT id FROM dead_messages WHERE message_id = :m"), {"m": message_id}
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _check(url: str) -> None:
    upgrade(url, "0012")
    first, newest = _bury(url, "m-1"), _bury(url, "m-2")
    _run(url, f"UPDATE dead_messages SET truncated = true, attempts = 7 WHERE id = {first}")
    before = _run(url, _ROWS)
    upgrade(url, "0013")
    assert _run(url, _ROWS) == before
    # A requeue that stored the newest dead message deletes its row: its id stays spent.
    _run(url, f"DELETE FROM dead_messages WHERE id = {newest}")
    later = _bury(url, "m-3")
    assert later > newest
    assert _run(url, f"SELECT message_id FROM dead_messages WHERE id = {newest}") == []
    kept = _run(url, _ROWS)
    downgrade(url, "0012")
    assert _run(url, _ROWS) == kept
    upgrade(url, "0013")
    assert _run(url, _ROWS) == kept


def test_migration_0013_dead_message_ids_are_never_reused_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'old.sqlite'}")


@pytest.mark.postgres
def test_migration_0013_dead_message_ids_are_never_reused_on_postgres(
    empty_postgres_url: str,
) -> None:
    _check(empty_postgres_url)
