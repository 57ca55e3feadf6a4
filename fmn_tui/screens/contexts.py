"""The home screen: every context on offer, and how each one is set up."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from fmn_core import preferences
from fmn_core.gateway import PreferenceCall
from fmn_core.preferences import ContextView
from fmn_core.wording import count, digest_policy

from ..display import OFF, ON, destination_status, main_destination, plain, when
from ..widgets.view_table import Cell, ViewTable
from ._base import CoreScreen

__all__ = ["ContextsScreen", "Overview"]

#: How many of the latest notifications the "Recent" column counts.
RECENT_WINDOW = 100


@dataclass(frozen=True)
class Overview:
    """What the home screen shows."""

    contexts: list[ContextView]
    #: Per context, how many of the latest ``RECENT_WINDOW`` notifications it got.
    recent: Counter[str] = field(default_factory=Counter)


class ContextsScreen(CoreScreen[Overview, None]):
    """Contexts: enabled, destination, digest, filters and recent notifications."""

    CSS_PATH = "contexts.tcss"
    HELP_TITLE = "Contexts (home)"
    AUTO_FOCUS = "#contexts"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "filters", "Filters", key_display="f/⏎"),
        Binding("space", "toggle_enabled", "On/off"),
        Binding("d", "destination", "Address"),
        Binding("g", "digest", "Digest"),
        Binding("t", "templates", "Templates", show=False),
        Binding("n", "notifications", "Recent"),
        Binding("r", "reload", "Reload", show=False),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.overview: Overview | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="banner", markup=False)
        yield ViewTable(
            "Context", "On", "Destination", "Status", "Digest", "Filters", "Recent", id="contexts"
        )
        yield Static("", id="detail")
        yield Footer()

    def fetch(self) -> Overview:
        contexts, recent = self.account.run(
            [
                PreferenceCall.of(preferences.list_contexts),
                PreferenceCall.of(preferences.recent_notifications, limit=RECENT_WINDOW),
            ],
            trial=True,
        )
        return Overview(contexts, Counter(n.context for n in recent))

    def show(self, view: Overview) -> None:
        current = self.selected
        self.overview = view
        rows = []
        for context in view.contexts:
            destination = main_destination(context)
            cells: list[Cell] = [
                context.context,
                ON if context.enabled else OFF,
                plain(destination.masked if destination else "—"),
                destination_status(destination),
                digest_policy(context, compact=True),
                str(len(context.filters)),
                str(view.recent.get(context.context, 0)),
            ]
            rows.append((context.context, cells))
        names = [c.context for c in view.contexts]
        self.query_one("#contexts", ViewTable).set_rows(
            rows, cursor=names.index(current) if current in names else 0
        )
        muted = next((c.muted_until for c in view.contexts if c.muted_until), None)
        banner = self.query_one("#banner", Static)
        banner.update(f"⏸ Muted until {when(muted)} UTC: notifications are held." if muted else "")
        banner.display = muted is not None
        self._show_detail()

    @property
    def selected(self) -> str | None:
        """The highlighted context's name."""
        if self.overview is None or not self.overview.contexts:
            return None
        table = self.query_one("#contexts", DataTable)
        row = min(max(table.cursor_row, 0), len(self.overview.contexts) - 1)
        return self.overview.contexts[row].context

    def _view_of(self, name: str | None) -> ContextView | None:
        if self.overview is None:
            return None
        return next((c for c in self.overview.contexts if c.context == name), None)

    @on(DataTable.RowHighlighted, "#contexts")
    def _show_detail(self) -> None:
        view = self._view_of(self.selected)
        detail = self.query_one("#detail", Static)
        if view is None:
            detail.update("")
            return
        text = Text()
        text.append(view.context, style="bold")
        text.append(f" — {'enabled' if view.enabled else 'disabled'}, ")
        text.append(f"{count(len(view.filters), 'filter')}, digest {digest_policy(view)}\n")
        if not view.filters:
            text.append("No filters yet: press f to add one, or t to start from a template.\n")
        for item in view.filters:
            text.append(f"  {'✓' if item.active else '✗'} ")
            text.append(item.name)
            text.append(f"  ({count(len(item.rules), 'rule')})\n", style="dim")
        if not any(d.confirmed for d in view.destinations):
            text.append("No confirmed destination: press d to set one.\n")
        detail.update(text)

    @on(DataTable.RowSelected, "#contexts")
    def action_filters(self) -> None:
        """Open the highlighted context's filters."""
        if self.selected:
            self.fmn.open_filters(self.selected)

    def action_toggle_enabled(self) -> None:
        """Enable or disable the highlighted context."""
        view = self._view_of(self.selected)
        if view is None:
            return
        name, enabled = view.context, not view.enabled
        self.change(
            PreferenceCall.of(preferences.set_context_enabled, name, enabled),
            done=lambda _: self.notify(
                f"{name} {'enabled' if enabled else 'disabled'}.", markup=False
            ),
        )

    def action_destination(self) -> None:
        """Set or confirm the highlighted context's destination."""
        if self.selected:
            self.fmn.open_destinations(self.selected)

    def action_digest(self) -> None:
        """Edit the highlighted context's digest."""
        if self.selected:
            self.fmn.open_digest(self.selected)

    def action_templates(self) -> None:
        """Clone a template into the highlighted context."""
        if self.selected:
            self.fmn.open_templates(self.selected)

    def action_notifications(self) -> None:
        """Show the recent notifications."""
        self.fmn.open_notifications()

    def action_reload(self) -> None:
        """Read everything again."""
        self.load()
