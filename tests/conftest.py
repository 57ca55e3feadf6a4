"""Fixtures every test folder shares: configuration, databases, the corpus."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

# tests/corpus/ says where the corpus is (FMN_CORPUS overrides it); corpus_lines
# is re-exported for the test folders that import it from here.
from corpus import CorpusMissing
from corpus import corpus_lines as corpus_lines
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from fmn_core.config import Config
from fmn_core.db import Database, make_engine
from fmn_core.models import Base

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "fmn_daemon" / "samples" / "messages.jsonl"

POSTGRES_URL = os.environ.get(
    "FMN_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
RABBITMQ_URL = os.environ.get("FMN_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")


#: Folders whose every test is ``slow``: whole-system runs (real daemons, brokers,
#: kills, fuzzing). ``nox -s tests -- -m "not slow"`` leaves them out.
SLOW_FOLDERS = ("faults", "e2e")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test in ``SLOW_FOLDERS`` ``slow`` (one place, not a marker per module)."""
    tests_dir = Path(__file__).resolve().parent
    slow_dirs = [tests_dir / name for name in SLOW_FOLDERS]
    for item in items:
        if any(item.path.is_relative_to(folder) for folder in slow_dirs):
            item.add_marker(pytest.mark.slow)


def service_missing(name: str, why: str) -> NoReturn:
    """Skip a test whose service (or machine facility) is absent; under CI, fail instead.

    CI runs on a machine set up for the whole suite, so there a missing service is a
    broken set-up, not a reason to pass with less checked.
    """
    if os.environ.get("CI"):
        pytest.fail(f"{name} is required under CI but is not reachable: {why}")
    pytest.skip(f"{name} is not reachable ({why}); start it to run this test")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep tests away from the developer's own configuration and state."""
    monkeypatch.delenv("FMN_CONFIG", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    """The corpus's lines (both files; ``tests/corpus/`` unless ``FMN_CORPUS`` says otherwise)."""
    try:
        return corpus_lines()
    except CorpusMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def readable_messages(lines: list[str]) -> list[Any]:
    """The corpus lines that parse, as fedora-messaging messages (the malformed ones left out)."""
    from fmn_core.errors import MalformedMessage
    from fmn_core.messages import parse_line

    loaded = []
    for line in lines:
        try:
            loaded.append(parse_line(line))
        except MalformedMessage:
            continue
    return loaded


def _postgres_engine_or_skip() -> object:
    engine = create_engine(POSTGRES_URL, pool_pre_ping=True)
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:
        engine.dispose()
        service_missing("PostgreSQL", f"{POSTGRES_URL}: {exc.__class__.__name__}")
    return engine


@contextlib.contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A brand-new, empty PostgreSQL database (no tables) named after ``prefix``; its URL.

    Dropped afterwards, connections and all. For tests whose sessions must commit for
    real (NOTIFY, snapshots shared between connections, schema checks).
    """
    admin = _postgres_engine_or_skip()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:  # type: ignore[attr-defined]
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:  # type: ignore[attr-defined]
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; its URL."""
    with fresh_postgres_database("fmn_test") as url:
        yield url


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A brand-new, empty PostgreSQL database (no tables) for one test; dropped afterwards."""
    with fresh_postgres_database("fmn_empty") as url:
        yield url


@contextlib.contextmanager
def database_at(url: str) -> Iterator[Database]:
    """A ``Database`` at ``url`` with fmn's tables made, whose units commit for real."""
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    try:
        yield Database(Config(database_url=url), engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def committed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A ``Database`` whose units commit for real, on SQLite or a fresh PostgreSQL: for
    code that opens connections of its own (the senders' threads, two writers at
    once), which the ``db`` fixture's one PostgreSQL connection cannot serve."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    else:
        url = request.getfixturevalue("empty_postgres_url")
    with database_at(url) as db:
        yield db


@pytest.fixture
def file_db(tmp_path: Path) -> Iterator[Database]:
    """A ``Database`` in a SQLite file of this test's own."""
    with database_at(f"sqlite:///{tmp_path / 'fmn.sqlite'}") as db:
        yield db


@pytest.fixture(scope="session")
def postgres_engine(postgres_database: str) -> Iterator[object]:
    """An engine on the session's PostgreSQL database, schema created once."""
    engine = make_engine(postgres_database)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A ``Database`` on SQLite (a file in tmp_path) or PostgreSQL.

    On PostgreSQL each test runs inside an outer transaction that is rolled back
    at teardown; sessions join it through savepoints, so ``Session.begin()``
    blocks in the code under test behave as they do in production.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
        config = Config(database_url=url)
        engine = make_engine(url)
        Base.metadata.create_all(engine)
        database = Database(config, engine)
        try:
            yield database
        finally:
            engine.dispose()
        return
    engine = request.getfixturevalue("postgres_engine")
    connection = engine.connect()
    outer = connection.begin()
    config = Config(database_url=str(engine.url))
    database = Database(config, engine)
    database.sessionmaker = sessionmaker(
        bind=connection,
        expire_on_commit=False,
        join_transaction_mode="create_savepoint",
        info=database.session_info(),
    )
    try:
        yield database
    finally:
        outer.rollback()
        connection.close()


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    """One session in one transaction, committed at the end of the test."""
    with db.begin() as session:
        yield session


@contextlib.contextmanager
def database_locked(db: Database) -> Iterator[None]:
    """Another connection holds the write lock (SQLite) or the users table (PostgreSQL),
    as another change would while a person waits on a front end."""
    if db.engine.dialect.name == "sqlite":
        holder = sqlite3.connect(str(db.engine.url.database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    with db.engine.connect() as connection:
        connection.exec_driver_sql("LOCK TABLE users IN ACCESS EXCLUSIVE MODE NOWAIT")
        try:
            yield
        finally:
            connection.rollback()
