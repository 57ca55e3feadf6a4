"""A context's destination: set an address, see its confirmation, resend, enter the code."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from fmn_core import preferences
from fmn_core.destinations import FEED_CONTEXTS
from fmn_core.errors import UserError
from fmn_core.gateway import PreferenceCall
from fmn_core.preferences import (
    ConfirmResult,
    ContextView,
    DestinationView,
    PendingConfirmation,
)

from ..display import destination_status, plain, when
from ..widgets.validators import DestinationValidator
from ..widgets.view_table import Cell, ViewTable
from ._base import CoreScreen, HoldsEdits
from .confirm import ConfirmScreen

__all__ = ["DestinationsScreen"]

PLACEHOLDERS = {
    "email": "you@example.org",
    "irc": "your IRC nick",
    "matrix": "@you:fedora.im",
    "push": "ntfys://ntfy.sh/your-topic",
    "android": "ntfys://ntfy.sh/your-topic",
    "desktop": "ntfys://ntfy.sh/your-topic",
}


class DestinationsScreen(HoldsEdits, CoreScreen[ContextView, None]):
    """Where a context delivers; an address counts only once it is confirmed."""

    CSS_PATH = "destinations.tcss"
    HELP_TITLE = "Destination of a context"
    AUTO_FOCUS = "#destinations"
    # The feed URL field is shown to be copied, not typed in.
    EDIT_FIELDS = "#address, #code"
    DISCARD_QUESTION = "Leave without using the address or code you typed?"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "set", "Set"),
        Binding("c", "code", "Code"),
        Binding("r", "resend", "Resend"),
        Binding("x,delete", "remove", "Remove", key_display="x"),
        Binding("y", "copy_url", "Copy feed URL", show=False),
        Binding("escape", "back", "Back", key_display="Esc"),
    ]

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context
        self.view: ContextView | None = None

    @property
    def is_feed(self) -> bool:
        """Feeds get a secret token from fmn instead of an address from the user."""
        return self.context in FEED_CONTEXTS

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="heading")
        yield ViewTable("Address", "Status", "Code expires (UTC)", id="destinations")
        with VerticalScroll(id="forms"):
            if self.is_feed:
                yield Static(
                    "fmn makes a secret token for this feed: press s to make one "
                    "(x removes an old one). Give this URL to your feed reader "
                    "(y copies it; keep it secret):",
                    id="feed-note",
                    markup=False,
                )
                # Read-only, but selectable: the URL carries the secret token.
                yield Input("", id="feed-url", disabled=False, classes="url")
            else:
                if self.context == "irc":
                    yield Static(
                        "The fmn bot sends the code to your nick by private message; type "
                        "it below, or answer the bot: fmn confirm <code>.",
                        id="irc-note",
                        markup=False,
                    )
                yield Label("New address (a code is sent to it to confirm it's yours):")
                yield Input(
                    placeholder=PLACEHOLDERS.get(self.context, ""),
                    validators=[DestinationValidator(self.context, self.account.info.push)],
                    validate_on=["changed", "submitted"],
                    id="address",
                )
                yield Static("", id="address-error", classes="error", markup=False)
                yield Label("Confirmation code you received:")
                yield Input(placeholder="the code, e.g. ABCD-1234", id="code")
                yield Static("", id="code-error", classes="error", markup=False)
        yield Footer()

    def fetch(self) -> ContextView:
        view: ContextView = self.account.read(
            PreferenceCall.of(preferences.get_context, self.context)
        )
        return view

    def show(self, view: ContextView) -> None:
        self.view = view
        heading = Text()
        heading.append(f"Destination of {view.context}", style="bold")
        if not view.destinations:
            heading.append(" — none yet: nothing can be delivered here.")
        elif not any(d.confirmed for d in view.destinations):
            heading.append(" — not confirmed yet: nothing is delivered until it is.")
        self.query_one("#heading", Static).update(heading)
        table = self.query_one("#destinations", ViewTable)
        rows: list[tuple[str, list[Cell]]] = [
            (
                str(destination.id),
                [
                    plain(self._address(destination)),
                    destination_status(destination),
                    when(destination.expires_at) if destination.pending else "",
                ],
            )
            for destination in view.destinations
        ]
        table.set_rows(rows, cursor=table.cursor_row)
        if self.is_feed:
            field = self.query_one("#feed-url", Input)
            field.value = self.feed_url or "(none yet: press s)"

    @property
    def feed_url(self) -> str | None:
        """The newest confirmed feed's URL (only its owner sees it)."""
        if self.view is None or not self.account.is_own:
            return None
        urls = [d.url for d in self.view.destinations if d.confirmed and d.url]
        return urls[-1] if urls else None

    def action_copy_url(self) -> None:
        """Copy the feed's URL to the clipboard (through the terminal)."""
        url = self.feed_url
        if url is None:
            self.notify("There is no feed URL yet: press s to make one.", markup=False)
            return
        self.app.copy_to_clipboard(url)
        self.notify("The feed URL is copied; keep it secret.", markup=False)

    def _address(self, destination: DestinationView) -> str:
        # The full address only ever reaches its owner; an admin sees it masked.
        return destination.address if self.account.is_own else destination.masked

    @property
    def selected(self) -> DestinationView | None:
        """The highlighted destination."""
        if self.view is None or not self.view.destinations:
            return None
        row = self.query_one("#destinations", DataTable).cursor_row
        return self.view.destinations[min(max(row, 0), len(self.view.destinations) - 1)]

    def _inline(self, where: str, message: str) -> None:
        self.query_one(f"#{where}-error", Static).update(f"✗ {message}" if message else "")

    def action_set(self) -> None:
        """Type a new address (or, for feeds, make a new token)."""
        if self.is_feed:
            self._set("")
        else:
            self.query_one("#address", Input).focus()

    @on(Input.Changed, "#address")
    def _address_changed(self, event: Input.Changed) -> None:
        result = event.validation_result
        problem = result.failure_descriptions[0] if result and not result.is_valid else ""
        self._inline("address", problem if event.value else "")

    @on(Input.Submitted, "#address")
    def _address_submitted(self, event: Input.Submitted) -> None:
        if event.validation_result is not None and not event.validation_result.is_valid:
            self._inline("address", event.validation_result.failure_descriptions[0])
            return
        self._set(event.value.strip())

    def _set(self, address: str) -> None:
        context = self.context

        def done(pending: PendingConfirmation) -> None:
            if pending.destination.confirmed:
                self.notify(f"{context}: your new feed token is ready.", markup=False)
                return
            self.query_one("#address", Input).value = ""
            self.notify(
                f"A confirmation code is on its way to {pending.destination.masked}; "
                "enter it below.",
                markup=False,
            )
            self.query_one("#code", Input).focus()

        def refused(error: UserError) -> bool:
            if self.is_feed:
                return False
            self._inline("address", str(error))
            return True

        self.change(
            PreferenceCall.of(preferences.set_destination, context, address),
            done=done,
            failed=refused,
        )

    def action_code(self) -> None:
        """Type the code you received."""
        if self.is_feed:
            self.notify("Feeds need no confirmation code.")
            return
        self.query_one("#code", Input).focus()

    @on(Input.Submitted, "#code")
    def _code_submitted(self, event: Input.Submitted) -> None:
        code = event.value.strip()
        if not code:
            self._inline("code", "Type the code you received, then press Enter.")
            return
        if not self.account.is_own:
            self._inline("code", "Only the account's owner can enter its confirmation codes.")
            return

        def done(result: ConfirmResult) -> None:
            if result.destination is None:
                # Wrong, expired or locked: core's sentence, next to the field.
                self._inline("code", result.message)
                return
            self._inline("code", "")
            self.query_one("#code", Input).value = ""
            shown = result.destination.masked
            self.notify(f"Confirmed {shown} for {result.destination.context}.", markup=False)
            self.query_one("#destinations", DataTable).focus()

        def refused(error: UserError) -> bool:
            self._inline("code", str(error))
            return True

        self.change(PreferenceCall.of(preferences.confirm, code), done=done, failed=refused)

    def action_resend(self) -> None:
        """Send a fresh code to the newest unconfirmed address (the old code stops working)."""
        context = self.context
        self.change(
            PreferenceCall.of(preferences.resend_confirmation, context),
            done=lambda pending: self.notify(
                f"A new code is on its way to {pending.destination.masked}.", markup=False
            ),
        )

    def action_remove(self) -> None:
        """Remove the highlighted destination, after asking."""
        destination = self.selected
        if destination is None:
            return
        context, ident, shown = self.context, destination.id, destination.masked

        def answered(yes: bool | None) -> None:
            if yes:
                self.change(
                    PreferenceCall.of(preferences.remove_destination, context, ident),
                    done=lambda _: self.notify(f"Removed {shown}.", markup=False),
                )

        self.app.push_screen(
            ConfirmScreen(f"Remove the destination {shown} from {context}?", yes="Remove"),
            answered,
        )

    def action_back(self) -> None:
        """Back to the contexts; asks first when a field holds what you typed."""
        self.leave()
