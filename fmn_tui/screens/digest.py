"""A context's digest: collect notifications and send them together."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.validation import Integer
from textual.widgets import Button, Footer, Header, Input, Label, Static

from fmn_core import preferences
from fmn_core.errors import UserError
from fmn_core.gateway import PreferenceCall
from fmn_core.preferences import ContextView
from fmn_core.wording import digest_policy

from ._base import CoreScreen

__all__ = ["DigestScreen"]


class DigestScreen(CoreScreen[ContextView, None]):
    """Send at most every N minutes, and/or once K notifications have gathered."""

    CSS_PATH = "digest.tcss"
    HELP_TITLE = "Digest of a context"
    AUTO_FOCUS = "#minutes"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+o", "turn_off", "Turn off"),
        Binding("escape", "back", "Back", key_display="Esc"),
    ]

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context
        #: The fields are filled from the database once; later loads keep what was typed.
        self.filled = False

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form"):
            yield Static("", id="heading")
            yield Static(
                "A digest gathers this context's notifications into one message. "
                "0 in both fields sends each notification at once.",
                id="explain",
                markup=False,
            )
            yield Label("Send at most every … minutes (0: no time limit):")
            # Parsing only: core decides the allowed range when it is saved.
            yield Input(
                "0", id="minutes", type="integer", validators=[Integer(minimum=0)], max_length=6
            )
            yield Label("… or as soon as this many have gathered (0: no count):")
            yield Input(
                "0", id="count", type="integer", validators=[Integer(minimum=0)], max_length=6
            )
            yield Static("", id="digest-error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Turn off", id="off")
        yield Footer()

    def fetch(self) -> ContextView:
        view: ContextView = self.account.read(
            PreferenceCall.of(preferences.get_context, self.context)
        )
        return view

    def show(self, view: ContextView) -> None:
        heading = Text()
        heading.append(f"Digest of {view.context}", style="bold")
        heading.append(f" — now: {digest_policy(view)}")
        self.query_one("#heading", Static).update(heading)
        if not self.filled:
            self.filled = True
            self.query_one("#minutes", Input).value = str(view.digest_minutes)
            self.query_one("#count", Input).value = str(view.digest_count)

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        """Store the two values (core checks their range)."""
        values = []
        for field in self.query(Input).results(Input):
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                self._inline(f"{field.id}: {result.failure_descriptions[0]}")
                field.focus()
                return
            values.append(int(field.value))
        minutes, count = values
        self._store(minutes, count)

    @on(Button.Pressed, "#off")
    def action_turn_off(self) -> None:
        """Send every notification at once again."""
        self._store(0, 0)

    def _store(self, minutes: int, count: int) -> None:
        context = self.context

        def done(view: ContextView) -> None:
            self._inline("")
            self.query_one("#minutes", Input).value = str(view.digest_minutes)
            self.query_one("#count", Input).value = str(view.digest_count)
            self.notify(f"{context}: digest {digest_policy(view)}.", markup=False)

        def refused(error: UserError) -> bool:
            self._inline(str(error))
            return True

        self.change(
            PreferenceCall.of(preferences.set_digest, context, minutes, count),
            done=done,
            failed=refused,
        )

    def _inline(self, message: str) -> None:
        self.query_one("#digest-error", Static).update(f"✗ {message}" if message else "")

    def action_back(self) -> None:
        """Back, without saving what was typed."""
        self.dismiss(None)
