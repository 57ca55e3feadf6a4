"""Migration 0008: existing accounts keep everything, count as past first contact."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from fmn_core.db import make_engine
from fmn_core.schema import upgrade


def test_migration_0008_keeps_preferences_and_marks_existing_users(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(url, "0004")
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
                    "INSERT INTO preferences (id, user_id, context, enabled, digest_minutes, "
                    "digest_count) VALUES (1, 1, 'email', true, 0, 0)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO filters (id, preference_id, name, active, oneshot, position) "
                    "VALUES (1, 1, 'mine', true, false, 1)"
                )
            )
        upgrade(url, "0008")
        with engine.connect() as connection:
            user = connection.execute(
                text("SELECT link_nonce, notices, defaults_applied FROM users")
            ).one()
            filters = connection.execute(text("SELECT name, paused_until FROM filters")).all()
    finally:
        engine.dispose()
    assert tuple(user) == (0, None, True)
    assert [tuple(f) for f in filters] == [("mine", None)]
