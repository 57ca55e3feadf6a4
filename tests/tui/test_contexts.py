"""The home screen: contexts, their state, and the way to every other screen."""

from __future__ import annotations

from fmn_core import preferences
from fmn_tui.screens.contexts import ContextsScreen

from .conftest import Core, settle, table_rows, text_of


async def test_contexts_shows_every_offered_context_with_its_state(profile, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, ContextsScreen)
        rows = {row[0]: row for row in table_rows(app, "#contexts")}
        assert list(rows) == ["email", "irc", "matrix", "push", "android", "desktop", "live", "rss"]
        assert rows["email"] == [
            "email",
            "✓ on",
            "a***e@example.org",
            "✓ confirmed",
            "60m or 10",
            "3",
            "3",
        ]
        assert rows["irc"][1:4] == ["✗ off", "a***", "… pending"]
        assert rows["push"][1:5] == ["✓ on", "—", "— none", "off"]
        assert rows["irc"][6] == "1"
        detail = text_of(app, "#detail")
        assert "✓ koji tags" in detail and "✗ [pagure]" in detail


async def test_contexts_space_disables_and_enables(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("space")
        await settle(pilot)
        assert profile(preferences.get_context, "email").enabled is False
        assert table_rows(app, "#contexts")[0][1] == "✗ off"
        await pilot.press("down", "space")
        await settle(pilot)
        assert profile(preferences.get_context, "irc").enabled is True
        assert profile(preferences.get_context, "email").enabled is False


async def test_contexts_new_account_starts_empty(make_app, core: Core):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        rows = table_rows(app, "#contexts")
        assert all(row[1] == "✓ on" and row[5] == "0" for row in rows)
        assert "No filters yet" in text_of(app, "#detail")
    # Looking changed nothing: no account was created by it.
    assert core(preferences.recent_notifications) == []


async def test_contexts_admin_edits_another_account(profile: Core, make_app, sqlite_db):
    bob = Core(sqlite_db, "bob")
    bob(preferences.add_filter, "irc", "bob's")
    app = make_app(name="root", admin=True, user="bob")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.sub_title == "bob (as admin)"
        assert table_rows(app, "#contexts")[1][5] == "1"
        await pilot.press("down", "space")
        await settle(pilot)
    assert bob(preferences.get_context, "irc").enabled is False
    assert profile(preferences.get_context, "irc").enabled is False  # alice's was already off
    assert profile(preferences.get_context, "email").enabled is True
