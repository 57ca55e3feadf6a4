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
from textual.widgets import DataTable, Footer, Header, Static

from fmn_core import preferences
from fmn_core.gateway import PreferenceCall
from fmn_core.preferences import ActionPlan, NotificationView

from ..display import plain, shorten, when
from ..widgets.view_table import Cell, ViewTable
from ._base import CoreScreen
from .explain import ExplainScreen
from .prompt import PromptScreen

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
        Binding("w", "why", "Why?"),
        # At 80 columns the footer holds the first keys; the rest are listed under F1.
        Binding("i", "explain_id", "Explain an id", show=False),
        Binding("m", "act('mute-package')", "Mute package"),
        Binding("a", "act('mute-app')", "Mute app", show=False),
        Binding("p", "act('pause-filter')", "Pause 7 days", show=False),
        Binding("r", "reload", "Reload"),
        Binding("escape", "back", "Back", key_display="Esc"),
    ]

    def __init__(self, context: str | None = None) -> None:
        super().__init__()
        self.context = context
        self.items: list[NotificationView] = []
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
        self.items = view
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

    @property
    def selected(self) -> NotificationView | None:
        """The highlighted notification, if any."""
        row = self.query_one("#notifications", DataTable).cursor_row
        return self.items[row] if 0 <= row < len(self.items) else None

    def action_why(self) -> None:
        """Explain the highlighted notification's message."""
        item = self.selected
        if item is not None:
            self.app.push_screen(ExplainScreen(item.message_id))

    def action_explain_id(self) -> None:
        """Explain any stored message: paste its id or datagrepper link."""

        def explain(answer: str | None) -> None:
            if answer:
                self.app.push_screen(ExplainScreen(answer))

        self.app.push_screen(
            PromptScreen(
                "Which message? Paste its id or a datagrepper link",
                placeholder="e.g. 2024-5d5b…, or https://apps.fedoraproject.org/datagrepper/…",
                ok="Explain",
            ),
            explain,
        )

    def action_act(self, action: str) -> None:
        """Mute the package or application of the highlighted notification, or pause
        the filter that sent it, as the notification's own one-click links would."""
        item = self.selected
        if item is None:
            return
        message, context = item.message_id, item.context

        def apply(choice: str | None) -> None:
            self.change(
                PreferenceCall.of(
                    preferences.act_on_notification,
                    message,
                    action,
                    context=context,
                    choice=choice,
                ),
                done=lambda written: self.notify("; ".join(written), markup=False, timeout=10),
            )

        if action != "mute-package":
            apply(None)
            return

        def chosen(plan: ActionPlan) -> None:
            if len(plan.choices) <= 1:
                apply(None)
                return
            self.app.push_screen(
                PromptScreen(
                    f"Which package? {', '.join(plan.choices)}",
                    value=plan.choices[0],
                    ok="Mute",
                ),
                lambda answer: apply(answer) if answer else None,
            )

        self.change(
            PreferenceCall.of(preferences.plan_action, message, action, context=context),
            done=chosen,
            trial=True,
        )

    def action_reload(self) -> None:
        """Read again."""
        self.load()

    def action_back(self) -> None:
        """Back to the contexts."""
        self.dismiss(None)
