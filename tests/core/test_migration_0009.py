"""Migration 0009: an index on rules.filter_id; lz4 for message bodies on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from fmn_core.db import make_engine
from fmn_core.schema import downgrade, upgrade


def _rule_indexes(url: str) -> dict[str, list[str | None]]:
    engine = make_engine(url)
    try:
        return {i["name"] or "": i["column_names"] for i in inspect(engine).get_indexes("rules")}
    finally:
        engine.dispose()


def test_migration_0009_indexes_rules_by_filter_and_goes_back_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(url, "0008")
    assert "ix_rules_filter_id" not in _rule_indexes(url)
    upgrade(url, "0009")
    assert _rule_indexes(url)["ix_rules_filter_id"] == ["filter_id"]
    downgrade(url, "0008")
    assert "ix_rules_filter_id" not in _rule_indexes(url)


@pytest.mark.postgres
def test_migration_0009_compresses_new_bodies_with_lz4_on_postgres(
    empty_postgres_url: str,
) -> None:
    # On a server without lz4 (or before PostgreSQL 14, which has no per-column
    # compression) the migration leaves bodies as they were; either way they read back.
    upgrade(empty_postgres_url, "0008")
    engine = make_engine(empty_postgres_url)
    attcompression = (
        "SELECT attcompression FROM pg_attribute "
        "WHERE attrelid = 'messages'::regclass AND attname = 'body'"
    )
    insert = text(
        "INSERT INTO messages (id, topic, body, headers, received_at) VALUES "
        "(:id, 't', :body, '{}', now())"
    )
    try:
        with engine.connect() as connection:
            per_column = (
                int(connection.execute(text("SHOW server_version_num")).scalar_one()) >= 140000
            )
            choices: list[str] | None = connection.execute(
                text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
            ).scalar()
            lz4 = choices is not None and "lz4" in choices
            # A body stored before the migration: it stays readable as it was.
            connection.execute(insert, {"id": "old", "body": '{"text": "%s"}' % ("x" * 5000)})
            connection.commit()
            if per_column:
                assert connection.execute(text(attcompression)).scalar() == ""
        upgrade(empty_postgres_url, "0009")
        assert _rule_indexes(empty_postgres_url)["ix_rules_filter_id"] == ["filter_id"]
        with engine.connect() as connection:
            connection.execute(insert, {"id": "new", "body": '{"text": "%s"}' % ("y" * 5000)})
            if per_column:
                assert connection.execute(text(attcompression)).scalar() == ("l" if lz4 else "")
                methods: dict[str, str] = {
                    row[0]: row[1]
                    for row in connection.execute(
                        text("SELECT id, pg_column_compression(body) FROM messages")
                    )
                }
                assert methods == {"old": "pglz", "new": "lz4" if lz4 else "pglz"}
            lengths: dict[str, int] = {
                row[0]: row[1]
                for row in connection.execute(
                    text("SELECT id, length(body->>'text') FROM messages")
                )
            }
            assert lengths == {"old": 5000, "new": 5000}
    finally:
        engine.dispose()
    downgrade(empty_postgres_url, "0008")
    assert "ix_rules_filter_id" not in _rule_indexes(empty_postgres_url)
    if per_column:
        engine = make_engine(empty_postgres_url)
        try:
            with engine.connect() as connection:
                assert connection.execute(text(attcompression)).scalar() == ""
        finally:
            engine.dispose()
