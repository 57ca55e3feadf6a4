"""The keys of the screen you are on, and the app-wide ones (F1 or ?)."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

__all__ = ["HelpScreen"]

INTRO = (
    "fmn sends you a notification when a bus message matches one of your filters. "
    "A filter is a list of rules (all must hold); a context (email, IRC, …) "
    "notifies you when any of its active filters matches."
)


class HelpScreen(ModalScreen[None]):
    """A list of keys; any of Escape, F1 or q closes it."""

    CSS_PATH = "help.tcss"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,f1,q,question_mark", "close", "Close", key_display="Esc/F1"),
    ]

    def __init__(self, title: str, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.keys = keys

    @classmethod
    def for_screen(cls, app: App[Any], screen: Screen[Any]) -> HelpScreen:
        """The help for ``screen``: every binding it has (those the footer leaves out at
        80 columns too) and the app's."""
        keys: list[tuple[str, str]] = []
        seen: set[str] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            if binding.system or not binding.description or binding.description in seen:
                continue
            seen.add(binding.description)
            keys.append((app.get_key_display(binding), binding.description))
        keys.append(("ctrl+p", "Command palette: search every action"))
        keys.append(("Tab", "Next field or list"))
        title = getattr(screen, "HELP_TITLE", "") or screen.__class__.__name__
        return cls(title, keys)

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2), expand=False)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for key, description in self.keys:
            table.add_row(Text(key), Text(description))
        with VerticalScroll(id="dialog"):
            yield Static(f"Keys — {self.title_text}", id="title", markup=False)
            yield Static(table, id="keys")
            yield Static(INTRO, id="intro", markup=False)
        yield Footer()

    def action_close(self) -> None:
        """Back to the screen below."""
        self.dismiss(None)
