"""fmn_core.db: sessions carry the configuration and the catalog; nothing falls back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from fmn_core.config import Config
from fmn_core.db import Database, catalog_of, config_of, run_all_on_driver, run_on_driver
from fmn_core.rules import Catalog, default_catalog


def test_sessions_carry_the_configuration_and_catalog_they_were_made_with(
    tmp_path: Path,
) -> None:
    config = Config(database_url=f"sqlite:///{tmp_path / 'fmn.sqlite'}", contexts=("email",))
    own = Catalog(default_catalog().search("koji"))
    database = Database(config, catalog=own)
    try:
        with database.begin() as session:
            assert config_of(session) is config
            assert catalog_of(session) is own
    finally:
        database.dispose()


def test_database_uses_the_installed_catalog_by_default(tmp_path: Path) -> None:
    database = Database(Config(database_url=f"sqlite:///{tmp_path / 'fmn.sqlite'}"))
    try:
        assert database.catalog is default_catalog()
    finally:
        database.dispose()


def test_a_session_from_elsewhere_is_refused_rather_than_given_defaults(tmp_path: Path) -> None:
    database = Database(Config(database_url=f"sqlite:///{tmp_path / 'fmn.sqlite'}"))
    try:
        with Session(database.engine) as session:
            with pytest.raises(RuntimeError, match="no fmn configuration"):
                config_of(session)
            with pytest.raises(RuntimeError, match="no rule catalog"):
                catalog_of(session)
    finally:
        database.dispose()


def test_core_functions_use_the_sessions_catalog(tmp_path: Path) -> None:
    from fmn_core import preferences
    from fmn_core.errors import UnknownRule
    from fmn_core.models import Base

    only_koji = Catalog([default_catalog().get("koji_build_failed")])
    database = Database(
        Config(database_url=f"sqlite:///{tmp_path / 'fmn.sqlite'}"), catalog=only_koji
    )
    Base.metadata.create_all(database.engine)
    alice = preferences.Actor("alice")
    try:
        with database.begin() as session:
            preferences.add_filter(session, alice, "email", "builds")
            view = preferences.add_rule(session, alice, "email", "builds", "koji_build_failed", {})
            assert [rule.name for rule in view.rules] == ["koji_build_failed"]
            with pytest.raises(UnknownRule):
                preferences.add_rule(session, alice, "email", "builds", "app_is", {"app": "x"})
    finally:
        database.dispose()


@pytest.mark.postgres
def test_run_on_driver_runs_in_the_session_s_transaction(postgres_engine: Any) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with Session(postgres_engine) as session, session.begin():
        session.execute(text("CREATE TEMPORARY TABLE driver_probe (n integer) ON COMMIT DROP"))
        session.execute(text("INSERT INTO driver_probe VALUES (1), (2), (3)"))
        rows = run_on_driver(
            session, "SELECT n FROM driver_probe WHERE n = ANY(%s) ORDER BY n", [[1, 3]]
        )
        assert rows == [(1,), (3,)]
        assert run_on_driver(session, "SELECT pg_notify(%s, '')", ["fmn_probe"]) == [("",)]
        assert run_on_driver(session, "DELETE FROM driver_probe WHERE n = 2") == []
        assert session.scalar(text("SELECT count(*) FROM driver_probe")) == 2
        # A driver error arrives as SQLAlchemy's, which callers sort failures by.
        with pytest.raises(DBAPIError) as caught:
            run_on_driver(session, "SELECT 1 / (n - n) FROM driver_probe")
        assert "division by zero" in str(caught.value.orig)


@pytest.mark.postgres
def test_run_all_on_driver_sends_statements_together_in_the_transaction(
    postgres_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    with Session(postgres_engine) as session, session.begin():
        session.execute(text("CREATE TEMPORARY TABLE driver_probe (n integer) ON COMMIT DROP"))
        driver = session.connection().connection.driver_connection
        assert driver is not None
        # Sent together: in one pipeline, which psycopg flushes and syncs once.
        pipelines: list[bool] = []
        pipeline = type(driver).pipeline

        def counting_pipeline(self: Any) -> Any:
            pipelines.append(True)
            return pipeline(self)

        monkeypatch.setattr(type(driver), "pipeline", counting_pipeline)
        inserted, selected, notified = run_all_on_driver(
            session,
            [
                ("INSERT INTO driver_probe SELECT unnest(%s::integer[])", [[1, 2, 3]]),
                ("SELECT n FROM driver_probe WHERE n = ANY(%s) ORDER BY n", [[1, 3]]),
                ("SELECT pg_notify(%s, '')", ["fmn_probe"]),
            ],
        )
        monkeypatch.undo()
        # In order, each seeing the ones before.
        assert (inserted, selected, notified) == ([], [(1,), (3,)], [("",)])
        assert pipelines == [True]
        # Still the session's transaction: its own statements see the rows.
        assert session.scalar(text("SELECT count(*) FROM driver_probe")) == 3
        # An error in any of them arrives as SQLAlchemy's, which callers sort failures by.
        with pytest.raises(DBAPIError) as caught:
            run_all_on_driver(
                session,
                [
                    ("SELECT n FROM driver_probe", []),
                    ("SELECT 1 / (n - n) FROM driver_probe", []),
                ],
            )
        assert "division by zero" in str(caught.value.orig)


@pytest.mark.postgres
def test_run_all_on_driver_without_pipeline_mode_runs_them_one_at_a_time(
    postgres_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    # A libpq older than 14 has no pipeline mode: the same answers, a trip each.
    monkeypatch.setattr(psycopg.Pipeline, "is_supported", classmethod(lambda cls: False))
    with Session(postgres_engine) as session, session.begin():
        assert run_all_on_driver(
            session, [("SELECT %s::integer", [1]), ("SELECT pg_notify(%s, '')", ["fmn_probe"])]
        ) == [[(1,)], [("",)]]


@pytest.mark.postgres
def test_a_pooled_connection_is_pinged_only_after_sitting_idle(
    postgres_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A round trip per checkout was 16% of the senders' wall-clock time: a
    # connection used seconds ago is handed out as it is; one idle longer than
    # PING_AFTER_IDLE_SECONDS is pinged, and replaced if the server dropped it.
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from fmn_core import db as db_module

    engine = db_module.make_engine(postgres_database)
    pings: list[bool] = []
    ping = engine.dialect.do_ping

    def counting_ping(dbapi_connection: Any) -> bool:
        pings.append(True)
        return bool(ping(dbapi_connection))

    monkeypatch.setattr(engine.dialect, "do_ping", counting_ping)
    try:
        with engine.connect() as connection:
            first_pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() == first_pid
        assert pings == []  # fresh, then used a moment ago: no round trip

        # The server drops the connection while it sits in the pool, idle "long".
        other = create_engine(postgres_database, poolclass=NullPool)
        with other.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
            killer.commit()
        other.dispose()
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert pid != first_pid  # the dead one was pinged and replaced
        assert pings == [True]
    finally:
        engine.dispose()


def test_autocommit_is_offered_on_postgresql_pools_only(tmp_path: Path) -> None:
    database = Database(Config(database_url=f"sqlite:///{tmp_path / 'fmn.sqlite'}"))
    try:
        assert not database.can_autocommit
        with pytest.raises(RuntimeError), database.autocommit():
            pass
    finally:
        database.dispose()
