"""Templates: clone one into a context, after confirming."""

from __future__ import annotations

from fmn_core import preferences
from fmn_tui.screens.confirm import ConfirmScreen
from fmn_tui.screens.contexts import ContextsScreen
from fmn_tui.screens.templates import TemplatesScreen

from .conftest import Core, settle, text_of


async def test_templates_clone_into_a_context(make_app, core: Core):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "t")  # irc
        await settle(pilot)
        assert isinstance(app.screen, TemplatesScreen)
        titles = [t.title for t in app.screen.templates]
        await pilot.press(*["down"] * titles.index("Quiet"))
        assert "errors that concern me" in text_of(app, "#about")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, ContextsScreen)
    with core.database.begin() as session:
        (quiet,) = [t for t in preferences.list_templates(session) if t.title == "Quiet"]
    copied = core.filters("irc")
    assert [(name, len(rules)) for name, _active, _position, rules in copied] == [
        (item["name"], len(item["rules"])) for item in quiet.filters
    ]
    assert "severity_at_least level=ERROR" in copied[-1][3]
    assert core.filters("email") == []
