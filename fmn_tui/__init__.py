"""fmn's terminal interface: ``fmn-tui`` manages one's own notifications, over ssh.

Textual is the ``tui`` extra: this package's ``__init__`` imports none of it,
so that ``fmn-tui`` on a lean install says which extra to install instead of
failing with a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fmn_core import __version__, extras
from fmn_core.errors import MissingExtra

if TYPE_CHECKING:
    from .app import FmnApp

__all__ = ["FmnApp", "__version__", "main"]

#: Exit status when the TUI cannot start (as ``fmn_tui.cli.EXIT_SETUP``).
_EXIT_SETUP = 2


def main(argv: Sequence[str] | None = None) -> int:
    """The ``fmn-tui`` console script: the CLI, once the ``tui`` extra is known to be there."""
    try:
        extras.require("tui", program="fmn-tui")
    except MissingExtra as exc:
        print(exc, file=sys.stderr)
        return _EXIT_SETUP
    from .cli import main as run

    return run(argv)


def __getattr__(name: str) -> Any:
    # FmnApp on first use: importing it imports Textual.
    if name == "FmnApp":
        from .app import FmnApp

        return FmnApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
