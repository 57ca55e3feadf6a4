"""The bot on a database whose schema this fmn can't use: the operator is told once
what to do, users are told to come back later, IRC delivery waits, and the upgrade
is noticed without a reload."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from unittest import mock

import pytest
from sqlalchemy import select, text

import fmn_bot.plugin
from fmn_bot.schema_gate import RECHECK_SECONDS, SchemaGate, SchemaNotReady
from fmn_core import schema
from fmn_core.db import make_engine
from fmn_core.models import Notification, NotificationState

from . import conftest

USER_ERROR = f"Error: {SchemaNotReady()}"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TestOlderSchema(conftest.FmnCase):
    """A database that Alembic took to an older revision than this fmn's newest."""

    fmn_revision = "0010"
    fmn_toml = "[bot]\nlines_per_second = 200.0\n"

    def setUp(self) -> None:
        # The plugin's log (Limnoria's "supybot" logger), from the plugin's start on.
        self.logged = _Records()
        logging.getLogger("supybot").addHandler(self.logged)
        #: The schema gate's clock, moved on by hand.
        self.now = 1000.0
        gate = functools.partial(SchemaGate, clock=lambda: self.now)
        with mock.patch.object(fmn_bot.plugin, "SchemaGate", gate):
            super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        # The plugin copies the "supybot" handlers to fmn's own loggers.
        for name in ("supybot", "fmn_core", "fmn_bot"):
            logging.getLogger(name).removeHandler(self.logged)

    def _errors(self) -> list[str]:
        """fmn's errors (Limnoria logs its own about the test's empty registry)."""
        return [
            r.getMessage()
            for r in self.logged.records
            if r.levelno >= logging.ERROR and r.getMessage().startswith(("fmn", "internal error"))
        ]

    def test_commands_wait_for_the_upgrade_and_work_after_it_without_a_reload(self) -> None:
        plugin = self.plugin
        [told] = self._errors()
        assert told.startswith(
            f"fmn: the database sqlite:///{self.fmn_tmp / 'fmn.sqlite'} is at schema 0010, "
            f"older than this fmn's {schema.head_revision()}: run `fmn-daemon db upgrade`."
        ), told
        for command in ("fmn add-filter irc builds", "fmn filters", "fmn templates"):
            assert self.assertError(command).args[1] == USER_ERROR
        self.now += RECHECK_SECONDS
        assert self.assertError("fmn contexts").args[1] == USER_ERROR
        # Told once, and no command was taken for a bug (an internal error is logged).
        assert self._errors() == [told]
        self.assertNotError("fmn help add-filter")  # needs no database

        schema.upgrade(self.fmn_database_url)
        # The bot looks again only once RECHECK_SECONDS have passed since its last look.
        assert self.assertError("fmn filters").args[1] == USER_ERROR
        self.now += RECHECK_SECONDS
        self.assertRegexp("fmn add-filter irc builds", r"Added filter")
        self.assertRegexp("fmn filters", r"builds")
        assert self.irc.getCallback("Fmn") is plugin  # the same plugin: no reload
        # Once usable, the schema is never looked at again.
        self.now += RECHECK_SECONDS
        with mock.patch(
            "fmn_bot.schema_gate.usable_schema_problem", side_effect=AssertionError("looked")
        ):
            self.assertRegexp("fmn filters", r"builds")
        assert self._errors() == [told]

    def test_delivery_claims_nothing_until_the_upgrade(self) -> None:
        self.confirm_irc("alice", "alice_")
        ids = self.add_notifications("alice", ["rnv"])
        report, sent = self.deliver_round(online=["alice_"])
        assert sent == [] and report.idle
        with self.database.begin() as session:
            # Columns the older schema has (not the whole model).
            [row] = session.execute(
                select(
                    Notification.state,
                    Notification.claimed_by,
                    Notification.attempts,
                    Notification.last_error,
                ).where(Notification.id.in_(ids))
            ).all()
        assert tuple(row) == (NotificationState.PENDING.value, None, 0, None)

        schema.upgrade(self.fmn_database_url)
        self.now += RECHECK_SECONDS
        report, sent = self.deliver_round(online=["alice_"])
        assert [m.args[0] for m in sent] == ["alice_"] and report.sent == 1
        with self.database.begin() as session:
            states = session.scalars(select(Notification.state).where(Notification.id.in_(ids)))
            assert list(states) == [NotificationState.SENT.value]


def test_a_database_that_does_not_answer_holds_delivery_but_not_commands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    engine = make_engine("postgresql+psycopg://fmn:s3cret@127.0.0.1:1/fmn")
    now = 0.0
    gate = SchemaGate(engine, logging.getLogger("tests.bot.schema_gate"), clock=lambda: now)
    try:
        with caplog.at_level(logging.INFO, "tests.bot.schema_gate"):
            assert not gate.check()
            gate.require()  # the command reports the database itself
            assert not gate.ready()  # delivery waits
        [record] = [r for r in caplog.records if r.name == "tests.bot.schema_gate"]
        assert record.levelno == logging.WARNING
        assert "fmn: the database postgresql+psycopg://fmn:***@127.0.0.1:1/fmn does not answer" in (
            record.getMessage()
        )
        assert "s3cret" not in record.getMessage()
    finally:
        engine.dispose()


def test_a_schema_a_newer_fmn_made_is_not_called_one_to_upgrade(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/newer.sqlite"
    schema.upgrade(url)
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE {schema.VERSION_TABLE} SET version_num = 'f0f0'"))
        gate = SchemaGate(engine, logging.getLogger("tests.bot.schema_gate"), clock=lambda: 0.0)
        with caplog.at_level(logging.INFO, "tests.bot.schema_gate"):
            assert not gate.check()
            with pytest.raises(SchemaNotReady) as refused:
                gate.require()
            assert not gate.ready()  # delivery waits
        # The operator is told that a newer fmn made it, and how to go back; users are
        # told the operators must fix it, which an upgrade of this database would not.
        [record] = [r for r in caplog.records if r.name == "tests.bot.schema_gate"]
        said = record.getMessage()
        assert record.levelno == logging.ERROR
        assert "is at schema f0f0, which this fmn does not know" in said, said
        assert f"`fmn-daemon db downgrade {schema.head_revision()}`" in said, said
        assert "db upgrade" not in said, said
        assert "fix its schema" in str(refused.value)
        assert "upgrade" not in str(refused.value)
    finally:
        engine.dispose()
