"""A filter's rules: the catalog picker, the parameter form, negate, remove, undo, save."""

from __future__ import annotations

from fmn_core import preferences
from fmn_tui.screens.add_rule import RuleFormScreen, RulePickerScreen
from fmn_tui.screens.confirm import ConfirmScreen
from fmn_tui.screens.filters import FiltersScreen
from fmn_tui.screens.rules import RulesScreen
from fmn_tui.widgets.rule_catalog import RuleCatalog

from .conftest import Core, notices, settle, table_rows, text_of, type_text


async def open_rules(pilot, filter_row: int = 0) -> RulesScreen:
    await settle(pilot)
    await pilot.press("f")
    await settle(pilot)
    await pilot.press(*(["down"] * filter_row), "e")
    await settle(pilot)
    assert isinstance(pilot.app.screen, RulesScreen)
    return pilot.app.screen


async def test_rules_catalog_search_and_validated_form(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        rules = await open_rules(pilot)
        await pilot.press("a")
        await settle(pilot)
        assert isinstance(app.screen, RulePickerScreen)
        picker = app.screen.query_one("#catalog", RuleCatalog)
        everything = len(picker.specs)
        await type_text(pilot, "owned group")
        await settle(pilot)
        names = [spec.name for spec in picker.specs]
        assert "package_owned_by_group" in names and "app_is" not in names
        await pilot.press(*["down"] * names.index("package_owned_by_group"))
        assert "python-sig" in text_of(app, "#rule-help")  # the highlighted rule's help
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "package")
        await settle(pilot)
        names = [spec.name for spec in picker.specs]
        assert 1 < len(names) < everything
        await pilot.press(*["down"] * names.index("package_involved"), "enter")
        await settle(pilot)
        assert isinstance(app.screen, RuleFormScreen)
        # Validated as it is typed, by Parameter.validate: no spaces in a name.
        await type_text(pilot, "python 3")
        await settle(pilot)
        assert "not a valid name" in text_of(app, "#error-package")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, RuleFormScreen)  # refused: still on the form
        await pilot.press("ctrl+a", "ctrl+k")
        await type_text(pilot, "python3")
        await settle(pilot)
        assert text_of(app, "#error-package") == ""
        await pilot.press("tab", "space")  # the "negate" box
        await pilot.press("ctrl+s")
        await settle(pilot)
        # mypy keeps the isinstance narrowing of app.screen across the awaits above.
        assert app.screen is rules  # type: ignore[comparison-overlap]
        assert [row[1] for row in table_rows(app, "#rules")] == [
            "app_is app=koji",
            "topic_matches pattern=*.buildsys.tag",
            "not package_involved package=python3",
        ]
        assert "1 unsaved change" in text_of(app, "#state")
        # Not stored until saved.
        assert len(profile(preferences.get_filter, "email", "koji tags").rules) == 2
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert text_of(app, "#state").startswith("✓ Saved")
    rules_now = profile(preferences.get_filter, "email", "koji tags").rules
    assert [(r.name, dict(r.arguments), r.negated) for r in rules_now][2] == (
        "package_involved",
        {"package": "python3"},
        True,
    )


async def test_rules_negate_remove_undo_then_save(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_rules(pilot, filter_row=1)  # bodhi: app_is bodhi, not triggered_by_me
        await pilot.press("down", "n")  # un-negate triggered_by_me
        await settle(pilot)
        assert table_rows(app, "#rules")[1][1] == "triggered_by_me"
        await pilot.press("up", "x")  # remove app_is
        await settle(pilot)
        assert [row[1] for row in table_rows(app, "#rules")] == ["triggered_by_me"]
        await pilot.press("ctrl+z")
        await settle(pilot)
        assert [row[1] for row in table_rows(app, "#rules")] == [
            "app_is app=bodhi",
            "triggered_by_me",
        ]
        assert "1 unsaved change" in text_of(app, "#state")
        await pilot.press("ctrl+s")
        await settle(pilot)
    bodhi = profile(preferences.get_filter, "email", "bodhi")
    assert [r.text for r in bodhi.rules] == ["app_is app=bodhi", "triggered_by_me"]


async def test_rules_escape_with_unsaved_changes_asks(profile: Core, make_app):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await open_rules(pilot)
        await pilot.press("x")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")  # "no": keep editing
        await settle(pilot)
        assert isinstance(app.screen, RulesScreen)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, FiltersScreen)
        assert "Nothing to save." not in notices(app)
    assert len(profile(preferences.get_filter, "email", "koji tags").rules) == 2
