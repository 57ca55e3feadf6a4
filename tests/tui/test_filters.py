"""A context's filters: add, rename, reorder, activate, delete — checked in the database."""

from __future__ import annotations

import pytest

from fmn_core import preferences
from fmn_core.db import Database
from fmn_tui.screens.confirm import ConfirmScreen
from fmn_tui.screens.filters import FiltersScreen
from fmn_tui.screens.prompt import PromptScreen
from fmn_tui.screens.rules import RulesScreen

from .conftest import Core, notices, seed_profile, settle, table_rows, type_text


async def open_filters(pilot, context_row: int = 0, key: str = "f") -> None:
    await settle(pilot)
    await pilot.press(*(["down"] * context_row), key)
    await settle(pilot)
    assert isinstance(pilot.app.screen, FiltersScreen)


async def test_filters_lists_rules_in_order(profile, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_filters(pilot, key="enter")
        rows = table_rows(app, "#filters")
        assert [row[:4] for row in rows] == [
            ["1", "✓ on", "koji tags", ""],
            ["2", "✓ on", "bodhi", ""],
            ["3", "✗ off", "[pagure]", ""],
        ]
        assert rows[1][4] == "app_is app=bodhi and not triggered_by_me"


@pytest.mark.parametrize(
    "db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_filters_reorder_toggle_and_oneshot(db: Database, make_app):
    core = Core(db)
    seed_profile(db, core)
    app = make_app(db)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_filters(pilot)
        await pilot.press("J")  # koji tags: 1 -> 2
        await settle(pilot)
        assert [f[0] for f in core.filters("email")] == ["bodhi", "koji tags", "[pagure]"]
        # The cursor follows the moved filter, so moving again moves it again.
        await pilot.press("J")
        await settle(pilot)
        assert [f[0] for f in core.filters("email")] == ["bodhi", "[pagure]", "koji tags"]
        await pilot.press("J")  # already last: nothing happens
        await settle(pilot)
        await pilot.press("K", "K")
        await settle(pilot)
        assert [(f[0], f[2]) for f in core.filters("email")] == [
            ("koji tags", 1),
            ("bodhi", 2),
            ("[pagure]", 3),
        ]
        await pilot.press("down", "down", "space")  # [pagure]: off -> on
        await settle(pilot)
        await pilot.press("o")
        await settle(pilot)
        assert table_rows(app, "#filters")[2][:4] == ["3", "✓ on", "[pagure]", "once"]
    pagure = core(preferences.get_filter, "email", "[pagure]")
    assert (pagure.active, pagure.oneshot) == (True, True)


async def test_filters_rename_keeps_rules_and_refuses_a_taken_name(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_filters(pilot)
        await pilot.press("down", "r")
        await settle(pilot)
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "[pagure]")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, FiltersScreen)
        assert any("already" in notice and "[pagure]" in notice for notice in notices(app))
        assert [f[0] for f in profile.filters("email")] == ["koji tags", "bodhi", "[pagure]"]
        await pilot.press("r", "ctrl+a", "ctrl+k")
        await type_text(pilot, "updates")
        await pilot.press("enter")
        await settle(pilot)
        assert table_rows(app, "#filters")[1][2] == "updates"
    assert [f[0] for f in profile.filters("email")] == ["koji tags", "updates", "[pagure]"]
    assert profile(preferences.get_filter, "email", "updates").rules[0].text == "app_is app=bodhi"


async def test_filters_delete_asks_first(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_filters(pilot)
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert [f[0] for f in profile.filters("email")] == ["koji tags", "bodhi", "[pagure]"]
        await pilot.press("x")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert [row[2] for row in table_rows(app, "#filters")] == ["bodhi", "[pagure]"]
    assert [(f[0], f[2]) for f in profile.filters("email")] == [("bodhi", 1), ("[pagure]", 2)]


async def test_filters_add_checks_the_name_before_opening_the_editor(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_filters(pilot)
        await pilot.press("a")
        await settle(pilot)
        # The name is checked as it is typed, by core's own check.
        await pilot.press("space", "enter")
        await settle(pilot)
        assert isinstance(app.screen, PromptScreen)
        assert "must not be empty" in str(app.screen.query_one("#error").render())
        await pilot.press("backspace")
        await type_text(pilot, "bodhi")
        await pilot.press("enter")
        await settle(pilot)
        # Taken: core refuses, and the editor doesn't open.
        assert isinstance(app.screen, FiltersScreen)
        assert any("bodhi" in notice for notice in notices(app))
        await pilot.press("a")
        await type_text(pilot, "my new one")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, RulesScreen)
        assert app.screen.draft.is_new
    # Nothing was stored: the new filter is only a draft until it is saved.
    assert [f[0] for f in profile.filters("email")] == ["koji tags", "bodhi", "[pagure]"]
