"""A context's digest and quiet hours: when notifications travel.

The numeric fields are plain text fields with an integer validator, not Textual's
``type="integer"`` (which silently drops what it does not allow, so "1.5" became
"15"): a value that is not a whole number is refused with a message instead.

The daily digest and quiet hours each have their own time zone (the preferences
file's ``digest.timezone`` and ``quiet_hours.timezone``): somebody who travels may
want the digest at home's 08:00 and quiet hours where they sleep. Each field is
checked by core's own time-zone check, and a bad name is refused naming the field.
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

from ..widgets.validators import TimezoneValidator
from ._base import CoreScreen, HoldsEdits

__all__ = ["DigestScreen"]

#: How the two time-zone fields are named in what the user reads.
DIGEST_ZONE = "daily digest time zone"
QUIET_ZONE = "quiet hours time zone"


class DigestScreen(HoldsEdits, CoreScreen[ContextView, None]):
    """Send at most every N minutes, after K notifications, and/or daily at a local time;
    quiet hours hold instant notifications."""

    CSS_PATH = "digest.tcss"
    HELP_TITLE = "Digest of a context"
    AUTO_FOCUS = "#minutes"
    DISCARD_QUESTION = "Leave without saving the digest settings you typed?"

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
            # Each time zone sits with the times it applies to.
            yield Label(
                "… or daily at (HH:MM, empty: none), in time zone (IANA, like Europe/Prague):"
            )
            with Horizontal(classes="row"):
                yield Input("", id="at", placeholder="08:00", max_length=5, classes="time")
                yield Input(
                    "UTC",
                    id="digest-timezone",
                    max_length=64,
                    classes="zone",
                    validators=[TimezoneValidator(DIGEST_ZONE)],
                )
            yield Label("Quiet hours from … to … (HH:MM, empty: none; urgent filters pass), zone:")
            with Horizontal(classes="row"):
                yield Input("", id="quiet-from", placeholder="22:00", max_length=5, classes="time")
                yield Input("", id="quiet-to", placeholder="07:00", max_length=5, classes="time")
                yield Input(
                    "UTC",
                    id="quiet-timezone",
                    max_length=64,
                    classes="zone",
                    validators=[TimezoneValidator(QUIET_ZONE)],
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
        self.view = view
        heading = Text()
        heading.append(f"Digest of {view.context}", style="bold")
        heading.append(f" — now: {digest_policy(view)}")
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
        self.query_one("#digest-timezone", Input).value = view.digest_timezone
        self.query_one("#quiet-from", Input).value = view.quiet_from or ""
        self.query_one("#quiet-to", Input).value = view.quiet_to or ""
        # Without quiet hours there is no zone stored for them: offer the digest's.
        self.query_one("#quiet-timezone", Input).value = view.quiet_timezone or view.digest_timezone
        self.mark_saved()

    def on_mount(self) -> None:
        """Until the stored values arrive, the fields' defaults are the starting point."""
        self.mark_saved()

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
        zones = []
        for name in ("digest-timezone", "quiet-timezone"):
            field = self.query_one(f"#{name}", Input)
            zone = field.value.strip() or "UTC"
            result = field.validate(zone)
            if result is not None and not result.is_valid:
                self._inline(result.failure_descriptions[0])
                field.focus()
                return
            zones.append(zone)
        digest_zone, quiet_zone = zones
        at = self.query_one("#at", Input).value.strip() or None
        start = self.query_one("#quiet-from", Input).value.strip() or None
        end = self.query_one("#quiet-to", Input).value.strip() or None
        self._store(minutes, count, at, digest_zone, start, end, quiet_zone)

    @on(Button.Pressed, "#off")
    def action_turn_off(self) -> None:
        """Send every notification at once again (quiet hours are kept)."""
        view = self.view
        self._store(
            0,
            0,
            None,
            view.digest_timezone if view else "UTC",
            view.quiet_from if view else None,
            view.quiet_to if view else None,
            (view.quiet_timezone if view else None) or "UTC",
        )

    def _store(
        self,
        minutes: int,
        count: int,
        at: str | None,
        digest_zone: str,
        start: str | None,
        end: str | None,
        quiet_zone: str,
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
                preferences.set_digest, context, minutes, count, at=at, timezone=digest_zone
            ),
            PreferenceCall.of(preferences.set_quiet_hours, context, start, end, quiet_zone),
            done=done,
            failed=refused,
        )

    def _inline(self, message: str) -> None:
        error = self.query_one("#digest-error", Static)
        error.update(f"✗ {message}" if message else "")
        if message:
            # Under the last fields, below the fold at 80x24: bring it into sight.
            self.call_after_refresh(error.scroll_visible, animate=False)

    def action_back(self) -> None:
        """Back; asks first when a field holds an unsaved value."""
        self.leave()
