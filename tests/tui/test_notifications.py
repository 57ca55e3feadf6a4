"""Recent notifications, each with the filter that sent it."""

from __future__ import annotations

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
