"""The process's one engine and one sessionmaker, built from the configuration.

Nothing here runs at import time. Callers own transactions: one unit of work is
one ``with sessionmaker.begin() as session:``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .config import Config
from .errors import DatabaseBusy
from .messages import loads_json
from .rules import Catalog, default_catalog
from .text import one_line

__all__ = [
    "BUSY_TIMEOUT",
    "PING_AFTER_IDLE_SECONDS",
    "READ_ONLY",
    "Database",
    "catalog_of",
    "config_of",
    "driver_said",
    "is_postgres",
    "is_sqlite",
    "make_engine",
    "run_on_driver",
]

#: Execution option (seconds): how long this connection's next SQLite transaction
#: waits for the write lock, instead of the engine's ``timeout``. The preference
#: gateway sets it (a person is waiting); the daemons keep the long default.
BUSY_TIMEOUT = "fmn_busy_timeout"
#: Execution option: this connection's next SQLite transaction only reads, so it
#: starts DEFERRED and, under WAL, reads while another connection writes.
READ_ONLY = "fmn_read_only"
#: A pooled server connection unused for longer than this is tested before it is
#: handed out (``_ping_idle_connections``); one used more recently is not.
PING_AFTER_IDLE_SECONDS = 5.0


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine, preparing SQLite for several threads and processes.

    SQLite gets WAL (readers don't block the writer), a busy timeout (a second
    process waits instead of failing) and enforced foreign keys; its parent
    directory is created so the embedded default works on a fresh machine.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", 30)
        default_busy_ms = int(float(connect_args["timeout"]) * 1000)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # pysqlite's own transaction handling defers BEGIN; take it over so
            # SQLAlchemy's BEGIN is real and writers serialize cleanly.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            # BEGIN IMMEDIATE waits for the write lock up to the busy timeout: the
            # caller's (BUSY_TIMEOUT), else the engine's. Set only when it changes.
            # A transaction that only reads (READ_ONLY) takes no write lock.
            options = connection.get_execution_options()
            seconds = options.get(BUSY_TIMEOUT)
            wanted = default_busy_ms if seconds is None else int(seconds * 1000)
            info = connection.connection.info
            if info.get(BUSY_TIMEOUT, default_busy_ms) != wanted:
                connection.exec_driver_sql(f"PRAGMA busy_timeout = {wanted}")
                info[BUSY_TIMEOUT] = wanted
            connection.exec_driver_sql("BEGIN" if options.get(READ_ONLY) else "BEGIN IMMEDIATE")

        return engine
    # Stored bus messages come back as jsonb: each claimed row's body and headers
    # are parsed, and orjson does it in a fraction of json.loads's time.
    kwargs.setdefault("json_deserializer", loads_json)
    if "pool_pre_ping" in kwargs:
        return create_engine(url, **kwargs)
    engine = create_engine(url, **kwargs)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Test a pooled connection before use only when it sat unused for a while.

    ``pool_pre_ping`` costs a round trip to the server on every checkout: at one
    row per transaction, 16% of the senders' wall-clock time. A connection that was
    returned to the pool seconds ago is as alive as a ping would say; one that sat
    idle longer (where servers, firewalls and restarts drop connections) is pinged,
    and replaced if the ping fails. A connection that breaks between its last use
    and the next few seconds fails that transaction with a disconnection error,
    which SQLAlchemy answers by replacing it, and which the daemons retry as any
    transient database error.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["fmn_returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get("fmn_returned_at")
        if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            return  # new (just connected), or in use seconds ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("a pooled connection failed its ping") from exc
        if not alive:
            raise DisconnectionError("a pooled connection failed its ping")


#: SQLite's primary result codes for "another connection holds the lock".
_SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
#: PostgreSQL's SQLSTATE for a lock not granted within lock_timeout.
_PG_LOCK_NOT_AVAILABLE = "55P03"


def is_busy(error: OperationalError) -> bool:
    """Whether the database refused because another transaction held a lock too long
    (by the driver's error code, never by the message's words)."""
    cause = error.orig
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _SQLITE_BUSY_CODES:
        return True
    return getattr(cause, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE


def driver_said(error: BaseException) -> str:
    """What the database driver said, in one line: the real cause ("connection
    refused", "attempt to write a readonly database"), not SQLAlchemy's wrapping."""
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    return one_line(lines[0], limit=160) if lines else type(error).__name__


def is_sqlite(engine_or_session: Engine | Session) -> bool:
    """Whether this engine (or session's bind) is SQLite."""
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "sqlite"


def is_postgres(engine_or_session: Engine | Session) -> bool:
    """Whether this engine (or session's bind) is PostgreSQL."""
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "postgresql"


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_for_transaction(session: Session, name: str, *, within: str | None = None) -> None:
    """Hold PostgreSQL's advisory lock named ``name`` until the transaction ends.

    The lock's key is a hash of the name, so callers need no registry of numbers;
    the name says what is serialized (``fmn-code-lock\0<address key>``, say).
    ``within`` names a lock held shared beside it (in the same statement): whoever
    takes that one exclusively waits for every such holder, and they for it.
    """
    if within is None:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(name)})
        return
    session.execute(
        text("SELECT pg_advisory_xact_lock_shared(:outer), pg_advisory_xact_lock(:key)"),
        {"outer": _lock_key(within), "key": _lock_key(name)},
    )


