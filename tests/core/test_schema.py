"""The migrations and the models describe the same schema, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from fmn_core.db import make_engine
from fmn_core.models import Base
from fmn_core.schema import current_revision, head_revision, is_current, upgrade


def _check_matches_models(url: str) -> None:
    revision = upgrade(url)
    assert revision == head_revision(url)
    engine = make_engine(url)
    try:
        assert is_current(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == [], f"models and migrations differ: {differences}"
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
    finally:
        engine.dispose()


def test_schema_upgrade_matches_models_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    _check_matches_models(url)


@pytest.mark.postgres
def test_schema_upgrade_matches_models_on_postgres(postgres_database: str) -> None:
    # A database of its own: the shared session engine already has create_all's tables.
    from sqlalchemy import create_engine, text

    base = postgres_database.rsplit("/", 1)[0]
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text('DROP DATABASE IF EXISTS "fmn_schema_check" WITH (FORCE)'))
        connection.execute(text('CREATE DATABASE "fmn_schema_check"'))
    try:
        _check_matches_models(f"{base}/fmn_schema_check")
    finally:
        with admin.connect() as connection:
            connection.execute(text('DROP DATABASE IF EXISTS "fmn_schema_check" WITH (FORCE)'))
        admin.dispose()


def test_schema_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'twice.sqlite'}"
    first = upgrade(url)
    second = upgrade(url)
    assert first == second == head_revision(url)
    engine = make_engine(url)
    try:
        assert current_revision(engine) == first
    finally:
        engine.dispose()
