"""Digest settings: saved through core, refused values shown inline."""

from __future__ import annotations

from textual.widgets import Input

from fmn_core import preferences
from fmn_tui.screens.digest import DigestScreen

from .conftest import Core, settle, text_of


async def test_digest_save_refuse_and_turn_off(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert isinstance(app.screen, DigestScreen)
        minutes = app.screen.query_one("#minutes", Input)
        count = app.screen.query_one("#count", Input)
        assert (minutes.value, count.value) == ("60", "10")
        await pilot.press("ctrl+a", "ctrl+k", "3", "0", "tab", "ctrl+a", "ctrl+k", "5", "ctrl+s")
        await settle(pilot)
        assert "every 30 minutes or after 5 notifications" in text_of(app, "#heading")
        context = profile(preferences.get_context, "email")
        assert (context.digest_minutes, context.digest_count) == (30, 5)
        # Core decides the range; its sentence shows under the fields, nothing changes.
        count.value = "999999"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert text_of(app, "#digest-error").startswith("✗ ")
        assert profile(preferences.get_context, "email").digest_count == 5
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert text_of(app, "#digest-error") == ""
    context = profile(preferences.get_context, "email")
    assert (context.digest_minutes, context.digest_count) == (0, 0)
