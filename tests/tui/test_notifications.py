"""Recent notifications, each with the filter that sent it."""

from __future__ import annotations

from sqlalchemy import select

from fmn_core import preferences
from fmn_core.models import Filter, Notification, Preference, StoredMessage
from fmn_core.wording import explanation_lines
from fmn_tui.screens.explain import ExplainScreen
from fmn_tui.screens.notifications import NotificationsScreen

from .conftest import settle, table_rows


async def test_notifications_list_newest_first_with_their_filter(profile, make_app):
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, NotificationsScreen)
        rows = table_rows(app, "#notifications")
        assert [row[:4] for row in rows] == [
            ["2024-05-06 07:08", "email", "koji tags", "✓ sent"],
            ["2024-05-06 06:58", "email", "koji tags", "… pending"],
            ["2024-05-06 06:48", "email", "bodhi", "! failed"],
            ["2024-05-06 06:38", "irc", "koji tags", "✓ sent"],
        ]
        assert rows[2][4].startswith("lmacken submitted a buildroot override")


async def test_why_on_a_recent_notification_and_by_pasting_an_id(profile, make_app, sqlite_db):
    app = make_app()
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert isinstance(app.screen, ExplainScreen)
        shown = app.screen.query_one("#lines").render()
        explained = profile(preferences.explain, app.screen.message)
        lines = explanation_lines(explained)
        # The TUI shows the core's words, line for line (the bot joins the same lines).
        assert str(shown).splitlines() == lines
        assert any(line.startswith("email: notified by filter 'koji tags'") for line in lines)
        await pilot.press("escape")
        await settle(pilot)

        # Paste an id of a message nobody was notified about.
        with sqlite_db.begin() as session:
            notified = set(session.scalars(select(Notification.message_id)))
            other = next(m for m in session.scalars(select(StoredMessage.id)) if m not in notified)
        await pilot.press("i")
        await settle(pilot)
        for character in other:
            await pilot.press(character)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ExplainScreen)
        words = str(app.screen.query_one("#lines").render()).splitlines()
        assert words == explanation_lines(profile(preferences.explain, other))
        assert words[-1].startswith("Not set up (nothing is sent there): irc, ")
        assert any("filter '[pagure]': not checked, it is switched off." in w for w in words)


async def test_mute_the_application_of_a_recent_notification(profile, make_app, sqlite_db):
    # The seeded rows name their filter; production rows carry its id too.
    with sqlite_db.begin() as session:
        for row in session.scalars(select(Notification)):
            row.filter_id = session.scalars(
                select(Filter.id)
                .join(Preference)
                .where(Preference.context == "email", Filter.name == row.filter_name)
            ).one()
    app = make_app()
    async with app.run_test(size=(140, 50)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        first = app.screen.selected
        assert first is not None and first.filter_name == "koji tags"
        await pilot.press("a")
        await settle(pilot)
    rules = profile.filters("email")[0][3]
    assert rules[-1] == "not app_is app=koji"
