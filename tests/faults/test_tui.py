"""The TUI under hostile typing: the app stays up, no internal error, no traceback.

Textual's ``run_test`` Pilot types text key by key (and pastes text with control
characters, which no key press can produce) into every input the app has: the
new-filter prompt, the address and code fields of a destination, the digest
fields, and each kind of rule parameter (name, text, glob, choice, integer).
After every entry the app must still be running, with no internal error
recorded; what core refuses is shown next to the input, as core worded it.
Strings come from a list of known-nasty ones and from hypothesis.

The push-URL catalogue of ``tests/core/test_destinations.py`` also goes through
the address field's validator (which calls core's own check, without DNS).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from core.test_destinations import PUSH
from core.test_push_urls import HOSTILE_URLS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textual.screen import Screen
from textual.widgets import Input
from tui.conftest import make_database, settle

import fmn_tui
from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.preferences import Actor
from fmn_core.rules import default_catalog
from fmn_tui.account import Account
from fmn_tui.app import FmnApp
from fmn_tui.screens.add_rule import RuleFormScreen, RulePickerScreen
from fmn_tui.screens.confirm import ConfirmScreen
from fmn_tui.screens.destinations import DestinationsScreen
from fmn_tui.screens.digest import DigestScreen
from fmn_tui.screens.filters import FiltersScreen
from fmn_tui.screens.notifications import NotificationsScreen
from fmn_tui.screens.prompt import PromptScreen
from fmn_tui.widgets.validators import DestinationValidator

from .conftest import env_int, faults_full

#: Every string into every input, or 25 sessions, take longer than pytest's 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800 if faults_full() else 300)]

EXAMPLES = env_int("FMN_FAULTS_TUI_EXAMPLES", 25 if faults_full() else 2)
#: Characters typed key by key; the rest of a string is pasted.
KEYED = 4
#: Strings per input when they are dealt out (the default run).
SPREAD = 3

NASTY = [
    "",
    " ",
    "   x   ",
    "a" * 300,
    "é" * 80,
    "\u202e evil",
    "\u200b",
    "\ufeff",
    "k\u0301oji",
    "\U0001d55c\U0001d560\U0001d55b\U0001d55a",
    "\uff4b\uff4f\uff4a\uff49",
    "(a+)+$",
    "[",
    "\\",
    "*",
    "?",
    "[!a-z]",
    "%s%n",
    "${jndi:ldap://x}",
    "{0}",
    "[b]bold[/b]",
    "[red]x",
    "'; DROP TABLE users; --",
    "<script>",
    "../../etc/passwd",
    "file:///etc/passwd",
    "²",
    "٣",
    "0x10",
    "1e999",
    "-1",
    "9" * 40,
    "ntfys://127.0.0.1/x",
    "json://[::ffff:127.0.0.1]/",
    "alice@example.org",
    "ABCD-EFGH",
]
#: Pasted, not typed: control characters (no key makes them), NUL, line breaks.
PASTED = ["a\x00b", "x\ny", "\x1b[2J", "bell\x07", "tab\tsep", "\r\n"]
#: Hypothesis' characters as a terminal can type them (no controls, no surrogates).
TYPABLE = st.characters(exclude_categories=("Cc", "Cs"))


def _typeable(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


class Session:
    """One running app and the checks made after each entry."""

    def __init__(self, app: FmnApp, pilot: Any) -> None:
        self.app = app
        self.pilot = pilot
        self.entries = 0
        #: The ids of the inputs typed into (``test_tui_sweep_reaches_every_input``).
        self.reached: set[str] = set()

    def check(self, what: str) -> None:
        assert self.app.is_running, f"the app stopped after {what}"
        assert self.app.return_code is None, f"the app exited after {what}"
        assert self.app.internal_errors == [], f"internal error after {what}"

    async def enter(self, field: Input, text: str, submit: str = "enter") -> None:
        field.focus()
        await self.pilot.pause()
        field.value = ""
        # Key by key (about 40 ms each), then the rest pasted; control characters
        # can only be pasted.
        typed = text[:KEYED] if _typeable(text[:KEYED]) else ""
        await self.pilot.press(*typed)
        if text[len(typed) :]:
            field.insert_text_at_cursor(text[len(typed) :])
        await self.pilot.press(submit)
        await settle(self.pilot)
        self.entries += 1
        if field.id:
            self.reached.add(field.id)
        self.check(f"typing {text!r} into {field.id}")

    async def back_to(self, screen_type: type) -> None:
        """Escape (and say yes to discarding) until ``screen_type`` is on top."""
        for _ in range(6):
            if isinstance(self.app.screen, screen_type):
                return
            if isinstance(self.app.screen, ConfirmScreen):
                await self.pilot.press("y")
            else:
                await self.pilot.press("escape")
            await settle(self.pilot)
        assert isinstance(self.app.screen, screen_type), self.app.screen

    @contextlib.asynccontextmanager
    async def on(self, screen: Screen[Any]) -> AsyncIterator[Screen[Any]]:
        """``screen`` on top of the app while the block runs, then taken off."""
        self.app.push_screen(screen)
        await settle(self.pilot)
        yield screen
        self.app.pop_screen()
        await settle(self.pilot)

    async def prompt(self, key: str, text: str, back_to: type, focus: str) -> None:
        """Open the prompt ``key`` opens, answer it with ``text``, go back to ``back_to``."""
        self.app.screen.query_one(focus).focus()
        await self.pilot.press(key)
        await settle(self.pilot)
        assert isinstance(self.app.screen, PromptScreen)
        await self.enter(self.app.screen.query_one("#answer", Input), text)
        await self.back_to(back_to)

    async def every_input(self, texts: list[str], spread: bool = False) -> None:
        """Each string into each input; with ``spread``, the strings are dealt out
        round-robin so that each input gets a few of them (the suite's time budget)."""
        app = self.app
        deck = iter(range(10**9))

        def some(strings: list[str]) -> list[str]:
            if not spread:
                return strings
            return [strings[next(deck) % len(strings)] for _ in range(SPREAD)]

        await settle(self.pilot)
        async with self.on(FiltersScreen("email")):
            for text in some(texts):
                await self.prompt("a", text, FiltersScreen, "#filters")  # a new filter's name
            for text in some(texts):
                await self.prompt("r", text, FiltersScreen, "#filters")  # a new name for "koji"
        async with self.on(NotificationsScreen()):
            for text in some(texts):
                # The message to explain: its id or a datagrepper link, pasted.
                await self.prompt("i", text, NotificationsScreen, "#notifications")
        async with self.on(RulePickerScreen("koji")) as picker:
            for text in some(texts):
                await self.enter(picker.query_one("#search", Input), text)
                if not isinstance(app.screen, RulePickerScreen):
                    await self.back_to(RulePickerScreen)
        for context in ("push", "email"):
            async with self.on(DestinationsScreen(context)) as screen:
                for text in some(texts):
                    await self.enter(screen.query_one("#address", Input), text)
                for text in some(texts):
                    await self.enter(screen.query_one("#code", Input), text)
        async with self.on(DestinationsScreen("rss")) as screen:
            for text in some(texts):
                # Shown for copying; what is typed over it must not matter.
                await self.enter(screen.query_one("#feed-url", Input), text)
        async with self.on(DigestScreen("email")) as screen:
            fields = ("minutes", "count", "at", "digest-timezone", "quiet-from", "quiet-to")
            for field in (*fields, "quiet-timezone"):
                for text in some(texts):
                    await self.enter(screen.query_one(f"#{field}", Input), text, submit="ctrl+s")
        for spec in rule_specs():
            for text in some(texts):
                app.push_screen(RuleFormScreen(spec))
                await settle(self.pilot)
                await self.enter(app.screen.query(Input).first(), text)
                if isinstance(app.screen, RuleFormScreen):
                    app.pop_screen()
                    await settle(self.pilot)
        self.check("the whole session")


def rule_specs() -> list[Any]:
    """One rule per parameter kind (name, text, glob, choice, integer)."""
    chosen: dict[str, Any] = {}
    for spec in default_catalog():
        for parameter in spec.parameters[:1]:
            chosen.setdefault(parameter.kind, spec)
    return [chosen[kind] for kind in sorted(chosen)]


def input_ids() -> set[str]:
    """The ids of every ``Input`` the TUI's source makes with a fixed id: the sweep must
    reach each (a rule form's inputs are named after their parameters: ``rule_specs``)."""
    ids = set()
    for source in Path(fmn_tui.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Input":
                for keyword in node.keywords:
                    if keyword.arg == "id" and isinstance(keyword.value, ast.Constant):
                        ids.add(str(keyword.value.value))
    return ids


def make_app(tmp_path: Path) -> tuple[FmnApp, Database]:
    database = make_database(tmp_path)
    with database.begin() as session:
        alice = Actor("alice")
        preferences.add_filter(session, alice, "email", "koji")
        preferences.add_rule(session, alice, "email", "koji", "app_is", {"app": "koji"})
    app = FmnApp(Account.in_process(database, Actor("alice")), default_catalog())
    return app, database


def run_session(tmp_path: Path, texts: list[str], spread: bool = False) -> int:
    app, database = make_app(tmp_path)

    async def scenario() -> int:
        async with app.run_test(size=(100, 40)) as pilot:
            session = Session(app, pilot)
            await session.every_input(texts, spread)
            missing = sorted(input_ids() - session.reached)
            assert missing == [], f"inputs the sweep never typed into: {missing}"
            return session.entries

    try:
        return asyncio.run(scenario())
    finally:
        app.account.close()
        database.dispose()


def test_tui_nasty_text_in_every_input(tmp_path: Path, figures: Any) -> None:
    entries = run_session(tmp_path, NASTY + PASTED, spread=not faults_full())
    figures(strings=len(NASTY + PASTED), entries=entries, internal_errors=0, app_exits=0)


def test_tui_fuzzed_text_in_every_input(
    tmp_path_factory: pytest.TempPathFactory, figures: Any
) -> None:
    sessions: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(st.text(TYPABLE, max_size=40), min_size=1, max_size=1))
    def check(texts: list[str]) -> None:
        sessions.append(run_session(tmp_path_factory.mktemp("tui"), texts))

    check()
    figures(sessions=len(sessions), entries=sum(sessions), internal_errors=0, app_exits=0)


def test_tui_address_validator_refuses_every_hostile_push_url(figures: Any) -> None:
    checked = 0
    for context in ("push", "desktop", "android"):
        # PUSH allows json: the catalogue's json URLs test the host checks.
        validator = DestinationValidator(context, PUSH)
        for url, reason in HOSTILE_URLS:
            if "resolves to" in reason:
                continue  # no DNS while typing; core resolves when the address is set
            result = validator.validate(url)
            assert not result.is_valid, url
            assert reason in result.failure_descriptions[0], (url, result.failure_descriptions)
            checked += 1
    figures(urls_refused_while_typing=checked)
