"""Migration 0009: an index on rules.filter_id; lz4 for message bodies on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from fmn_core.db import make_engine
from fmn_core.schema import alembic_config, upgrade


def _downgrade(url: str, revision: str) -> None:
    from alembic import command

    config = alembic_config(url)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


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
    _downgrade(url, "0008")
    assert "ix_rules_filter_id" not in _rule_indexes(url)


@pytest.mark.postgres
def test_migration_0009_compresses_new_bodies_with_lz4_on_postgres(
    empty_postgres_url: str,
) -> None:
    upgrade(empty_postgres_url, "0008")
    engine = make_engine(empty_postgres_url)
    attcompression = (
        "SELECT attcompression FROM pg_attribute "
        "WHERE attrelid = 'messages'::regclass AND attname = 'body'"
    )
    try:
        with engine.connect() as connection:
            lz4 = connection.execute(
                text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
            ).scalar()
            if not lz4 or "lz4" not in lz4:
                pytest.skip("this PostgreSQL server has no lz4")
            # A body stored before the migration: it stays readable, as pglz.
            connection.execute(
                text(
                    "INSERT INTO messages (id, topic, body, headers, received_at) VALUES "
                    "('old', 't', :body, '{}', now())"
                ),
                {"body": '{"text": "%s"}' % ("x" * 5000)},
            )
            connection.commit()
            assert connection.execute(text(attcompression)).scalar() == ""
        upgrade(empty_postgres_url, "0009")
        assert _rule_indexes(empty_postgres_url)["ix_rules_filter_id"] == ["filter_id"]
        with engine.connect() as connection:
            assert connection.execute(text(attcompression)).scalar() == "l"
            connection.execute(
                text(
                    "INSERT INTO messages (id, topic, body, headers, received_at) VALUES "
                    "('new', 't', :body, '{}', now())"
                ),
                {"body": '{"text": "%s"}' % ("y" * 5000)},
            )
            methods = {
                row[0]: row[1]
                for row in connection.execute(
                    text("SELECT id, pg_column_compression(body) FROM messages")
                )
            }
            assert methods == {"old": "pglz", "new": "lz4"}
            lengths = {
                row[0]: row[1]
                for row in connection.execute(
                    text("SELECT id, length(body->>'text') FROM messages")
                )
            }
            assert lengths == {"old": 5000, "new": 5000}
    finally:
        engine.dispose()
    _downgrade(empty_postgres_url, "0008")
    assert "ix_rules_filter_id" not in _rule_indexes(empty_postgres_url)
    engine = make_engine(empty_postgres_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text(attcompression)).scalar() == ""
    finally:
        engine.dispose()
