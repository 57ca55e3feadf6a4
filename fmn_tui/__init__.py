"""fmn's terminal interface: ``fmn-tui`` manages one's own notifications, over ssh."""

from __future__ import annotations

from .app import FmnApp

__all__ = ["FmnApp"]
