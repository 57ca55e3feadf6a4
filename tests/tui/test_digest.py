"""Digest settings: saved through core, refused values shown inline."""

from __future__ import annotations

from textual.widgets import Input

from fmn_core import preferences
from fmn_core.portability import export_preferences
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


async def test_digest_and_quiet_hours_keep_their_own_time_zones(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DigestScreen)
        screen.query_one("#at", Input).value = "08:00"
        screen.query_one("#digest-timezone", Input).value = "America/New_York"
        screen.query_one("#quiet-from", Input).value = "22:00"
        screen.query_one("#quiet-to", Input).value = "07:00"
        # A bad name is refused naming its field; nothing is saved.
        screen.query_one("#quiet-timezone", Input).value = "Mars/Olympus"
        await pilot.press("ctrl+s")
        await settle(pilot)
        error = text_of(app, "#digest-error")
        assert error.startswith("✗ Quiet hours time zone must be an IANA time zone"), error
        assert "'Mars/Olympus'" in error
        assert app.focused is screen.query_one("#quiet-timezone", Input)
        assert profile(preferences.get_context, "email").digest_at is None
        screen.query_one("#digest-timezone", Input).value = "Moon/Base"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert text_of(app, "#digest-error").startswith("✗ Daily digest time zone must be")
        screen.query_one("#digest-timezone", Input).value = "America/New_York"
        screen.query_one("#quiet-timezone", Input).value = "Asia/Tokyo"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert text_of(app, "#digest-error") == ""
        heading = text_of(app, "#heading")
        assert "daily at 08:00 America/New_York" in heading
        assert "quiet hours: 22:00-07:00 Asia/Tokyo" in heading
        # Read back from the database, each field shows its own zone.
        assert screen.query_one("#digest-timezone", Input).value == "America/New_York"
        assert screen.query_one("#quiet-timezone", Input).value == "Asia/Tokyo"
        assert not screen.unsaved
    view = profile(preferences.get_context, "email")
    assert (view.digest_at, view.digest_timezone) == ("08:00", "America/New_York")
    assert (view.quiet_from, view.quiet_to, view.quiet_timezone) == ("22:00", "07:00", "Asia/Tokyo")
    with profile.database.begin() as session:
        exported = export_preferences(session)
    (alice,) = [u for u in exported["users"] if u["name"] == "alice"]
    email = alice["contexts"]["email"]
    assert email["digest"]["timezone"] == "America/New_York"
    assert email["quiet_hours"] == {"from": "22:00", "to": "07:00", "timezone": "Asia/Tokyo"}
