"""A database another change holds locked: the key press is answered at once, the
wait is bounded, the user is told what is wrong, and what they typed is kept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import database_locked  # tests/conftest.py (tests/ is on sys.path)
from textual.widgets import Input

from fmn_core import preferences
from fmn_core.config import GatewayConfig
from fmn_core.db import Database
from fmn_tui.screens.digest import DigestScreen
from fmn_tui.screens.rules import RulesScreen

from .conftest import Core, make_database, notices, settle, text_of

#: The gateway's wait for the lock in these tests (the default is 3 s).
BOUND = 1.0


def busy_database(tmp_path: Path) -> Database:
    folder = tmp_path / "busy"
    folder.mkdir()
    return make_database(folder, gateway=GatewayConfig(busy_timeout_seconds=BOUND))


async def wait_for(condition, seconds: float) -> float:
    """Poll the UI until ``condition()``; the seconds it took (fails past ``seconds``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "the UI never showed it"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_busy_database_save_is_acknowledged_bounded_and_retried(tmp_path, make_app):
    database = busy_database(tmp_path)
    core = Core(database)
    core(preferences.set_digest, "email", 45, 0)
    app = make_app(database)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            with database_locked(database):
                # Reading needs no write lock: the screen shows what is stored at once.
                await pilot.press("g")
                assert isinstance(app.screen, DigestScreen)
                minutes = app.screen.query_one("#minutes", Input)
                assert await wait_for(lambda: minutes.value == "45", 1.0) < 1.0
                minutes.value = "30"
                pressed = time.monotonic()
                await pilot.press("ctrl+s")
                # Acknowledged at once, while the lock is still held.
                assert await wait_for(lambda: "saving…" in app.sub_title, 1.0) < 1.0
                await wait_for(lambda: any("Saving…" in n for n in notices(app)), 1.0)
                # Pressed again while waiting: still one note, not one per key.
                await pilot.press("ctrl+s")
                await asyncio.sleep(0.7)
                assert sum("Saving…" in n for n in notices(app)) == 1
                # The UI keeps answering keys meanwhile.
                await pilot.press("tab")
                assert app.focused is app.screen.query_one("#count", Input)
                # After the bound (not 30 s): the reason, in words, under the fields.
                await wait_for(lambda: "busy" in text_of(app, "#digest-error"), BOUND + 3)
                waited = time.monotonic() - pressed
                assert BOUND * 0.8 <= waited < BOUND + 3, waited
                message = text_of(app, "#digest-error")
                assert "preferences database is busy" in message
                assert "nothing was saved" in message and "try again" in message
                # The second save waited its turn and its own bound, then the header
                # stops saying "saving…".
                await wait_for(lambda: "saving…" not in app.sub_title, BOUND + 3)
                # What was typed is still there to save again.
                assert app.screen.query_one("#minutes", Input).value == "30"
            await pilot.press("ctrl+s")
            await settle(pilot)
            assert text_of(app, "#digest-error") == ""
    finally:
        database.dispose()
    assert core(preferences.get_context, "email").digest_minutes == 30


async def test_busy_database_keeps_the_rule_draft(tmp_path, make_app):
    database = busy_database(tmp_path)
    core = Core(database)
    core(preferences.add_filter, "email", "koji")
    core(preferences.add_rule, "email", "koji", "app_is", {"app": "koji"})
    app = make_app(database)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("f")
            await settle(pilot)
            await pilot.press("e")
            await settle(pilot)
            assert isinstance(app.screen, RulesScreen)
            await pilot.press("n")  # negate rule 1: an unsaved change
            await settle(pilot)
            with database_locked(database):
                await pilot.press("ctrl+s")
                assert await wait_for(lambda: "saving…" in app.sub_title, 1.0) < 1.0
                await wait_for(
                    lambda: any("preferences database is busy" in n for n in notices(app)),
                    BOUND + 3,
                )
                assert app.screen.draft.dirty
            await pilot.press("ctrl+s")
            await settle(pilot)
            assert not app.screen.draft.dirty
    finally:
        database.dispose()
    assert [r.text for r in core(preferences.get_filter, "email", "koji").rules] == [
        "not app_is app=koji"
    ]
