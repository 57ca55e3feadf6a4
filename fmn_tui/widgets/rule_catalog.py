"""Searching the rule catalog: a search box, the matching rules, the highlighted one's help."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from fmn_core.rules import RuleSpec

__all__ = ["RuleCatalog", "describe_rule"]


def describe_rule(spec: RuleSpec) -> Text:
    """A rule's title, name, help and parameters, as the picker shows them."""
    text = Text()
    text.append(spec.title, style="bold")
    text.append(f"  ({spec.name})\n")
    text.append(spec.help + "\n")
    if not spec.parameters:
        text.append("Takes no parameters.", style="italic")
    for parameter in spec.parameters:
        text.append(f"• {parameter.name}", style="bold")
        text.append(f": {parameter.help}")
        if parameter.choices:
            text.append(f" ({', '.join(parameter.choices)})")
        if not parameter.required:
            text.append(" — optional")
        text.append("\n")
    return text


class RuleCatalog(Vertical):
    """The catalog picker. The screen does the searching; this widget only shows and asks."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down", "cursor(1)", "Next rule", show=False),
        Binding("up", "cursor(-1)", "Previous rule", show=False),
    ]

    class SearchChanged(Message):
        """The user typed in the search box."""

        def __init__(self, words: str) -> None:
            super().__init__()
            self.words = words

    class Chosen(Message):
        """The user picked a rule."""

        def __init__(self, spec: RuleSpec) -> None:
            super().__init__()
            self.spec = spec

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.specs: list[RuleSpec] = []

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search: type words (e.g. package), ↑↓ to pick, Enter", id="search")
        yield OptionList(id="matches")
        with VerticalScroll(id="rule-help-box"):
            yield Static("", id="rule-help")

    def show_rules(self, specs: list[RuleSpec]) -> None:
        """List these rules (the search results), highlighting the first."""
        self.specs = specs
        matches = self.query_one("#matches", OptionList)
        matches.set_options(
            Option(Text.assemble((spec.title, "bold"), f"  {spec.name}"), id=spec.name)
            for spec in specs
        )
        matches.highlighted = 0 if specs else None
        self._show_help()

    @property
    def highlighted(self) -> RuleSpec | None:
        """The rule under the cursor."""
        index = self.query_one("#matches", OptionList).highlighted
        return self.specs[index] if index is not None and index < len(self.specs) else None

    def action_cursor(self, delta: int) -> None:
        """Move the highlight while typing in the search box."""
        matches = self.query_one("#matches", OptionList)
        if not self.specs:
            return
        index = matches.highlighted or 0
        matches.highlighted = min(max(index + delta, 0), len(self.specs) - 1)

    @on(Input.Changed, "#search")
    def _search(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.SearchChanged(event.value))

    @on(Input.Submitted, "#search")
    def _submit(self, event: Input.Submitted) -> None:
        event.stop()
        spec = self.highlighted
        if spec is not None:
            self.post_message(self.Chosen(spec))

    @on(OptionList.OptionSelected, "#matches")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        spec = self.highlighted
        if spec is not None:
            self.post_message(self.Chosen(spec))

    @on(OptionList.OptionHighlighted, "#matches")
    def _show_help(self) -> None:
        spec = self.highlighted
        help_text = describe_rule(spec) if spec else Text("No rule matches these words.")
        self.query_one("#rule-help", Static).update(help_text)
