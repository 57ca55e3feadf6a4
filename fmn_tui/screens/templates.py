"""Starting profiles: clone a template's filters into a context."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from fmn_core import preferences
from fmn_core.gateway import PreferenceCall
from fmn_core.preferences import FilterView, TemplateView
from fmn_core.wording import count

from ._base import CoreScreen
from .confirm import ConfirmScreen

__all__ = ["TemplatesScreen"]


def _rule_text(rule: dict[str, Any]) -> str:
    arguments = " ".join(f"{k}={v}" for k, v in sorted(dict(rule.get("args") or {}).items()))
    words = ("not" if rule.get("negated") else "", str(rule.get("rule", "")), arguments)
    return " ".join(word for word in words if word)


def describe_template(template: TemplateView) -> Text:
    """A template's description and its filters, rule by rule."""
    text = Text()
    text.append(template.title, style="bold")
    text.append(f"  ({template.name})\n")
    text.append(template.description + "\n")
    for item in template.filters:
        text.append(f"\n• {item.get('name', '')}\n", style="bold")
        for rule in item.get("rules", ()):
            text.append(f"    {_rule_text(rule)}\n")
    return text


class TemplatesScreen(CoreScreen[list[TemplateView], None]):
    """The templates on offer; Enter adds the highlighted one's filters to the context."""

    CSS_PATH = "templates.tcss"
    HELP_TITLE = "Templates"
    AUTO_FOCUS = "#templates"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("u", "use", "Use template", key_display="u/⏎"),
        Binding("escape", "back", "Back", key_display="Esc"),
    ]

    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context
        self.templates: list[TemplateView] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            f"Add a template's filters to {self.context} (your own filters stay as they are).",
            id="heading",
            markup=False,
        )
        yield OptionList(id="templates")
        with VerticalScroll(id="about-box"):
            yield Static("", id="about")
        yield Footer()

    def fetch(self) -> list[TemplateView]:
        templates: list[TemplateView] = self.account.read(
            PreferenceCall.of(preferences.list_templates)
        )
        return templates

    def show(self, view: list[TemplateView]) -> None:
        self.templates = view
        options = self.query_one("#templates", OptionList)
        index = options.highlighted or 0
        options.set_options(
            Option(
                Text.assemble((t.title, "bold"), f"  {count(len(t.filters), 'filter')}"), id=t.name
            )
            for t in view
        )
        if view:
            options.highlighted = min(index, len(view) - 1)
        self._describe()

    @property
    def selected(self) -> TemplateView | None:
        """The highlighted template."""
        index = self.query_one("#templates", OptionList).highlighted
        return self.templates[index] if index is not None and index < len(self.templates) else None

    @on(OptionList.OptionHighlighted, "#templates")
    def _describe(self) -> None:
        template = self.selected
        about = describe_template(template) if template else Text("No templates on offer.")
        self.query_one("#about", Static).update(about)

    @on(OptionList.OptionSelected, "#templates")
    def action_use(self) -> None:
        """Add the highlighted template's filters, after asking."""
        template = self.selected
        if template is None:
            return
        context, name, count = self.context, template.name, len(template.filters)

        def answered(yes: bool | None) -> None:
            if not yes:
                return

            def done(filters: list[FilterView]) -> None:
                self.notify(
                    f"Added {count} filters from {template.title} to {context}.", markup=False
                )
                self.dismiss(None)

            self.change(
                PreferenceCall.of(preferences.use_template, name, context),
                done=done,
            )

        self.app.push_screen(
            ConfirmScreen(
                f"Add the {count} filters of the template {template.title} to {context}?",
                yes="Add",
            ),
            answered,
        )

    def action_back(self) -> None:
        """Back, adding nothing."""
        self.dismiss(None)
