"""Where the daemon's async code meets blocking code (after Starlette's ``concurrency``).

``fmn_core`` and pika are synchronous. Async code in the daemon calls them only
through these helpers, so there is one place that decides how: a worker
thread from ``asyncio.to_thread``, and for database work one transaction per
call (``with db.begin()``), opened and closed in that thread, so a Session never
crosses a thread or a task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session

from fmn_core.db import Database

__all__ = ["in_thread", "in_unit_of_work"]

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking code (``fmn_core``, pika) from async code, in a worker thread."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def in_unit_of_work(
    db: Database,
    function: Callable[Concatenate[Session, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Run ``function(session, *args, **kwargs)`` in a worker thread, in one transaction.

    The transaction commits when ``function`` returns and rolls back if it raises;
    the exception reaches the caller.
    """

    def unit() -> T:
        with db.begin() as session:
            return function(session, *args, **kwargs)

    return await asyncio.to_thread(unit)
