"""App-wide behaviour: help, the command palette, and failures that never show a traceback."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text

from fmn_core import preferences
from fmn_tui.screens.contexts import ContextsScreen
from fmn_tui.screens.filters import FiltersScreen
from fmn_tui.screens.help import HelpScreen

from .conftest import Core, notices, settle, type_text


async def test_app_help_lists_the_keys_of_the_current_screen(profile, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f", "f1")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        keys = dict((description, key) for key, description in app.screen.keys)
        assert keys["Move up"] == "K" and keys["Delete"] == "x" and keys["Help"] == "F1"
        assert "ctrl+p" in dict(app.screen.keys)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, FiltersScreen)


async def test_app_command_palette_runs_fmn_actions(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await type_text(pilot, "on/off")
        await settle(pilot)
        await pilot.press("enter")  # "On/off (this screen)": the highlighted context
        await settle(pilot)
        assert profile(preferences.get_context, "email").enabled is False
        await pilot.press("ctrl+p")
        await type_text(pilot, "filters of irc")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, FiltersScreen) and app.screen.context == "irc"


async def test_app_internal_error_shows_a_reference_and_logs_it(
    profile, make_app, sqlite_db, caplog
):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        with sqlite_db.engine.begin() as connection:
            connection.execute(text("DROP TABLE rules"))
        # The in-process gateway hits the missing table and logs the traceback there.
        with caplog.at_level(logging.ERROR):
            await pilot.press("f")
            await settle(pilot)
        (ref,) = app.internal_errors
        assert any(f"internal error (reference {ref})" in notice for notice in notices(app))
        (record,) = [r for r in caplog.records if ref in r.getMessage() and r.exc_info]
        assert record.exc_info is not None  # the traceback goes to the log, not the screen
        assert app.is_running
        app.internal_errors.clear()


async def test_app_bug_in_the_ui_ends_the_session_with_a_reference(profile, make_app, monkeypatch):
    def broken(self) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ContextsScreen, "action_digest", broken)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        # Not pilot.press: it waits for the screen, and the screen whose handler
        # raised processes nothing more (which is why the app has to end).
        await app._press_keys(["g"])
        for _ in range(100):
            if app.internal_errors:
                break
            await asyncio.sleep(0.02)
        # What the terminal will show on exit: a reference; no traceback, no variables.
        shown = [str(message) for message in app._exit_renderables]
    (ref,) = app.internal_errors
    assert app.return_code == 1
    assert shown == [f"fmn-tui: internal error (reference {ref}); the fmn log has the details"]
    app.internal_errors.clear()
