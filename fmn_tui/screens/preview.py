"""What a filter would match: the recent stored messages, before anything is saved."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Static

from fmn_core.preferences import PreviewHit

from ..display import plain, shorten, when
from ..draft import FilterEdits, Step
from ..widgets.view_table import Cell, ViewTable
from ._base import CoreScreen

__all__ = ["PreviewScreen"]

#: How many of the latest stored messages the preview looks through.
PREVIEW_LIMIT = 200


class PreviewScreen(CoreScreen[list[PreviewHit], None]):
    """The stored messages a filter matches; with a draft, as the draft would be."""

    CSS_PATH = "preview.tcss"
    HELP_TITLE = "Preview of a filter"
    AUTO_FOCUS = "#hits"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "reload", "Reload"),
        Binding("escape", "back", "Back", key_display="Esc"),
    ]

    def __init__(self, context: str, filter_name: str, steps: tuple[Step, ...] = ()) -> None:
        super().__init__()
        self.context = context
        self.filter_name = filter_name
        self.steps = steps
        self.hits: list[PreviewHit] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Looking for matching messages…", id="heading")
        yield ViewTable("Received (UTC)", "Summary", "Topic", id="hits")
        yield Footer()

    def fetch(self) -> list[PreviewHit]:
        # A rolled-back transaction (CoreScreen.load): the draft's steps are applied
        # only to preview them.
        draft = FilterEdits(self.context, self.filter_name)
        draft.steps = list(self.steps)
        return draft.preview(self.account, limit=PREVIEW_LIMIT)

    def show(self, view: list[PreviewHit]) -> None:
        self.hits = view
        heading = Text()
        heading.append(self.filter_name, style="bold")
        heading.append(" would have matched ")
        heading.append(f"{len(view)} of the latest {PREVIEW_LIMIT} stored messages", style="bold")
        if self.steps:
            heading.append(" (with your unsaved changes)")
        heading.append(".")
        if not view:
            heading.append(" Nothing matches: check the rules, or wait for more messages.")
        self.query_one("#heading", Static).update(heading)
        # The summary says most; a narrow terminal gets the start of the topic only.
        longest_topic = max((len(hit.topic) for hit in view), default=0)
        topic_width = 20 if self.size.width < 100 else min(longest_topic, 45)
        summary_width = max(24, self.size.width - 26 - topic_width)
        rows: list[tuple[str, list[Cell]]] = [
            (
                hit.message_id,
                [
                    when(hit.received_at),
                    plain(shorten(hit.summary or "—", summary_width)),
                    plain(shorten(hit.topic, topic_width)),
                ],
            )
            for hit in view
        ]
        self.query_one("#hits", ViewTable).set_rows(rows)

    def action_reload(self) -> None:
        """Look again (new messages may have arrived)."""
        self.load()

    def action_back(self) -> None:
        """Back to the filter."""
        self.dismiss(None)
