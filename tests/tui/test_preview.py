"""Preview: what a filter matches among the stored messages, before anything is saved."""

from __future__ import annotations

from fmn_core import preferences
from fmn_tui.screens.preview import PreviewScreen
from fmn_tui.screens.rules import RulesScreen

from .conftest import Core, fill, settle, store_messages, table_rows, text_of, type_text


async def add_rule(pilot, search: str, *values: str) -> None:
    await pilot.press("a")
    await settle(pilot)
    await fill(pilot, search)
    await pilot.press("enter")
    await settle(pilot)
    for value in values:
        await fill(pilot, value)
        await pilot.press("tab")
    await pilot.press("ctrl+s")
    await settle(pilot)


async def test_preview_of_a_new_filter_before_it_is_saved(make_app, core: Core, sqlite_db):
    store_messages(sqlite_db)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f", "a")
        await settle(pilot)
        await type_text(pilot, "koji")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, RulesScreen)
        await add_rule(pilot, "app_is", "koji")
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, PreviewScreen)
        assert len(table_rows(app, "#hits")) == 4
        assert [hit.topic.rsplit(".", 1)[1] for hit in app.screen.hits] == [
            "tag",
            "tag",
            "sign",
            "untag",
        ]
        assert "(with your unsaved changes)" in text_of(app, "#heading")
        await pilot.press("escape")
        await settle(pilot)
        await add_rule(pilot, "topic_matches", "*.buildsys.tag")
        await pilot.press("p")
        await settle(pilot)
        rows = table_rows(app, "#hits")
        assert [row[0] for row in rows] == ["2024-05-06 07:06", "2024-05-06 07:05"]
        assert rows[0][1].startswith("colord-1.3.4-1.fc26 was tag")
        # Previewing stored nothing.
        assert core.filters("email") == []
        await pilot.press("escape", "ctrl+s")
        await settle(pilot)
        assert "Saved" in text_of(app, "#state")
    assert core.filters("email") == [
        ("koji", True, 1, ["app_is app=koji", "topic_matches pattern=*.buildsys.tag"])
    ]
    hits = core(preferences.preview, "email", "koji")
    assert len(hits) == 2


async def test_preview_of_saved_filters_from_the_list(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f", "down", "p")  # bodhi, not triggered by me
        await settle(pilot)
        assert len(table_rows(app, "#hits")) == 2
        assert "with your unsaved changes" not in text_of(app, "#heading")
        await pilot.press("escape", "down", "p")  # pagure
        await settle(pilot)
        rows = table_rows(app, "#hits")
        assert len(rows) == 1 and rows[0][1].startswith("mmassari commented on the")
