"""Waking idle senders: a sender sleeps until rows arrive, it is time to poll, or it must stop.

On PostgreSQL the consumers announce committed outbox rows
(``fmn_core.outbox.announce_new_rows``) and :class:`NewRowsListener` hears them on
one extra connection per daemon; elsewhere, or while that connection is down,
senders poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import psycopg

from fmn_core import outbox
from fmn_core.db import Database, is_postgres

__all__ = ["NewRowsListener", "sleep_until_stopped"]

log = logging.getLogger(__name__)

#: How often an idle sender listening for new rows checks whether it should stop.
_STOP_CHECK_SECONDS = 0.25
#: After the listening connection failed, poll for this long before listening again.
_LISTEN_RETRY_SECONDS = 30.0


class NewRowsListener:
    """Ends the senders' idle wait as soon as a consumer commits outbox rows (PostgreSQL).

    Consumers ``NOTIFY`` :data:`fmn_core.outbox.NEW_ROWS_CHANNEL` in the transaction
    that writes outbox rows (``outbox.announce_new_rows``), so the notification
    arrives when the rows are committed, from any process or host that shares the
    database. One extra connection per daemon listens. On SQLite, or while that
    connection can't be opened, the senders poll every ``delivery.idle_poll_seconds``
    as before; a notification is only ever a reason to look sooner.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._retry_at = 0.0
        self._enabled = is_postgres(db.engine)

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Return after ``seconds``, or sooner when rows were committed or ``stop`` is set."""
        connection = await self._connect(seconds) if self._enabled else None
        if connection is None:
            await sleep_until_stopped(stop, seconds)
            return
        deadline = time.monotonic() + seconds
        # In slices, so that ``stop`` is noticed soon without cancelling psycopg mid-read.
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            woken = False
            try:
                # Iterated to its end (``stop_after=1``): leaving it early would keep
                # psycopg's connection lock until the generator is collected.
                async for _ in connection.notifies(
                    timeout=min(left, _STOP_CHECK_SECONDS), stop_after=1
                ):
                    woken = True
            except (psycopg.Error, OSError, TypeError) as exc:
                # The listening connection broke (or psycopg < 3.2, whose notifies()
                # takes no timeout): poll for a while, then listen again.
                log.warning(
                    "delivery: stopped listening for new outbox rows (%s); polling every %.1fs",
                    exc.__class__.__name__,
                    seconds,
                )
                await self.close()
                self._retry_at = time.monotonic() + _LISTEN_RETRY_SECONDS
                await sleep_until_stopped(stop, max(0.0, deadline - time.monotonic()))
                return
            if woken:
                return

    async def _connect(self, poll_seconds: float) -> psycopg.AsyncConnection[Any] | None:
        if self._connection is not None:
            return self._connection
        if time.monotonic() < self._retry_at:
            return None
        engine = self.db.engine
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        connection = None
        try:
            connection = await psycopg.AsyncConnection.connect(*args, autocommit=True, **kwargs)
            await connection.execute(f"LISTEN {outbox.NEW_ROWS_CHANNEL}")
        except (psycopg.Error, OSError) as exc:
            if connection is not None:
                with contextlib.suppress(psycopg.Error, OSError):
                    await connection.close()
            self._retry_at = time.monotonic() + _LISTEN_RETRY_SECONDS
            log.warning(
                "delivery: cannot listen for new outbox rows (%s); polling every %.1fs",
                exc.__class__.__name__,
                poll_seconds,
            )
            return None
        self._connection = connection
        return connection

    async def close(self) -> None:
        """Close the listening connection (if any)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await connection.close()


async def sleep_until_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
