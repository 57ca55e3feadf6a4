"""Warnings for events that can recur without end, logged once an interval with a count.

An event an outsider can repeat at will (a refused connection, a malformed request,
an accept that fails for want of descriptors) logged once each would fill the
journal, and past journald's limit for a service (10,000 lines in 30 s) the
service's other lines are dropped too. The HTTP surface (``fmn_daemon.limits``) and
the preference gateway (``fmn_daemon.gateway``) log such events through
:class:`RateLimitedLog`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RateLimitedLog"]

log = logging.getLogger(__name__)


class RateLimitedLog:
    """One warning per interval for a recurring event, with how many were not logged.

    Not thread-safe: a caller that counts from several threads holds a lock around
    ``event``. ``logger`` is the one the lines go to: the caller's, so that a line
    reads as the part's that logged it.
    """

    def __init__(
        self,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.total = 0
        self.logger = logger if logger is not None else log
        self._unlogged = 0
        #: When the last line was logged (``clock``), ``None`` before the first.
        self.last_logged: float | None = None

    def event(self, message: str, *args: Any) -> bool:
        """Count one event; log it (with the count held back) if the interval has passed."""
        self.total += 1
        now = self.clock()
        if self.last_logged is not None and now - self.last_logged < self.interval:
            self._unlogged += 1
            return False
        held, self._unlogged, self.last_logged = self._unlogged, 0, now
        self.logger.warning(
            message + " (%d more since the last such line, %d in all)", *args, held, self.total
        )
        return True
