"""Confirmation codes through ``fmn_core.preferences.confirm``: single use, expiring,
and guessing rate-limited — also when the guesses come in parallel.

The bot's ``fmn confirm`` is checked the same way in ``test_bot.py``. Each test
runs on SQLite and on PostgreSQL, on a database of its own (not the rolled-back
outer transaction of the ``db`` fixture: parallel guesses need connections of
their own, as the bot's threads and several TUI sessions have).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon.conftest import SmtpServer
from daemon.test_delivery import drain, make_config
from sqlalchemy import func, select, update

from fmn_core import preferences
from fmn_core.config import Config, ConfirmationConfig
from fmn_core.db import Database
from fmn_core.destinations import CODE_ALPHABET, CODE_LENGTH
from fmn_core.errors import ConfirmationFailed, TooManyCodes
from fmn_core.models import CodeSend, Confirmation, User, utcnow
from fmn_core.preferences import Actor
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LiveHub

from .conftest import upgrade_schema

ALICE = Actor("alice")
MAX_FAILURES = 5
LOCKOUT_MINUTES = 15
GUESSERS = 16


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated database of the test's own, with short confirmation limits."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    else:
        url = request.getfixturevalue("empty_postgres_url")
    upgrade_schema(url)
    config = Config(
        database_url=url,
        confirmation=ConfirmationConfig(max_failures=MAX_FAILURES, lockout_minutes=LOCKOUT_MINUTES),
    )
    db = Database(config)
    try:
        yield db
    finally:
        db.dispose()


def new_code(db: Database, address: str) -> str:
    with db.begin() as session:
        pending = preferences.set_destination(session, ALICE, "email", address)
    assert pending.code is not None
    return pending.code


def attempt(db: Database, code: str) -> str:
    """One ``confirm`` as a front end makes it: a failure is committed, then reported."""
    with db.begin() as session:
        try:
            result = preferences.confirm(session, ALICE, code)
        except ConfirmationFailed:
            return "wrong"  # nothing waits for confirmation
    if result.outcome is preferences.ConfirmOutcome.LOCKED:
        return "locked now" if "minutes" in result.message else "locked"
    return str(result.outcome)


def test_confirmation_code_is_single_use_and_case_and_dash_blind(
    database: Database, figures: Any
) -> None:
    code = new_code(database, "a@example.org")
    assert attempt(database, f" {code[:4].lower()}-{code[4:]} ") == "confirmed"
    assert attempt(database, code) == "wrong"
    with database.begin() as session:
        (view,) = preferences.get_context(session, ALICE, "email").destinations
        assert view.confirmed and not view.pending
    figures(backend=database.engine.dialect.name, reused_code="refused")


def test_confirmation_code_expires_and_resend_replaces_it(database: Database, figures: Any) -> None:
    code = new_code(database, "b@example.org")
    with database.begin() as session:
        session.execute(update(Confirmation).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    assert attempt(database, code) == "expired"
    with database.begin() as session:
        session.execute(
            update(Confirmation).values(
                created_at=utcnow() - dt.timedelta(hours=1),
                expires_at=utcnow() + dt.timedelta(hours=1),
            )
        )
        # The resend interval is kept per address in the code-sending log.
        session.execute(update(CodeSend).values(created_at=utcnow() - dt.timedelta(hours=1)))
        fresh = preferences.resend_confirmation(session, ALICE, "email").code
    assert fresh is not None and fresh != code
    assert attempt(database, code) == "wrong"  # the old code stopped working
    assert attempt(database, fresh) == "confirmed"
    figures(backend=database.engine.dialect.name, expired="refused", replaced="refused")


def test_confirmation_guessing_locks_out_and_lockout_ends(database: Database, figures: Any) -> None:
    code = new_code(database, "c@example.org")
    outcomes = [attempt(database, f"WRONG{n:03d}") for n in range(MAX_FAILURES + 3)]
    assert outcomes == ["wrong"] * (MAX_FAILURES - 1) + ["locked now"] + ["locked"] * 3
    assert attempt(database, code) == "locked"  # even the right code, while locked out
    with database.begin() as session:
        past = utcnow() - dt.timedelta(seconds=1)
        session.execute(update(User).values(confirm_locked_until=past))
    assert attempt(database, code) == "confirmed"
    per_day = MAX_FAILURES * 24 * 60 // LOCKOUT_MINUTES
    space = len(CODE_ALPHABET) ** CODE_LENGTH
    figures(
        backend=database.engine.dialect.name,
        wrong_before_lockout=MAX_FAILURES - 1,
        guesses_per_day_at_most=per_day,
        code_space=space,
        chance_per_day=f"{per_day / space:.1e}",
    )


def test_confirmation_parallel_guesses_are_all_counted(database: Database, figures: Any) -> None:
    """Guesses sent at the same moment (the bot is threaded) can't slip past the limit."""
    new_code(database, "d@example.org")
    barrier = threading.Barrier(GUESSERS)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def guess(number: int) -> None:
        try:
            barrier.wait(timeout=30)
            outcomes.append(attempt(database, f"PARALLEL{number:02d}"))
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(GUESSERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    counted = Counter(outcomes)
    with database.begin() as session:
        user = session.scalars(select(User).where(User.name == "alice")).one()
        locked = user.confirm_locked_until is not None and user.confirm_locked_until > utcnow()
    figures(
        backend=database.engine.dialect.name,
        parallel_guesses=GUESSERS,
        outcomes=dict(counted),
        errors=[type(e).__name__ for e in errors],
        locked_out=locked,
    )
    assert not errors, errors
    # Every guess that was compared with the code counts: at most MAX_FAILURES of them.
    assert counted["wrong"] + counted["locked now"] <= MAX_FAILURES, counted
    assert locked


# --- how many codes go out: per address, per user, across restarts and processes ----

STRANGER = "stranger@example.org"


def test_confirmation_remove_readd_loop_mails_the_stranger_once(
    db: Database, smtp_server: SmtpServer, figures: Any
) -> None:
    """The issue's loop, against the daemon's real sender and a real SMTP server:
    set, (the daemon sends the code), remove, set again... 20 times in a few seconds
    used to mail the stranger 20 codes."""
    config = make_config(db, smtp_server)
    db.config = config
    db.sessionmaker.configure(info=db.session_info())
    delivery = Senders(db, config, Metrics(), LiveHub())
    refusals: list[str] = []
    started = time.monotonic()
    for _ in range(20):
        try:
            with db.begin() as session:
                pending = preferences.set_destination(session, ALICE, "email", STRANGER)
        except TooManyCodes as error:
            refusals.append(str(error))
            continue
        drain(delivery)
        with db.begin() as session:
            preferences.remove_destination(session, ALICE, "email", pending.destination.id)
    elapsed = time.monotonic() - started
    drain(delivery)
    mails = [m for m in smtp_server.messages if STRANGER in m.rcpt_tos]
    figures(
        backend=db.engine.dialect.name,
        attempts=20,
        seconds=round(elapsed, 1),
        code_mails=len(mails),
        refused=len(refusals),
    )
    assert len(mails) == 1
    assert len(refusals) == 19
    assert all("before asking for another" in text for text in refusals)


def test_confirmation_code_limits_survive_a_restart(database: Database) -> None:
    """The limits live in the database: a new process (a new engine) sees them."""
    new_code(database, STRANGER)
    with database.begin() as session:
        pending = preferences.get_context(session, ALICE, "email").destinations[0]
        preferences.remove_destination(session, ALICE, "email", pending.id)
    restarted = Database(database.config)
    try:
        with pytest.raises(TooManyCodes), restarted.begin() as session:
            preferences.set_destination(session, ALICE, "email", STRANGER)
    finally:
        restarted.dispose()


REQUESTERS = 12
PER_ADDRESS = 3


@pytest.fixture
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of its own with no resend interval and 3 codes per address."""
    if request.node.callspec.params.get("backend") == "postgres":
        url = request.getfixturevalue("empty_postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'limits.sqlite'}"
    upgrade_schema(url)
    config = Config(
        database_url=url,
        confirmation=ConfirmationConfig(resend_interval_seconds=0, codes_per_address=PER_ADDRESS),
    )
    db = Database(config)
    try:
        yield db
    finally:
        db.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_confirmation_parallel_requests_for_one_address_are_all_counted(
    limited: Database, backend: str, figures: Any
) -> None:
    """Many users asking at the same moment (several daemons, bot threads) can't
    push more codes to one address than the limit."""
    barrier = threading.Barrier(REQUESTERS)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def ask(number: int) -> None:
        try:
            barrier.wait(timeout=30)
            with limited.begin() as session:
                preferences.set_destination(session, Actor(f"user{number:02d}"), "email", STRANGER)
            outcomes.append("code")
        except TooManyCodes:
            outcomes.append("refused")
        except BaseException as error:  # handed to the test thread
            errors.append(error)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(REQUESTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    counted = Counter(outcomes)
    with limited.begin() as session:
        rows = session.scalar(select(func.count()).select_from(CodeSend))
    figures(
        backend=backend,
        requesters=REQUESTERS,
        outcomes=dict(counted),
        errors=[f"{type(e).__name__}: {str(e)[:80]}" for e in errors],
        code_rows=rows,
    )
    assert counted["code"] <= PER_ADDRESS and rows == counted["code"]
    if backend == "postgres":
        assert not errors, errors
        assert counted == {"code": PER_ADDRESS, "refused": REQUESTERS - PER_ADDRESS}
