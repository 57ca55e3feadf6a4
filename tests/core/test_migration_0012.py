"""Migration 0012: the outbox keeps when a row's wait for an offline IRC nick began;
the rows already there keep everything, with no such time yet."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from fmn_core.db import make_engine
from fmn_core.schema import downgrade, upgrade

_ROW = "SELECT id, state, hold_reason, last_error, attempts FROM notifications ORDER BY id"


def _columns(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("notifications")}
    finally:
        engine.dispose()


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    finally:
        engine.dispose()


def _check(url: str) -> None:
    upgrade(url, "0011")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, name, is_admin, created_at, confirm_failures) "
                    "VALUES (1, 'ana', false, CURRENT_TIMESTAMP, 0)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO messages (id, topic, body, headers, received_at) VALUES "
                    "('m1', 't', '{}', '{}', CURRENT_TIMESTAMP), "
                    "('m2', 't', '{}', '{}', CURRENT_TIMESTAMP)"
                )
            )
            # One row already waiting for an offline nick, one sent.
            connection.execute(
                text(
                    "INSERT INTO notifications (id, message_id, user_id, context, filter_name, "
                    "state, attempts, next_attempt_at, created_at, hold_reason, last_error) "
                    "VALUES (1, 'm1', 1, 'irc', 'f', 'pending', 0, CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP, 'offline', 'not online'), "
                    "(2, 'm2', 1, 'irc', 'f', 'sent', 1, CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP, NULL, NULL)"
                )
            )
    finally:
        engine.dispose()
    before = _rows(url, _ROW)
    assert "offline_since" not in _columns(url)
    upgrade(url, "0012")
    assert "offline_since" in _columns(url)
    assert _rows(url, _ROW) == before
    # Its allowance starts at the bot's next look-up.
    assert _rows(url, "SELECT offline_since FROM notifications") == [(None,), (None,)]
    downgrade(url, "0011")
    assert "offline_since" not in _columns(url)
    assert _rows(url, _ROW) == before


def test_migration_0012_adds_offline_since_and_goes_back_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'old.sqlite'}")


@pytest.mark.postgres
def test_migration_0012_adds_offline_since_and_goes_back_on_postgres(
    empty_postgres_url: str,
) -> None:
    _check(empty_postgres_url)
