"""Destinations: set an address (checked by core), confirm it with the code, resend, remove."""

from __future__ import annotations

from fmn_core import preferences
from fmn_core.config import ConfirmationConfig
from fmn_tui.screens.confirm import ConfirmScreen
from fmn_tui.screens.destinations import DestinationsScreen

from .conftest import Core, make_database, notices, settle, table_rows, text_of, type_text


def sent_codes(database) -> list[str]:
    """The codes waiting for the daemon to send them (what the user would receive)."""
    with database.begin() as session:
        return [code.code for code in preferences.pending_confirmation_codes(session)]


async def open_destination(pilot) -> DestinationsScreen:
    await settle(pilot)
    await pilot.press("d")
    await settle(pilot)
    assert isinstance(pilot.app.screen, DestinationsScreen)
    return pilot.app.screen


async def enter(pilot, selector: str, value: str) -> None:
    """Put a value in an input and press Enter in it."""
    field = pilot.app.screen.query_one(selector)
    field.focus()
    field.value = value
    await pilot.press("enter")
    await settle(pilot)


async def test_destinations_set_an_address_and_confirm_it(make_app, core: Core, sqlite_db):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_destination(pilot)
        await pilot.press("s")
        await type_text(pilot, "alice@")
        # Checked as it is typed, by core's check_email; nothing is stored.
        assert text_of(app, "#address-error").startswith("✗ ")
        await pilot.press("enter")
        await settle(pilot)
        assert core(preferences.get_context, "email").destinations == ()
        await enter(pilot, "#address", "alice@example.org")
        assert table_rows(app, "#destinations")[0][:2] == ["alice@example.org", "… pending"]
        assert any("a***e@example.org" in notice for notice in notices(app))
        assert app.screen.focused.id == "code"
        (code,) = sent_codes(sqlite_db)
        await enter(pilot, "#code", "WRONG-CODE")
        assert "wrong" in text_of(app, "#code-error")
        await enter(pilot, "#code", code.lower())
        assert text_of(app, "#code-error") == ""
        assert table_rows(app, "#destinations")[0][:2] == ["alice@example.org", "✓ confirmed"]
    (destination,) = core(preferences.get_context, "email").destinations
    assert (destination.address, destination.confirmed) == ("alice@example.org", True)


async def test_destinations_wrong_codes_are_counted_until_locked(make_app, tmp_path):
    (tmp_path / "locking").mkdir()
    database = make_database(tmp_path / "locking", confirmation=ConfirmationConfig(max_failures=2))
    core = Core(database)
    core(preferences.set_destination, "email", "alice@example.org")
    (code,) = sent_codes(database)
    app = make_app(database)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_destination(pilot)
        await enter(pilot, "#code", "AAAA-AAAA")
        assert "wrong" in text_of(app, "#code-error")
        await enter(pilot, "#code", "BBBB-BBBB")
        assert "Too many wrong codes" in text_of(app, "#code-error")
        # Locked: the wrong guesses were committed, so even the right code waits.
        await enter(pilot, "#code", code)
        assert "Too many wrong codes" in text_of(app, "#code-error")
    assert core(preferences.get_context, "email").destinations[0].confirmed is False
    database.dispose()


async def test_destinations_resend_is_rate_limited_and_remove_asks(make_app, core: Core):
    core(preferences.set_destination, "email", "alice@example.org")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_destination(pilot)
        await pilot.press("r")
        await settle(pilot)
        # Core's own sentence, as a notification: not a traceback, not an internal error.
        assert any("wait" in notice and "seconds" in notice for notice in notices(app))
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert table_rows(app, "#destinations") == []
        assert "none yet" in text_of(app, "#heading")
    assert core(preferences.get_context, "email").destinations == ()
