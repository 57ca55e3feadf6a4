"""A filter's rules: add from the catalog, negate, remove; preview; then save.

Changes here are a draft (see :mod:`fmn_tui.draft`): each one is checked by core
at once, in a transaction that is rolled back, and nothing is stored until the
user saves. The preview shows what the filter *as drafted* would have matched.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import get_current_worker

from fmn_core.errors import UserError
from fmn_core.gateway import PreferenceCall
from fmn_core.preferences import FilterView, RuleView
from fmn_core.wording import count

from ..display import plain
from ..draft import FilterEdits, Step
from ..widgets.view_table import Cell, ViewTable
from ._base import CoreScreen, HoldsEdits
from .add_rule import RuleChoice, RulePickerScreen
from .preview import PreviewScreen

__all__ = ["RulesScreen"]


class RulesScreen(HoldsEdits, CoreScreen[FilterView, None]):
    """One filter's rules (all must match for the filter to match)."""

    CSS_PATH = "rules.tcss"
    HELP_TITLE = "Rules of a filter"
    AUTO_FOCUS = "#rules"
    DISCARD_YES = "Discard"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add", "Add rule"),
        Binding("n", "negate", "Negate"),
        Binding("x,delete", "remove", "Remove", key_display="x"),
        Binding("p", "preview", "Preview", show=False),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+z", "undo", "Undo", show=False),
        Binding("escape", "back", "Back", key_display="Esc"),
    ]

    def __init__(self, context: str, name: str, *, new: bool = False) -> None:
        super().__init__()
        self.context = context
        self.filter_name = name
        self.draft = FilterEdits(context, name, new=new)
        self.view: FilterView | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="heading")
        yield Static("", id="state")
        yield ViewTable("#", "Rule", "Meaning", id="rules")
        yield Static(
            "All rules must hold for the filter to match; a negated rule (not …) must not.",
            id="hint",
            markup=False,
        )
        yield Footer()

    def fetch(self) -> FilterView:
        # A rolled-back transaction (see CoreScreen.load): the draft is shown, never stored.
        return self.draft.replay(self.account)

    def show(self, view: FilterView) -> None:
        self.view = view
        heading = Text()
        heading.append("Rules of ", style="bold")
        heading.append(view.name, style="bold")
        heading.append(f" in {view.context} — {'✓ active' if view.active else '✗ inactive'}")
        if view.oneshot:
            heading.append(", fires once")
        self.query_one("#heading", Static).update(heading)
        self._show_state()
        table = self.query_one("#rules", ViewTable)
        rows: list[tuple[str, list[Cell]]] = [
            (
                str(rule.number),
                [
                    str(rule.number),
                    plain(rule.text),
                    plain(f"NOT: {rule.title}" if rule.negated else rule.title),
                ],
            )
            for rule in view.rules
        ]
        table.set_rows(rows, cursor=table.cursor_row)

    def _show_state(self) -> None:
        if self.draft.is_new:
            message = "● New filter, not saved yet: ctrl+s saves it, p previews it."
        elif self.draft.dirty:
            message = (
                f"● {count(len(self.draft.steps), 'unsaved change')}: "
                "ctrl+s saves, ctrl+z undoes, p previews."
            )
        else:
            message = "✓ Saved."
        if self.view is not None and not self.view.rules:
            message += " No rules yet: press a to add one."
        state = self.query_one("#state", Static)
        state.update(message)
        state.set_class(self.draft.dirty, "unsaved")

    @property
    def selected(self) -> RuleView | None:
        """The highlighted rule."""
        if self.view is None or not self.view.rules:
            return None
        row = self.query_one("#rules", DataTable).cursor_row
        return self.view.rules[min(max(row, 0), len(self.view.rules) - 1)]

    def _try(self, step: Step) -> None:
        """Check the draft with its new step; core refusing it drops the step."""

        def refused(error: UserError) -> bool:
            self.draft.discard(step)
            self._show_state()
            return False  # and let the app show core's sentence

        self.change(
            *self.draft.replay_calls(),
            trial=True,
            done=self.show,
            failed=refused,
        )

    def action_add(self) -> None:
        """Pick a rule from the catalog and fill in its parameters."""

        def chosen(choice: RuleChoice | None) -> None:
            if choice is not None:
                self._try(self.draft.add_rule(choice.rule, choice.arguments, choice.negated))

        self.app.push_screen(RulePickerScreen(self.filter_name), chosen)

    def action_negate(self) -> None:
        """Turn the highlighted rule into its opposite (or back)."""
        rule = self.selected
        if rule is not None:
            self._try(self.draft.set_negated(rule.number, not rule.negated))

    def action_remove(self) -> None:
        """Remove the highlighted rule (ctrl+z brings it back until you save)."""
        rule = self.selected
        if rule is not None:
            self._try(self.draft.remove_rule(rule.number))

    def action_undo(self) -> None:
        """Forget the last unsaved change."""
        if self.draft.undo() is not None:
            self.load()
        else:
            self.notify("Nothing to undo.")

    def action_preview(self) -> None:
        """Show the stored messages the filter, as drafted, matches."""
        self.app.push_screen(PreviewScreen(self.context, self.filter_name, tuple(self.draft.steps)))

    def action_save(self) -> None:
        """Store the draft."""
        if not self.draft.dirty:
            self.notify("Nothing to save.")
            return
        self.fmn.saving_started()
        self.save(tuple(self.draft.steps))

    @work(thread=True, group="change")
    def save(self, steps: tuple[Step, ...]) -> None:
        """Replay the draft's steps and commit them, as one unit of work (a refused or
        busy save keeps the whole draft, to save again)."""
        worker = get_current_worker()
        try:
            try:
                calls = [*self.draft.calls(steps), self.fetch_saved()]
                view: FilterView = self.account.run(calls)[-1]
            finally:
                self.fmn.answered_from_thread()
        except Exception as error:
            if not worker.is_cancelled:
                self.app.call_from_thread(self.fmn.report, error)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._saved, steps, view)

    def fetch_saved(self) -> PreferenceCall:
        """Reading the filter as stored (after the saved steps)."""
        return FilterEdits(self.context, self.filter_name).replay_calls()[-1]

    def _saved(self, steps: tuple[Step, ...], view: FilterView) -> None:
        self.draft.saved(steps)
        self.notify(f"Saved {view.name}.", markup=False)
        if self.is_mounted:
            self.show(view)

    @property
    def unsaved(self) -> bool:
        """Whether the draft holds changes not saved yet."""
        return self.draft.dirty

    def discard_question(self) -> str:
        """A new filter is lost whole; an old one keeps what was saved."""
        if self.draft.is_new:
            return f"Discard the new filter {self.filter_name}? It has not been saved."
        return f"Discard your unsaved changes to {self.filter_name}?"

    def action_back(self) -> None:
        """Back to the filters; unsaved changes are discarded only if you say so."""
        self.leave()
