"""Fixtures for the TUI tests: the app on a real database, with fixed data.

Everything shown on screen is fixed (names, messages, times), so snapshots are
stable: messages come from ``messages.jsonl`` with fixed receive times, and the
outbox rows the daemon would write are inserted with fixed times too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from fmn_core import preferences
from fmn_core.config import Config
from fmn_core.db import Database, make_engine
from fmn_core.models import Base, Notification, StoredMessage, User
from fmn_core.preferences import Actor
from fmn_core.rules import Catalog, default_catalog
from fmn_tui.account import Account
from fmn_tui.app import FmnApp


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests on a fresh event loop (Pilot needs one; no plugin required)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


HERE = Path(__file__).parent
MESSAGES = HERE / "messages.jsonl"
USER = "alice"
#: The newest stored message was received at this time; each older one a minute earlier.
FIXED = dt.datetime(2024, 5, 6, 7, 8, tzinfo=dt.UTC)


def make_database(tmp_path: Path, **config: Any) -> Database:
    """A SQLite database file with fmn's schema."""
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    return Database(Config(database_url=url, **config), engine)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh SQLite database in tmp_path."""
    database = make_database(tmp_path)
    try:
        yield database
    finally:
        database.dispose()


class Core:
    """Reads and writes through ``fmn_core.preferences``, as a test's independent witness."""

    def __init__(self, database: Database, user: str = USER) -> None:
        self.database = database
        self.actor = Actor(user)

    def __call__(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.database.begin() as session:
            return function(session, self.actor, *args, **kwargs)

    def filters(self, context: str) -> list[tuple[str, bool, int, list[str]]]:
        """(name, active, position, rule texts) of a context's filters."""
        return [
            (f.name, f.active, f.position, [r.text for r in f.rules])
            for f in self(preferences.list_filters, context)
        ]


@pytest.fixture
def core(sqlite_db: Database) -> Core:
    """The witness on the SQLite database."""
    return Core(sqlite_db)


def store_messages(database: Database) -> list[str]:
    """Store the fixed bus messages (newest first in the file); their ids."""
    ids = []
    with database.begin() as session:
        for index, line in enumerate(MESSAGES.read_text(encoding="utf-8").splitlines()):
            data = json.loads(line)
            session.add(
                StoredMessage(
                    id=data["id"],
                    topic=data["topic"],
                    body=data["body"],
                    headers=data.get("headers") or {},
                    received_at=FIXED - dt.timedelta(minutes=index),
                )
            )
            ids.append(data["id"])
    return ids


def seed_profile(database: Database, core: Core) -> None:
    """A lived-in account: destinations, filters, a digest, notifications."""
    pending = core(preferences.set_destination, "email", "alice@example.org")
    assert core(preferences.confirm, pending.code).confirmed
    core(preferences.set_destination, "irc", "alice_irc")
    core(preferences.add_filter, "email", "koji tags")
    core(preferences.add_rule, "email", "koji tags", "app_is", {"app": "koji"})
    core(preferences.add_rule, "email", "koji tags", "topic_matches", {"pattern": "*.buildsys.tag"})
    core(preferences.add_filter, "email", "bodhi")
    core(preferences.add_rule, "email", "bodhi", "app_is", {"app": "bodhi"})
    core(preferences.add_rule, "email", "bodhi", "triggered_by_me", {}, negated=True)
    # Brackets in a name must show as typed, never as markup.
    core(preferences.add_filter, "email", "[pagure]")
    core(preferences.add_rule, "email", "[pagure]", "app_is", {"app": "pagure"})
    core(preferences.set_filter_active, "email", "[pagure]", False)
    core(preferences.set_digest, "email", 60, 10)
    core(preferences.set_context_enabled, "irc", False)
    ids = store_messages(database)
    with database.begin() as session:
        user = session.query(User).filter_by(name=USER).one()
        for index, (message_id, context, name, state) in enumerate(
            [
                (ids[2], "email", "koji tags", "sent"),
                (ids[3], "email", "koji tags", "pending"),
                (ids[0], "email", "bodhi", "failed"),
                (ids[2], "irc", "koji tags", "sent"),
            ]
        ):
            created = FIXED - dt.timedelta(minutes=10 * index)
            session.add(
                Notification(
                    message_id=message_id,
                    user_id=user.id,
                    context=context,
                    filter_name=name,
                    state=state,
                    created_at=created,
                    next_attempt_at=created,
                    sent_at=created if state == "sent" else None,
                )
            )


@pytest.fixture
def profile(sqlite_db: Database, core: Core) -> Core:
    """The lived-in account on the SQLite database."""
    seed_profile(sqlite_db, core)
    return core


AppFactory = Callable[..., FmnApp]


@pytest.fixture
def make_app(sqlite_db: Database) -> Iterator[AppFactory]:
    """Build the app on a database; after the test, no internal error may have happened."""
    apps: list[FmnApp] = []
    accounts: list[Account] = []

    def factory(
        database: Database | None = None,
        *,
        name: str = USER,
        admin: bool = False,
        user: str | None = None,
        catalog: Catalog | None = None,
    ) -> FmnApp:
        database = database or sqlite_db
        # The in-process gateway: the same server ``fmn-daemon gateway`` runs, over a
        # socketpair, so every screen here goes through the wire protocol.
        account = Account.in_process(database, Actor(name, is_admin=admin), user)
        accounts.append(account)
        app = FmnApp(account, catalog or default_catalog())
        apps.append(app)
        return app

    yield factory
    for account in accounts:
        account.close()
    for app in apps:
        assert app.internal_errors == [], f"internal errors happened: {app.internal_errors}"


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until every worker has finished and the screen has handled what they sent."""
    app = pilot.app
    for _ in range(50):
        await app.workers.wait_for_complete()
        await pilot._wait_for_screen()
        if all(worker.is_finished for worker in app.workers):
            await pilot.pause()
            return
    raise AssertionError("workers never settled")


async def type_text(pilot: Pilot[Any], text: str) -> None:
    """Type text as keystrokes."""
    await pilot.press(*text)


async def fill(pilot: Pilot[Any], text: str) -> None:
    """Put text in the focused input at once (typing is slow; its own tests type)."""
    from textual.widgets import Input

    field = pilot.app.focused
    assert isinstance(field, Input), field
    field.value = text
    await settle(pilot)


def table_rows(app: FmnApp, selector: str) -> list[list[str]]:
    """The cells of a DataTable on the current screen, as plain text."""
    from textual.widgets import DataTable

    table = app.screen.query_one(selector, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def notices(app: FmnApp) -> list[str]:
    """The messages of the notifications (toasts) shown so far."""
    return [str(notification.message) for notification in app._notifications]


def text_of(app: FmnApp, selector: str) -> str:
    """The text a Static on the current screen shows."""
    from textual.widgets import Static

    return str(app.screen.query_one(selector, Static).render())
