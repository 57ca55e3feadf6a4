"""Adding a rule: pick it from the searchable catalog, then fill in its parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Checkbox, Footer, Header, Static

from fmn_core.errors import InvalidArgument
from fmn_core.filters import stored_rule_name
from fmn_core.rules import RuleSpec

from ..widgets.parameter_form import ParameterForm
from ..widgets.rule_catalog import RuleCatalog, describe_rule
from ._base import HoldsEdits

if TYPE_CHECKING:
    from ..app import FmnApp

__all__ = ["RuleChoice", "RuleFormScreen", "RulePickerScreen"]


@dataclass(frozen=True)
class RuleChoice:
    """A rule the user chose, with arguments core has already checked."""

    rule: str
    arguments: dict[str, Any] = field(default_factory=dict)
    negated: bool = False


class RulePickerScreen(Screen[RuleChoice | None]):
    """Search the catalog; Enter on a rule asks for its parameters."""

    CSS_PATH = "add_rule.tcss"
    HELP_TITLE = "Add a rule: pick one"
    AUTO_FOCUS = "#search"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", key_display="Esc"),
    ]

    def __init__(self, filter_name: str) -> None:
        super().__init__()
        self.filter_name = filter_name

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Add a rule to {self.filter_name}", id="heading", markup=False)
        yield RuleCatalog(id="catalog")
        yield Footer()

    def on_mount(self) -> None:
        """Start with the whole catalog."""
        self._search("")

    def _search(self, words: str) -> None:
        catalog = cast("FmnApp", self.app).catalog
        self.query_one(RuleCatalog).show_rules(catalog.search(words))

    def on_rule_catalog_search_changed(self, event: RuleCatalog.SearchChanged) -> None:
        """Narrow the list to the rules matching every word."""
        self._search(event.words)

    def on_rule_catalog_chosen(self, event: RuleCatalog.Chosen) -> None:
        """Ask for the chosen rule's parameters; pass the result back."""

        def filled(choice: RuleChoice | None) -> None:
            if choice is not None:
                self.dismiss(choice)

        self.app.push_screen(RuleFormScreen(event.spec), filled)

    def action_cancel(self) -> None:
        """Back to the filter without a new rule."""
        self.dismiss(None)


class RuleFormScreen(HoldsEdits, Screen[RuleChoice | None]):
    """The chosen rule's parameters, each checked by core as it is typed."""

    CSS_PATH = "add_rule.tcss"
    HELP_TITLE = "Add a rule: its parameters"
    EDIT_FIELDS = "ParameterForm Input"
    DISCARD_QUESTION = "Leave this rule without adding it? The values you typed are lost."

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Add rule"),
        Binding("escape", "cancel", "Back", key_display="Esc"),
    ]

    def __init__(self, spec: RuleSpec) -> None:
        super().__init__()
        self.spec = spec

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="form-box"):
            yield Static(describe_rule(self.spec), id="rule-summary")
            yield ParameterForm(self.spec, id="form")
        yield Footer()

    def on_mount(self) -> None:
        """Start in the first field (the defaults it shows are not the user's typing)."""
        self.mark_saved()
        inputs = self.query("ParameterForm Input")
        if inputs:
            inputs.first().focus()
        else:
            self.query_one("#negate").focus()

    def action_submit(self) -> None:
        """Check every field and add the rule."""
        self.query_one(ParameterForm).submit()

    def on_parameter_form_submitted(self, event: ParameterForm.Submitted) -> None:
        """Core checks the arguments as a whole; a refusal shows under its field."""
        form = self.query_one(ParameterForm)
        try:
            arguments = self.spec.validate(event.arguments)
        except InvalidArgument as error:
            form.show_error(error.argument or "", str(error))
            return
        rule = stored_rule_name(self.spec, cast("FmnApp", self.app).catalog)
        self.dismiss(RuleChoice(rule, arguments, event.negated))

    @property
    def unsaved(self) -> bool:
        """Whether a value was typed, or the rule negated, and not added yet."""
        return self.fields_changed() or self.query_one("#negate", Checkbox).value

    def on_parameter_form_cancelled(self) -> None:
        """Back to the catalog (the Cancel button says so plainly)."""
        self.dismiss(None)

    def action_cancel(self) -> None:
        """Back to the catalog; asks first when a value was typed."""
        self.leave(None)
