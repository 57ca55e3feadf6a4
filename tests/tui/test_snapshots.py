"""SVG snapshots of the main screens at 80x24 and 120x40 (and in monochrome).

The data is fixed (see conftest), so the pictures only change when the UI does.
Regenerate with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look
at the SVGs in ``__snapshots__/`` before committing them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from fmn_core import preferences
from fmn_core.rules import Catalog, default_catalog

from .conftest import settle

SMALL = (80, 24)
LARGE = (120, 40)


def keys(*presses: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Press keys one group at a time, letting the workers finish in between."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for group in presses:
            await pilot.press(*group.split())
            await settle(pilot)
        # A blinking cursor would make the picture depend on timing.
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        # A DataTable sizes its columns when it is next idle; wait for that.
        for _ in range(100):
            tables = pilot.app.screen.query(DataTable)
            if not any(table._require_update_dimensions for table in tables):
                break
            await pilot.pause(0.02)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x40"])
def test_snapshot_contexts(profile, make_app, snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=keys())


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x40"])
def test_snapshot_filters(profile, make_app, snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=keys("f"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x40"])
def test_snapshot_rules_with_unsaved_change(profile, make_app, snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=keys("f", "e", "down n"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x40"])
def test_snapshot_preview(profile, make_app, snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=keys("f", "e", "p"))


def test_snapshot_rule_picker_search(profile, make_app, snap_compare):
    # A fixed catalog: rules added to fmn later must not change this picture.
    names = [
        "app_is",
        "topic_matches",
        "package_involved",
        "package_owned_by_me",
        "package_owned_by",
        "package_owned_by_group",
        "user_involved",
    ]
    catalog = Catalog(default_catalog().get(name) for name in names)
    assert snap_compare(
        make_app(catalog=catalog), terminal_size=SMALL, run_before=keys("f", "e", "a", "o w n e d")
    )


def test_snapshot_rule_form_refuses_a_bad_value(profile, make_app, snap_compare):
    assert snap_compare(
        make_app(),
        terminal_size=SMALL,
        run_before=keys("f", "e", "a", "f o l l o w", "enter", "a space b"),
    )


def test_snapshot_destinations(profile, make_app, snap_compare):
    assert snap_compare(make_app(), terminal_size=SMALL, run_before=keys("d"))


def test_snapshot_notifications(profile, make_app, snap_compare):
    assert snap_compare(make_app(), terminal_size=LARGE, run_before=keys("n"))


def test_snapshot_contexts_monochrome(profile, make_app, snap_compare, monkeypatch):
    # Textual honours NO_COLOR: every state must still read right (✓/✗/… marks, words).
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app()
    assert app.no_color
    assert snap_compare(app, terminal_size=SMALL, run_before=keys())


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "120x40"])
def test_snapshot_digest_and_quiet_hours(profile, make_app, snap_compare, size):
    profile(preferences.set_digest, "email", 60, 10, at="18:00", timezone="Europe/Prague")
    # Each has its own zone (a digest at home's evening, quiet hours where one sleeps).
    profile(preferences.set_quiet_hours, "email", "22:00", "07:00", "Asia/Tokyo")
    profile(preferences.set_filter_delivery, "email", "bodhi", "digest")
    profile(preferences.set_filter_urgent, "email", "koji tags", True)
    assert snap_compare(make_app(), terminal_size=size, run_before=keys("g"))


def test_snapshot_filters_with_delivery_modes(profile, make_app, snap_compare):
    profile(preferences.set_filter_delivery, "email", "bodhi", "digest")
    profile(preferences.set_filter_urgent, "email", "koji tags", True)
    assert snap_compare(make_app(), terminal_size=SMALL, run_before=keys("f"))


def test_snapshot_digest_refused_as_busy(profile, make_app, snap_compare):
    # Another change holds the database past the gateway's bound: the reason shows in
    # sight at 80x24, with the value typed still in its field.
    database = profile.database

    async def run_before(pilot: Pilot[Any]) -> None:
        await keys("g")(pilot)
        pilot.app.screen.query_one("#count", Input).value = "3"
        holder = sqlite3.connect(str(database.engine.url.database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            await pilot.press("ctrl+s")
            await settle(pilot)
        finally:
            holder.rollback()
            holder.close()
        # The "still saving" note comes and goes with timing; the picture is the outcome.
        pilot.app.clear_notifications()
        await keys()(pilot)

    assert snap_compare(make_app(), terminal_size=SMALL, run_before=run_before)