def lock_exclusively(session: Session, name: str) -> None:
    """Hold the lock named ``name`` exclusively until the transaction ends: every
    transaction holding it shared (``lock_for_transaction(within=name)``) ends first,
    and none starts until this one ends."""
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(name)})


def run_on_driver(
    session: Session, statement: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    """Run one statement on a PostgreSQL session's psycopg connection; the rows it returns.

    It runs in the session's transaction. For statements sent once per batch on
    the ingest path, where SQLAlchemy's execution (statement objects, result
    wrapping) costs the client more than the database takes to run them; a
    statement whose text never changes is prepared by psycopg after a few runs.
    Driver errors are wrapped as SQLAlchemy wraps its own (``DBAPIError``), so
    callers sort them the same way (``fmn_daemon.failures.is_transient``).
    """
    import psycopg  # only PostgreSQL sessions come here

    driver = session.connection().connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description is not None else []
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def run_all_on_driver(
    session: Session, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[list[tuple[Any, ...]]]:
    """``run_on_driver`` for statements that do not need each other's rows: one round trip.

    They are sent together in psycopg's pipeline mode and run in order, in the
    session's transaction; each one's rows come back in the same order. The
    ingest writer waits for every round trip, and then for the interpreter lock
    its other thread holds meanwhile: three small queries sent one after the
    other took about twice as long as the same three sent together. An error in
    any of them fails the transaction, as it would one at a time, and arrives
    wrapped as ``run_on_driver``'s do.
    """
    import psycopg

    if not psycopg.Pipeline.is_supported():  # a libpq older than 14: one at a time
        return [run_on_driver(session, statement, params) for statement, params in statements]
    driver = session.connection().connection.driver_connection
    assert driver is not None
    cursors = [driver.cursor() for _ in statements]
    try:
        with driver.pipeline():
            for cursor, (statement, params) in zip(cursors, statements, strict=True):
                cursor.execute(statement, params)
        return [c.fetchall() if c.description is not None else [] for c in cursors]
    except psycopg.Error as exc:
        text = "; ".join(statement for statement, _ in statements)
        raise DBAPIError.instance(text, None, exc, psycopg.Error) from exc
    finally:
        for cursor in cursors:
            cursor.close()


def config_of(session: Session) -> Config:
    """The configuration a session was made with (by :class:`Database`)."""
    config = session.info.get("config")
    if not isinstance(config, Config):
        # Defaults here would quietly offer other contexts and limits than the
        # operator configured; a session from elsewhere is a bug to fix.
        raise RuntimeError("this session carries no fmn configuration; make it with Database")
    return config


def catalog_of(session: Session) -> Catalog:
    """The rule catalog a session was made with (by :class:`Database`)."""
    catalog = session.info.get("catalog")
    if not isinstance(catalog, Catalog):
        raise RuntimeError("this session carries no rule catalog; make it with Database")
    return catalog


class Database:
    """One engine and one sessionmaker for a process."""

    def __init__(
        self, config: Config, engine: Engine | None = None, *, catalog: Catalog | None = None
    ) -> None:
        self.config = config
        #: The rules this process knows: the installed ``fmn.rules`` entry points by default.
        self.catalog = catalog if catalog is not None else default_catalog()
        self.engine = engine if engine is not None else make_engine(config.database_url)
        # Core functions find the configuration and the catalog on their session
        # (``config_of``, ``catalog_of``), so every call site needn't thread them through.
        self.sessionmaker: sessionmaker[Session] = sessionmaker(
            self.engine, expire_on_commit=False, info=self.session_info()
        )

    def session_info(self) -> dict[str, Any]:
        """What every session of this database carries (for a sessionmaker made elsewhere)."""
        return {"config": self.config, "catalog": self.catalog}

    def begin(self) -> Any:
        """A new session inside a transaction: ``with db.begin() as session:``."""
        return self.sessionmaker.begin()

    @property
    def can_autocommit(self) -> bool:
        """Whether :meth:`autocommit` is offered: on PostgreSQL, when sessions are made
        on the engine's pool (not joined to an outer transaction, as tests do).
        SQLite's transactions are begun by hand (``make_engine``)."""
        bind = self.sessionmaker.kw.get("bind")
        return isinstance(bind, Engine) and is_postgres(bind)

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A pooled connection on which each statement commits as it runs.

        For a unit of work that is one statement: it saves the ``BEGIN`` and
        ``COMMIT`` round trips and the session around them. Only where
        :attr:`can_autocommit` says so.
        """
        with self.autocommit_connection() as connection:
            yield connection

    def autocommit_connection(self) -> Connection:
        """:meth:`autocommit`'s connection, for a caller that keeps it open and closes it.

        Taking a connection from the pool and giving it back cost more CPU than the
        one statement run on it: whoever commits statement after statement keeps one.
        """
        bind = self.sessionmaker.kw.get("bind")
        if not (isinstance(bind, Engine) and is_postgres(bind)):
            raise RuntimeError("autocommit connections are offered on PostgreSQL's pool only")
        return bind.connect().execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def person_waiting(
        self, *, read_only: bool = False, commit: bool = True, busy_timeout: float | None = None
    ) -> Iterator[Session]:
        """One unit of work for a person at a front end: it waits at most
        ``gateway.busy_timeout_seconds`` for a lock another transaction holds, then
        raises :class:`DatabaseBusy` with nothing written. Committed unless ``commit``
        is false (a trial); ``busy_timeout`` overrides the configured wait. The daemons
        keep the engine's long wait."""
        seconds = self.config.gateway.busy_timeout_seconds if busy_timeout is None else busy_timeout
        try:
            with self.sessionmaker() as session:
                session.begin()
                try:
                    if is_sqlite(session):
                        # Starts the transaction (BEGIN IMMEDIATE, or BEGIN to only read)
                        # with the short wait.
                        options = {BUSY_TIMEOUT: seconds, READ_ONLY: read_only}
                        session.connection(execution_options=options)
                    elif is_postgres(session):
                        # For this transaction only (is_local), so the pool stays as it was.
                        milliseconds = f"{max(1, int(seconds * 1000))}ms"
                        session.execute(select(func.set_config("lock_timeout", milliseconds, True)))
                    yield session
                    if commit:
                        session.commit()
                finally:
                    if session.in_transaction():
                        session.rollback()
        except OperationalError as error:
            if is_busy(error):
                raise DatabaseBusy() from error
            raise

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
