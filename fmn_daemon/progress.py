"""A one-line progress bar for the operator's long commands (``replay``, ``prune``)."""

from __future__ import annotations

import time
from typing import IO

__all__ = ["Progress"]


class Progress:
    """A one-line progress bar on a terminal (``\\r`` updates, at most 10 per second)."""

    def __init__(self, total: int, stream: IO[str], doing: str, unit: str, width: int = 30) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.doing = doing
        self.unit = unit
        self.width = width
        self._shown = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._shown < 0.1:
            return
        self._shown = now
        filled = int(self.width * min(done, self.total) / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.doing} [{bar}] {done:,}/{self.total:,} {self.unit}")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the bar, so that output to the same terminal starts on a clean line."""
        self.stream.write("\r\x1b[K")
        self.stream.flush()
        self._shown = 0.0

    def close(self, done: int) -> None:
        self.update(done, force=True)
        self.stream.write("\n")
        self.stream.flush()
