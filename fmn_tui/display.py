"""How views are written on screen, so that nothing depends on colour.

Every state has a word or a mark ("✓ on", "✗ off", "… pending"), so the app reads
the same in a monochrome terminal (``NO_COLOR``). Text that came from a user or a
bus message is wrapped in :func:`plain` so that brackets in it are never markup.
"""

from __future__ import annotations

import datetime as dt

from rich.text import Text

from fmn_core.preferences import ContextView, DestinationView

__all__ = [
    "OFF",
    "ON",
    "destination_status",
    "main_destination",
    "plain",
    "shorten",
    "when",
]

ON = "✓ on"
OFF = "✗ off"


def plain(text: object, style: str = "") -> Text:
    """Text shown as it is: no markup, whatever it contains."""
    return Text(str(text), style=style, no_wrap=True, overflow="ellipsis")


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, with an ellipsis when it was longer."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def when(moment: dt.datetime | None) -> str:
    """A timestamp as the user reads it: UTC, to the minute."""
    if moment is None:
        return "—"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")


def destination_status(destination: DestinationView | None) -> str:
    """Whether a destination can be used: confirmed, pending, or missing."""
    if destination is None:
        return "— none"
    if destination.confirmed:
        return "✓ confirmed"
    if destination.pending:
        return "… pending"
    return "✗ unconfirmed"


def main_destination(view: ContextView) -> DestinationView | None:
    """The destination that best describes a context: a confirmed one, else the newest."""
    confirmed = [d for d in view.destinations if d.confirmed]
    if confirmed:
        return confirmed[0]
    return view.destinations[-1] if view.destinations else None
