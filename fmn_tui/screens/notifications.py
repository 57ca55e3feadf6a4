"""Recent notifications, each with the filter that sent it, and why one waits.

A notification that has not been sent says why and until when, in the words
``fmn pending`` uses on IRC (``fmn_core.wording.waiting_reason``): the
highlighted row's reason is shown in full under the table.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Static

from fmn_core import preferences
from fmn_core.gateway import PreferenceCall
from fmn_core.preferences import NotificationView

from ..display import plain, shorten, when
from ..widgets.view_table import Cell, ViewTable
from ._base import CoreScreen

__all__ = ["NotificationsScreen"]

#: How many notifications the screen lists.
LIMIT = 50

STATES = {
    "pending": "… pending",
    "sending": "… sending",
    "sent": "✓ sent",
    "failed": "! failed",
    "dead": "✗ dead",
}


class NotificationsScreen(CoreScreen[list[NotificationView], None]):
    """The latest notifications, newest first; why each was sent is its filter."""

    CSS_PATH = "notifications.tcss"
    HELP_TITLE = "Recent notifications"
    AUTO_FOCUS = "#notifications"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "reload", "Reload"),
        Binding("escape", "back", "Back", key_display="Esc"),
    ]

    def __init__(self, context: str | None = None) -> None:
        super().__init__()
        self.context = context
        self.reasons: dict[str, NotificationView] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="heading")
        yield ViewTable("When (UTC)", "Context", "Filter", "State", "Summary", id="notifications")
        yield Static("", id="why", markup=False)
        yield Footer()

    def fetch(self) -> list[NotificationView]:
        view: list[NotificationView] = self.account.read(
            PreferenceCall.of(preferences.recent_notifications, context=self.context, limit=LIMIT)
        )
        return view

    def show(self, view: list[NotificationView]) -> None:
        self.reasons = {str(item.id): item for item in view}
        where = f" in {self.context}" if self.context else ""
        heading = Text()
        heading.append(f"Your latest notifications{where}", style="bold")
        heading.append(f" — {len(view)} shown, newest first." if view else " — none yet.")
        self.query_one("#heading", Static).update(heading)
        width = max(16, self.size.width - 64)
        rows: list[tuple[str, list[Cell]]] = [
            (
                str(item.id),
                [
                    when(item.created_at),
                    item.context,
                    plain(shorten(item.filter_name, 18)),
                    STATES.get(item.state, item.state),
                    plain(shorten(item.summary or item.topic, width)),
                ],
            )
            for item in view
        ]
        self.query_one("#notifications", ViewTable).set_rows(rows)
        self._explain(rows[0][0] if rows else None)

    @on(ViewTable.RowHighlighted, "#notifications")
    def _highlighted(self, event: ViewTable.RowHighlighted) -> None:
        self._explain(event.row_key.value)

    def _explain(self, key: str | None) -> None:
        item = self.reasons.get(key or "")
        text = ""
        if item is not None:
            text = f"{STATES.get(item.state, item.state)}: {item.reason}"
        self.query_one("#why", Static).update(text)

    def action_reload(self) -> None:
        """Read again."""
        self.load()

    def action_back(self) -> None:
        """Back to the contexts."""
        self.dismiss(None)
