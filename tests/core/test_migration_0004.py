"""Migration 0004: feed tokens become unique; a token two users shared is replaced."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from fmn_core.db import make_engine
from fmn_core.schema import upgrade

SHARED = "S" * 32


def test_migration_0004_gives_shared_feed_tokens_new_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(url, "0001")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for user_id, (name, context, address) in enumerate(
                [
                    ("alice", "rss", SHARED),
                    ("bob", "live", SHARED),
                    ("carol", "email", "c@example.org"),
                ],
                start=1,
            ):
                connection.execute(
                    text(
                        "INSERT INTO users (id, name, is_admin, created_at, confirm_failures) "
                        "VALUES (:id, :name, false, CURRENT_TIMESTAMP, 0)"
                    ),
                    {"id": user_id, "name": name},
                )
                connection.execute(
                    text(
                        "INSERT INTO preferences (id, user_id, context, enabled, digest_minutes, "
                        "digest_count) VALUES (:id, :id, :context, true, 0, 0)"
                    ),
                    {"id": user_id, "context": context},
                )
                connection.execute(
                    text(
                        "INSERT INTO destinations "
                        "(id, preference_id, address, confirmed, created_at) "
                        "VALUES (:id, :id, :address, true, CURRENT_TIMESTAMP)"
                    ),
                    {"id": user_id, "address": address},
                )
        upgrade(url)
        with engine.connect() as connection:
            result = connection.execute(
                text("SELECT id, address, feed_token FROM destinations ORDER BY id")
            )
            rows = {row_id: (address, token) for row_id, address, token in result}
    finally:
        engine.dispose()
    assert rows[1] == (SHARED, SHARED)  # the oldest keeps its token
    new_address, new_token = rows[2]
    assert new_address == new_token != SHARED and len(new_token) >= 32
    assert rows[3] == ("c@example.org", None)  # not a feed: no token
