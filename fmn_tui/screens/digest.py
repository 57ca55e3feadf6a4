"""A context's digest and quiet hours: when notifications travel.

The numeric fields are plain text fields with an integer validator, not Textual's
``type="integer"`` (which silently drops what it does not allow, so "1.5" became
"15"): a value that is not a whole number is refused with a message instead.
"""

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
from fmn_core.wording import digest_policy, quiet_hours

from ._base import CoreScreen
from .confirm import ConfirmScreen

__all__ = ["DigestScreen"]


class DigestScreen(CoreScreen[ContextView, None]):
    """Send at most every N minutes, after K notifications, and/or daily at a local time;
    quiet hours hold instant notifications."""

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
        #: What was last read or saved.
        self.view: ContextView | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form"):
            yield Static("", id="heading")
            yield Static(
                "A digest gathers the matches of this context's digest filters into one "
                "message (a filter is instant or digest: set it on the filters screen). "
                "All empty or 0 sends everything at once.",
                id="explain",
                markup=False,
            )
            yield Label("Send at most every … minutes (0: no time limit):")
            # Parsing only: core decides the allowed range when it is saved.
            yield Input("0", id="minutes", validators=[Integer(minimum=0)], max_length=6)
            yield Label("… or as soon as this many have gathered (0: no count):")
            yield Input("0", id="count", validators=[Integer(minimum=0)], max_length=6)
            yield Label("… or daily at (HH:MM, empty: no daily digest):")
            yield Input("", id="at", placeholder="08:00", max_length=5)
            yield Label("Time zone (IANA, like Europe/Prague):")
            yield Input("UTC", id="timezone", max_length=64, classes="wide")
            yield Label("Quiet hours from … to … (HH:MM, empty: none; urgent filters pass):")
            with Horizontal(classes="quiet"):
                yield Input("", id="quiet-from", placeholder="22:00", max_length=5)
                yield Input("", id="quiet-to", placeholder="07:00", max_length=5)
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
        self.view = view
        heading = Text()
        heading.append(f"Digest of {view.context}", style="bold")
        heading.append(f" — now: {digest_policy(view)}")
        self.query_one("#heading", Static).update(heading)
        heading.append(
            f"; quiet hours: {quiet_hours(view.quiet_from, view.quiet_to, view.quiet_timezone)}"
        )
        self.query_one("#heading", Static).update(heading)
        if not self.filled:
            self.filled = True
            self._fill(view)

    def _fill(self, view: ContextView) -> None:
        self.query_one("#minutes", Input).value = str(view.digest_minutes)
        self.query_one("#count", Input).value = str(view.digest_count)
        self.query_one("#at", Input).value = view.digest_at or ""
        self.query_one("#timezone", Input).value = view.quiet_timezone or view.digest_timezone
        self.query_one("#quiet-from", Input).value = view.quiet_from or ""
        self.query_one("#quiet-to", Input).value = view.quiet_to or ""

    @property
    def edited(self) -> bool:
        """Whether a field differs from what is stored (Esc then asks before leaving)."""
        view = self.view
        if view is None:
            return False
        stored = {
            "minutes": str(view.digest_minutes),
            "count": str(view.digest_count),
            "at": view.digest_at or "",
            "quiet-from": view.quiet_from or "",
            "quiet-to": view.quiet_to or "",
        }
        return any(
            self.query_one(f"#{key}", Input).value.strip() != value for key, value in stored.items()
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        """Store the values (core checks times, zones and ranges)."""
        values = []
        for name in ("minutes", "count"):
            field = self.query_one(f"#{name}", Input)
            text = field.value.strip() or "0"
            result = field.validate(text)
            if result is not None and not result.is_valid:
                self._inline(f"{name}: {text!r} is not a whole number of {name}; type digits only.")
                field.focus()
                return
            values.append(int(text))
        minutes, count = values
        at = self.query_one("#at", Input).value.strip() or None
        zone = self.query_one("#timezone", Input).value.strip() or "UTC"
        start = self.query_one("#quiet-from", Input).value.strip() or None
        end = self.query_one("#quiet-to", Input).value.strip() or None
        self._store(minutes, count, at, zone, start, end)

    @on(Button.Pressed, "#off")
    def action_turn_off(self) -> None:
        """Send every notification at once again (quiet hours are kept)."""
        view = self.view
        self._store(
            0,
            0,
            None,
            "UTC",
            view.quiet_from if view else None,
            view.quiet_to if view else None,
            quiet_zone=view.quiet_timezone if view else None,
        )

    def _store(
        self,
        minutes: int,
        count: int,
        at: str | None,
        zone: str,
        start: str | None,
        end: str | None,
        *,
        quiet_zone: str | None = None,
    ) -> None:
        context = self.context

        def done(view: ContextView) -> None:
            self._inline("")
            self.view = view
            self._fill(view)
            self.notify(
                f"{context}: digest {digest_policy(view)}; quiet hours "
                f"{quiet_hours(view.quiet_from, view.quiet_to, view.quiet_timezone)}.",
                markup=False,
            )

        def refused(error: UserError) -> bool:
            self._inline(str(error))
            return True

        self.change(
            PreferenceCall.of(
                preferences.set_digest, context, minutes, count, at=at, timezone=zone
            ),
            PreferenceCall.of(preferences.set_quiet_hours, context, start, end, quiet_zone or zone),
            done=done,
            failed=refused,
        )

    def _inline(self, message: str) -> None:
        self.query_one("#digest-error", Static).update(f"✗ {message}" if message else "")

    def action_back(self) -> None:
        """Back; asks first when a field holds an unsaved value."""
        if not self.edited:
            self.dismiss(None)
            return

        def answered(leave: bool | None) -> None:
            if leave:
                self.dismiss(None)

        self.app.push_screen(
            ConfirmScreen("Leave without saving the digest settings you typed?"), answered
        )
