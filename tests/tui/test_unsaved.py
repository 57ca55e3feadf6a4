"""Esc and ctrl+q never drop what the user typed: the same one mechanism
(``HoldsEdits``) on every screen with a text field, and letters typed after a "no"
go into the field, never to the screen's shortcuts."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input

from fmn_core import preferences
from fmn_tui import screens
from fmn_tui.screens._base import HoldsEdits
from fmn_tui.screens.add_rule import RuleFormScreen, RulePickerScreen
from fmn_tui.screens.confirm import ConfirmScreen
from fmn_tui.screens.destinations import DestinationsScreen
from fmn_tui.screens.digest import DigestScreen
from fmn_tui.screens.prompt import PromptScreen

from .conftest import Core, notices, settle

#: Letters that are shortcuts on these screens or the ones under them (x removes a
#: destination or deletes a filter, s/c/r set, code and resend, d/g/n open screens).
SHORTCUTS = "xsrcdgn"

#: Screen name: the keys that open it with its field focused, the field, the screen.
CASES: dict[str, tuple[list[str], str, type[Screen[Any]]]] = {
    "digest time zone": (["g"], "#digest-timezone", DigestScreen),
    "quiet hours time zone": (["g"], "#quiet-timezone", DigestScreen),
    "destination address": (["d", "s"], "#address", DestinationsScreen),
    "destination code": (["d", "c"], "#code", DestinationsScreen),
    "filter name (filters, a)": (["f", "a"], "#answer", PromptScreen),
    "filter rename (filters, r)": (["f", "r"], "#answer", PromptScreen),
    "message id (recent, i: explain)": (["n", "i"], "#answer", PromptScreen),
    "rule parameter (rules, a)": (
        ["f", "e", "a", "t", "o", "p", "i", "c", "enter"],
        "#param-pattern",
        RuleFormScreen,
    ),
}


async def open_case(pilot: Pilot[Any], keys: list[str], selector: str, kind: type) -> Input:
    await settle(pilot)
    for key in keys:
        await pilot.press(key)
        await settle(pilot)
    assert isinstance(pilot.app.screen, kind), pilot.app.screen
    field = pilot.app.screen.query_one(selector, Input)
    if pilot.app.focused is not field:
        field.focus()
        await settle(pilot)
    return field


@pytest.mark.parametrize("case", list(CASES))
async def test_esc_in_a_text_field_asks_and_keeps_the_typing(profile: Core, make_app, case):
    keys, selector, kind = CASES[case]
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        field = await open_case(pilot, keys, selector, kind)
        screen = app.screen
        below = app.screen_stack[-2]
        before = field.value
        await pilot.press("end", *SHORTCUTS)
        await settle(pilot)
        typed = before + SHORTCUTS
        assert field.value == typed
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen), case
        await pilot.press("n")
        await settle(pilot)
        # Kept: the same screen, the same text, the focus still in the field…
        assert app.screen is screen
        assert field.value == typed
        assert app.focused is field
        # …so what is typed next goes into it, never to the screen's shortcuts.
        await pilot.press(*SHORTCUTS)
        await settle(pilot)
        assert app.screen is screen
        assert field.value == typed + SHORTCUTS
        assert not any("code" in n.lower() or "removed" in n.lower() for n in notices(app))
        # "yes" leaves, as the footer's Esc says.
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert app.screen is below
        assert screen not in app.screen_stack
    # Nothing was saved or sent by any of it.
    assert profile(preferences.get_context, "email").digest_minutes == 60
    assert [d.address for d in profile(preferences.get_context, "email").destinations] == [
        "alice@example.org"
    ]
    assert [f.name for f in profile(preferences.list_filters, "email")] == [
        "koji tags",
        "bodhi",
        "[pagure]",
    ]


@pytest.mark.parametrize("case", list(CASES))
async def test_esc_without_typing_goes_back_at_once(profile: Core, make_app, case):
    keys, selector, kind = CASES[case]
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_case(pilot, keys, selector, kind)
        below = app.screen_stack[-2]
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is below


@pytest.mark.parametrize("case", list(CASES))
async def test_ctrl_q_with_typing_asks_and_keeps_it(profile: Core, make_app, case):
    keys, selector, kind = CASES[case]
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        field = await open_case(pilot, keys, selector, kind)
        screen = app.screen
        await pilot.press("end", "z")
        await settle(pilot)
        typed = field.value
        await pilot.press("ctrl+q")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert app.is_running
        assert app.screen is screen
        assert field.value == typed
        assert app.focused is field
        await pilot.press("ctrl+q")
        await settle(pilot)
        await pilot.press("y")
        await pilot.pause()
    assert app.return_code in (0, None)


def _screen_classes() -> list[type[Screen[Any]]]:
    found: list[type[Screen[Any]]] = []
    for module in pkgutil.iter_modules(screens.__path__):
        loaded = importlib.import_module(f"{screens.__name__}.{module.name}")
        for _, cls in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(cls, Screen) and cls.__module__ == loaded.__name__:
                found.append(cls)
    return found


def test_every_screen_with_a_text_field_holds_its_edits():
    # A new screen with a text field must take part in the one mechanism; the rule
    # picker's search words are not the user's work (nothing is saved from them).
    not_work = {RulePickerScreen}
    with_fields = [
        cls
        for cls in _screen_classes()
        if ("Input(" in inspect.getsource(cls) or "ParameterForm(" in inspect.getsource(cls))
    ]
    assert {DigestScreen, DestinationsScreen, PromptScreen, RuleFormScreen} <= set(with_fields)
    for cls in with_fields:
        if cls not in not_work:
            assert issubclass(cls, HoldsEdits), cls.__name__
