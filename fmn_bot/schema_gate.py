"""Whether the bot may use fmn's database: its schema must be the one this fmn knows.

The daemon refuses to start on a schema it can't use. The bot is a plugin in a
process that also serves other plugins, and a plugin that fails to load stays
unloaded until somebody reloads it; so the Fmn plugin loads, tells the operator
once what to do, answers fmn commands with a sentence users can act on, and holds
IRC delivery. It asks the database again (at most every :data:`RECHECK_SECONDS`)
until the schema is usable, so ``fmn-daemon db upgrade`` is all the operator has
to do; from then on it never asks again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from fmn_core.db import driver_said
from fmn_core.errors import FmnError, UserError
from fmn_core.schema import usable_schema_problem

__all__ = ["RECHECK_SECONDS", "SchemaGate", "SchemaNotReady"]

#: Fewest seconds between two looks at a schema that was not usable.
RECHECK_SECONDS = 5.0


class SchemaNotReady(UserError):
    """The database's schema is not one this fmn can use; the operator has to act."""

    def __init__(self) -> None:
        super().__init__(
            "fmn can't use its database until the fmn operators fix its schema; "
            "please try again later."
        )


class SchemaGate:
    """Whether the database's schema is usable, asked again until it is."""

    def __init__(
        self,
        engine: Engine,
        log: logging.Logger,
        *,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.log = log
        self.recheck_seconds = recheck_seconds
        #: Seconds on a monotonic scale (a test may move it on).
        self.clock = clock
        self._masked = engine.url.render_as_string(hide_password=True)
        self._lock = threading.Lock()
        self._usable = False
        #: The schema's problem at the last look (None: usable, or the database did not answer).
        self._problem: str | None = None
        #: What the operator was last told, so that a look that finds the same says nothing.
        self._told: str | None = None
        self._next_look = -math.inf

    def ready(self) -> bool:
        """Whether the schema is usable; looks again when the last look is old enough."""
        if self._usable:
            return True
        with self._lock:
            if not self._usable and self.clock() >= self._next_look:
                self.check()
        return self._usable

    def require(self) -> None:
        """Raise :class:`SchemaNotReady` while the schema is known not to be usable.

        A database that did not answer is let through: the command reports that itself.
        """
        if not self.ready() and self._problem is not None:
            raise SchemaNotReady()

    def check(self) -> bool:
        """Look at the schema now; tell the operator when what it found changed."""
        self._next_look = self.clock() + self.recheck_seconds
        try:
            found = usable_schema_problem(self.engine)
        except FmnError as exc:  # several revisions at once, the scripts missing
            self._problem = f"can't be used: {exc}"
        except SQLAlchemyError as exc:
            self._problem = None
            self._tell(
                logging.WARNING,
                f"fmn: the database {self._masked} does not answer ({driver_said(exc)}); "
                "its schema is checked again when a command arrives",
            )
            return False
        else:
            self._problem = None if found is None else str(found)
        if self._problem is not None:
            self._tell(
                logging.ERROR,
                f"fmn: the database {self._masked} {self._problem}. Until then the Fmn "
                "plugin refuses fmn commands and holds IRC delivery; it notices the fix by "
                "itself (no reload needed).",
            )
            return False
        self._usable = True
        if self._told is not None:
            self._tell(
                logging.INFO,
                f"fmn: the database {self._masked} has this fmn's schema now; fmn commands "
                "and IRC delivery resume",
            )
        return True

    def _tell(self, level: int, sentence: str) -> None:
        if sentence != self._told:
            self.log.log(level, "%s", sentence)
            self._told = sentence
