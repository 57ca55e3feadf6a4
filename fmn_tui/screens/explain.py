"""Why a message came, or why not: the core's explanation, in the core's words."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from fmn_core import preferences
from fmn_core.explain import Explanation
from fmn_core.gateway import PreferenceCall
from fmn_core.wording import explanation_lines

from ._base import CoreScreen

__all__ = ["ExplainScreen"]


class ExplainScreen(CoreScreen[Explanation, None]):
    """One message explained context by context (the bot's ``fmn why`` says the same)."""

    CSS_PATH = "explain.tcss"
    HELP_TITLE = "Why did (or didn't) I get this?"
    AUTO_FOCUS = "#explanation"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "reload", "Reload"),
        Binding("escape", "back", "Back", key_display="Esc"),
    ]

    def __init__(self, message: str) -> None:
        super().__init__()
        #: A message id, or a datagrepper link to one (core reads either).
        self.message = message
        self.explanation: Explanation | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="explanation"):
            yield Static("Looking the message up…", id="lines", markup=False)
        yield Footer()

    def fetch(self) -> Explanation:
        found: Explanation = self.account.read(PreferenceCall.of(preferences.explain, self.message))
        return found

    def show(self, view: Explanation) -> None:
        self.explanation = view
        lines = explanation_lines(view)
        text = Text()
        text.append(lines[0], style="bold")
        for line in lines[1:]:
            text.append("\n" + line, style="" if line.startswith("  ") else "bold")
        self.query_one("#lines", Static).update(text)

    def action_reload(self) -> None:
        """Explain again (after changing a filter, say)."""
        self.load()

    def action_back(self) -> None:
        """Back to where it was opened from."""
        self.dismiss(None)
