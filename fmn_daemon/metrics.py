"""Process-wide counters and health state of the daemon.

One :class:`Metrics` object is created per process and handed to the consumer,
the senders and the HTTP server. Counters are plain integers behind a lock so
that the consumer thread, the delivery tasks and the HTTP handlers can share it.
"""

from __future__ import annotations

import threading
import time

__all__ = ["COUNTERS", "Metrics"]

#: The counters every daemon exports, in display order.
COUNTERS: tuple[str, ...] = (
    "messages_in",
    "messages_matched",
    "messages_malformed",
    "messages_dead",
    "messages_without_schema",
    "notifications_created",
    "notifications_sent",
    "notifications_failed",
    "notifications_dead",
    "batches",
    "ingest_pauses",
    "db_errors",
    "rows_pruned",
)


class Metrics:
    """Thread-safe counters plus readiness and liveness state.

    ``ready`` is true once the database and the broker have answered and the
    daemon is taking messages; it goes back to false when the daemon stops or
    loses the database. ``last_tick`` is the monotonic time of the main loop's
    last tick; :meth:`alive` compares it with a limit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.ready: bool = False
        self.last_tick: float = time.monotonic()
        self.started_at: float = time.time()

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (unknown names are a bug)."""
        if name not in self._counts:
            raise KeyError(f"unknown metric {name!r}")
        with self._lock:
            self._counts[name] += n

    def get(self, name: str) -> int:
        """Return the current value of one counter."""
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        """Return a copy of all counters."""
        with self._lock:
            return dict(self._counts)

    def tick(self) -> None:
        """Record that the main loop is alive."""
        self.last_tick = time.monotonic()

    def alive(self, max_age: float = 60.0) -> bool:
        """Whether the main loop ticked within the last ``max_age`` seconds."""
        return time.monotonic() - self.last_tick <= max_age

    def __repr__(self) -> str:
        return f"<Metrics ready={self.ready} {self.snapshot()}>"
