"""Where the daemon's async code meets blocking code (after Starlette's ``concurrency``).

``fmn_core`` and pika are synchronous. Async code in the daemon calls them only
through these helpers, so there is one place that decides how: a worker
thread from ``asyncio.to_thread`` (or from a pool of the caller's own, ``in_pool``),
and for database work one transaction per
call (``with db.begin()``), opened and closed in that thread, so a Session never
crosses a thread or a task.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session

from fmn_core.db import Database

__all__ = ["in_pool", "in_thread", "in_unit_of_work"]

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking code (``fmn_core``, pika) from async code, in a worker thread."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def in_pool(
    executor: Executor, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """As :func:`in_thread`, on ``executor``'s threads instead of the event loop's shared ones.

    For work that holds its threads for long (a send waits for a server's replies):
    it can then neither wait behind, nor hold up, the short database work queued
    on the shared threads.
    """
    context = contextvars.copy_context()
    call = functools.partial(context.run, function, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor, call)


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
