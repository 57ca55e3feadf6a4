"""Issue 13 in the TUI: delivery modes, daily digests, quiet hours, waiting reasons,
footers that fit 80 columns, and no unsaved value dropped silently."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update
from textual.widgets import Input
from textual.widgets._footer import FooterKey

from fmn_core import preferences
from fmn_core.models import Notification
from fmn_tui.screens.confirm import ConfirmScreen
from fmn_tui.screens.contexts import ContextsScreen
from fmn_tui.screens.digest import DigestScreen
from fmn_tui.screens.filters import FiltersScreen
from fmn_tui.screens.help import HelpScreen
from fmn_tui.screens.notifications import NotificationsScreen

from .conftest import Core, settle, text_of


async def test_a_fraction_in_a_digest_field_is_refused_not_read_as_digits(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        assert isinstance(app.screen, DigestScreen)
        minutes = app.screen.query_one("#minutes", Input)
        minutes.focus()
        await pilot.press("ctrl+a", "ctrl+k", "1", ".", "5")
        assert minutes.value == "1.5"  # typed as typed, not "15"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "'1.5' is not a whole number of minutes" in text_of(app, "#digest-error")
    assert profile(preferences.get_context, "email").digest_minutes == 60


async def test_daily_digest_and_quiet_hours_are_saved_and_checked(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#at", Input).value = "18:00"
        screen.query_one("#digest-timezone", Input).value = "Mars/Base"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "IANA time zone" in text_of(app, "#digest-error")
        screen.query_one("#digest-timezone", Input).value = "Europe/Prague"
        screen.query_one("#quiet-timezone", Input).value = "Europe/Prague"
        screen.query_one("#quiet-from", Input).value = "22:00"
        screen.query_one("#quiet-to", Input).value = "07:00"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert text_of(app, "#digest-error") == ""
        heading = text_of(app, "#heading")
        assert "daily at 18:00 Europe/Prague" in heading
        assert "quiet hours: 22:00-07:00 Europe/Prague" in heading
    view = profile(preferences.get_context, "email")
    assert (view.digest_minutes, view.digest_at, view.digest_timezone) == (
        60,
        "18:00",
        "Europe/Prague",
    )
    assert (view.quiet_from, view.quiet_to, view.quiet_timezone) == (
        "22:00",
        "07:00",
        "Europe/Prague",
    )


async def test_esc_asks_before_dropping_unsaved_digest_values(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        app.screen.query_one("#count", Input).value = "3"
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, DigestScreen)
        assert app.screen.query_one("#count", Input).value == "3"
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, ContextsScreen)
        # Nothing typed: Esc leaves at once.
        await pilot.press("g")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ContextsScreen)
    assert profile(preferences.get_context, "email").digest_count == 10


async def test_filters_say_how_they_travel(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        assert isinstance(app.screen, FiltersScreen)
        await pilot.press("m")
        await settle(pilot)
        await pilot.press("u")
        await settle(pilot)
    first = profile(preferences.list_filters, "email")[0]
    assert (first.name, first.delivery, first.urgent) == ("koji tags", "digest", True)


async def test_recent_notifications_say_why_one_waits(profile: Core, make_app):
    until = dt.datetime(2031, 1, 2, 6, 0, tzinfo=dt.UTC)
    with profile.database.begin() as session:
        session.execute(
            update(Notification)
            .where(Notification.state == "pending")
            .values(hold_reason="quiet_hours", next_attempt_at=until)
        )
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, NotificationsScreen)
        await pilot.press("down")
        await settle(pilot)
        assert text_of(app, "#why") == (
            "… pending: held for your quiet hours until 2031-01-02 06:00 UTC"
        )


@pytest.mark.parametrize("key", ["", "f", "g", "n", "d", "f e"])
async def test_footers_fit_80_columns_and_f1_lists_every_key(profile: Core, make_app, key):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for group in key.split():
            await pilot.press(group)
            await settle(pilot)
        screen = app.screen
        keys = list(screen.query(FooterKey))
        assert keys
        # The command palette's key sits at the right end: nothing may run under it.
        right = min((k.region.x for k in keys if k.description == "palette"), default=80)
        for footer_key in keys:
            if footer_key.description != "palette":
                assert footer_key.region.right <= right, (
                    type(screen).__name__,
                    footer_key.description,
                )
        assert "Help" in {k.description for k in keys}
        hidden = [
            b.binding.description
            for b in screen.active_bindings.values()
            if not b.binding.show and b.binding.description and not b.binding.system
        ]
        await pilot.press("f1")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        listed = {description for _, description in app.screen.keys}
        assert set(hidden) <= listed


async def test_ctrl_q_asks_before_dropping_unsaved_values(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        app.screen.query_one("#count", Input).value = "3"
        await pilot.press("ctrl+q")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, DigestScreen)
        assert app.is_running
        await pilot.press("ctrl+q")
        await settle(pilot)
        await pilot.press("y")
        await pilot.pause()
    assert app.return_code == 0 or app.return_code is None


async def test_the_feed_url_is_shown_and_copyable_where_the_token_is(profile: Core, make_app):
    pending = profile(preferences.set_destination, "rss", "")
    token = pending.destination.address
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_destinations("rss")
        await settle(pilot)
        url = app.screen.query_one("#feed-url", Input).value
        assert url == f"http://localhost:8080/feeds/{token}.rss"
        app.screen.query_one("#destinations").focus()
        await pilot.press("y")
        await settle(pilot)
        assert app.clipboard == url
        app.screen.dismiss(None)
        await settle(pilot)
        app.open_destinations("irc")
        await settle(pilot)
        assert "The fmn bot sends the code to your nick" in text_of(app, "#irc-note")
