"""A context's filters: add, rename, reorder, switch on and off, delete."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from fmn_core import preferences
from fmn_core.gateway import PreferenceCall
from fmn_core.preferences import ContextView, FilterView
from fmn_core.wording import count

from ..display import destination_status, main_destination, plain, shorten
from ..widgets.validators import FilterNameValidator
from ..widgets.view_table import Cell, ViewTable
from ._base import CoreScreen
from .confirm import ConfirmScreen
from .preview import PreviewScreen
from .prompt import PromptScreen
from .rules import RulesScreen

__all__ = ["FiltersScreen"]


def _how(item: FilterView) -> str:
    """How a filter's matches travel, in a few letters: empty for instant and every time."""
    flags = ["digest"] if item.delivery == "digest" else []
    flags += ["!"] if item.urgent else []
    flags += ["once"] if item.oneshot else []
    return " ".join(flags)


class FiltersScreen(CoreScreen[ContextView, None]):
    """The filters of one context, in order; any active one that matches notifies."""

    CSS_PATH = "filters.tcss"
    HELP_TITLE = "Filters of a context"
    AUTO_FOCUS = "#filters"

    BINDINGS: ClassVar[list[BindingType]] = [
        # The footer shows what fits in 80 columns; F1 lists every key.
        Binding("a", "add", "Add"),
        Binding("e", "edit", "Rules", key_display="e/⏎"),
        Binding("space", "toggle_active", "On/off"),
        Binding("m", "toggle_delivery", "Mode"),
        Binding("x,delete", "delete", "Delete", key_display="x", show=False),
        Binding("escape", "back", "Back", key_display="Esc"),
        Binding("u", "toggle_urgent", "Urgent (through quiet hours)", show=False),
        Binding("p", "preview", "Preview", show=False),
        Binding("r", "rename", "Rename", show=False),
        Binding("K", "move(-1)", "Move up", show=False),
        Binding("J", "move(1)", "Move down", show=False),
        Binding("o", "toggle_oneshot", "One-shot", show=False),
        Binding("t", "templates", "Templates", show=False),
    ]

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context
        self.view: ContextView | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary")
        yield ViewTable("#", "On", "Name", "How", "Rules (all must match)", id="filters")
        yield Static(
            "A message notifies you here when any active filter matches it. How: at once "
            "unless digest (g on the contexts screen sets when); ! urgent (through quiet "
            "hours); once (then off). F1: every key.",
            id="hint",
            markup=False,
        )
        yield Footer()

    def fetch(self) -> ContextView:
        view: ContextView = self.account.read(
            PreferenceCall.of(preferences.get_context, self.context)
        )
        return view

    def show(self, view: ContextView) -> None:
        # The cursor stays on the same filter (by id: renamed and moved ones too),
        # or on the same row when that filter is gone.
        table = self.query_one("#filters", ViewTable)
        current, row = self.selected, table.cursor_row
        self.view = view
        destination = main_destination(view)
        summary = Text()
        summary.append(f"Filters of {view.context}", style="bold")
        summary.append(f" — {'✓ enabled' if view.enabled else '✗ disabled'} · ")
        if destination is None:
            summary.append("no destination yet (d on the contexts screen sets one)")
        else:
            summary.append(f"{destination.masked} {destination_status(destination)}")
        self.query_one("#summary", Static).update(summary)
        width = max(20, self.size.width - 40)
        rows = []
        for item in view.filters:
            rules = " and ".join(rule.text for rule in item.rules) or "(no rules: matches nothing)"
            cells: list[Cell] = [
                str(item.position),
                "✓ on" if item.active else "✗ off",
                plain(shorten(item.name, 30)),
                _how(item),
                plain(shorten(rules, width)),
            ]
            rows.append((str(item.id), cells))
        ids = [f.id for f in view.filters]
        table.set_rows(
            rows, cursor=ids.index(current.id) if current is not None and current.id in ids else row
        )

    @property
    def selected(self) -> FilterView | None:
        """The highlighted filter."""
        if self.view is None or not self.view.filters:
            return None
        row = self.query_one("#filters", DataTable).cursor_row
        return self.view.filters[min(max(row, 0), len(self.view.filters) - 1)]

    @property
    def selected_name(self) -> str | None:
        """The highlighted filter's name."""
        item = self.selected
        return item.name if item else None

    def _do(self, operation: Any, message: str | None = None) -> None:
        self.change(
            operation,
            done=(lambda _: self.notify(message, markup=False)) if message else None,
        )

    def action_add(self) -> None:
        """Name a new filter, then give it rules (nothing is stored until you save)."""

        def named(name: str | None) -> None:
            if not name:
                return
            context = self.context
            # Core checks the name now (free, not taken); the trial is rolled back.
            self.change(
                PreferenceCall.of(preferences.add_filter, context, name),
                trial=True,
                done=lambda _: self.app.push_screen(RulesScreen(context, name, new=True)),
            )

        self.app.push_screen(
            PromptScreen(
                f"Name of the new filter in {self.context}",
                placeholder="e.g. my packages",
                validators=[FilterNameValidator()],
                ok="Next",
            ),
            named,
        )

    @on(DataTable.RowSelected, "#filters")
    def action_edit(self) -> None:
        """Edit the highlighted filter's rules."""
        if self.selected_name:
            self.app.push_screen(RulesScreen(self.context, self.selected_name))

    def action_toggle_active(self) -> None:
        """Switch the highlighted filter on or off."""
        item = self.selected
        if item is None:
            return
        context, name, active = self.context, item.name, not item.active
        self._do(
            PreferenceCall.of(preferences.set_filter_active, context, name, active),
            f"{name} is now {'active' if active else 'inactive'}.",
        )

    def action_toggle_oneshot(self) -> None:
        """Make the highlighted filter fire once (then switch itself off), or always."""
        item = self.selected
        if item is None:
            return
        context, name, oneshot = self.context, item.name, not item.oneshot
        self._do(
            PreferenceCall.of(preferences.set_filter_oneshot, context, name, oneshot),
            f"{name} will notify {'once, then switch off' if oneshot else 'every time'}.",
        )

    def action_toggle_delivery(self) -> None:
        """Send the highlighted filter's matches at once, or in the context's digest."""
        item = self.selected
        if item is None:
            return
        context, name = self.context, item.name
        mode = "instant" if item.delivery == "digest" else "digest"
        words = "at once" if mode == "instant" else "in this context's digest (g sets when)"
        self._do(
            PreferenceCall.of(preferences.set_filter_delivery, context, name, mode),
            f"{name}: its matches travel {words}.",
        )

    def action_toggle_urgent(self) -> None:
        """Let the highlighted filter's matches through quiet hours (or not)."""
        item = self.selected
        if item is None:
            return
        context, name, urgent = self.context, item.name, not item.urgent
        self._do(
            PreferenceCall.of(preferences.set_filter_urgent, context, name, urgent),
            f"{name}: {'urgent, passes quiet hours' if urgent else 'waits out quiet hours'}.",
        )

    def action_rename(self) -> None:
        """Give the highlighted filter another name."""
        item = self.selected
        if item is None:
            return
        context, old = self.context, item.name

        def named(new: str | None) -> None:
            if not new or new == old:
                return
            self._do(
                PreferenceCall.of(preferences.rename_filter, context, old, new),
                f"Renamed {old} to {new}.",
            )

        self.app.push_screen(
            PromptScreen(
                f"New name for {old}", value=old, validators=[FilterNameValidator()], ok="Rename"
            ),
            named,
        )

    def action_move(self, delta: int) -> None:
        """Move the highlighted filter up (-1) or down (+1)."""
        item = self.selected
        if item is None or self.view is None:
            return
        position = item.position + delta
        if not 1 <= position <= len(self.view.filters):
            return
        context, name = self.context, item.name
        self._do(PreferenceCall.of(preferences.move_filter, context, name, position))

    def action_delete(self) -> None:
        """Delete the highlighted filter, after asking."""
        item = self.selected
        if item is None:
            return
        context, name, rules = self.context, item.name, len(item.rules)

        def answered(yes: bool | None) -> None:
            if yes:
                self._do(
                    PreferenceCall.of(preferences.remove_filter, context, name),
                    f"Deleted {name}.",
                )

        self.app.push_screen(
            ConfirmScreen(
                f"Delete the filter “{name}” ({count(rules, 'rule')})? This can't be undone.",
                yes="Delete",
            ),
            answered,
        )

    def action_preview(self) -> None:
        """Show the stored messages the highlighted filter matches."""
        if self.selected_name:
            self.app.push_screen(PreviewScreen(self.context, self.selected_name))

    def action_templates(self) -> None:
        """Add filters from a template."""
        self.fmn.open_templates(self.context)

    def action_back(self) -> None:
        """Back to the contexts."""
        self.dismiss(None)
