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
    """Ends the senders' wait as soon as a consumer commits outbox rows (PostgreSQL).

    Consumers ``NOTIFY`` :data:`fmn_core.outbox.NEW_ROWS_CHANNEL` in the transaction
    that writes outbox rows (``outbox.announce_new_rows``), so the notification
    arrives when the rows are committed, from any process or host that shares the
    database. One extra connection per daemon listens, in a task of its own, so a
    notification that arrives while the senders are busy claiming or sending is
    kept (:meth:`wait` then returns at once) instead of missed. On SQLite, or while
    that connection can't be opened, the senders poll every
    ``delivery.idle_poll_seconds`` as before; a notification is only ever a reason
    to look sooner.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._retry_at = 0.0
        self._enabled = is_postgres(db.engine)
        self._listener: asyncio.Task[None] | None = None
        self._woken: asyncio.Event | None = None
        self._closing = False

    @property
    def listening(self) -> bool:
        """Whether committed rows are announced now (else only polling finds them)."""
        return (
            self._listener is not None
            and not self._listener.done()
            and self._connection is not None
        )

    async def wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Return after ``seconds``, or sooner when rows were committed or ``stop`` is set.

        Rows committed since the last ``wait`` returned count: then it returns at once.
        Whoever sets ``stop`` while a wait is on calls :meth:`interrupt` too (else the
        wait lasts its ``seconds`` when listening).
        """
        woken = self._start(seconds)
        if woken is None:
            await sleep_until_stopped(stop, seconds)
            return
        if not woken.is_set() and not stop.is_set():
            # Awaited directly, no task per wait: whoever sets ``stop`` also calls
            # ``interrupt`` (the senders' stop watcher), which sets ``woken``.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await woken.wait()
        # Cleared before the caller claims: rows announced from here on wake the next wait.
        woken.clear()

    def interrupt(self) -> None:
        """End the current (or next) :meth:`wait` now: the caller is stopping."""
        if self._woken is not None:
            self._woken.set()

    def _start(self, poll_seconds: float) -> asyncio.Event | None:
        if not self._enabled or self._closing:
            return None
        if self._listener is None or self._listener.done():
            if time.monotonic() < self._retry_at:
                return None
            self._woken = asyncio.Event()
            self._listener = asyncio.create_task(
                self._listen(self._woken, poll_seconds), name="delivery-listen"
            )
        return self._woken

    async def _listen(self, woken: asyncio.Event, poll_seconds: float) -> None:
        connection = await self._connect(poll_seconds)
        if connection is None:
            return
        # Until closed: each notification sets ``woken``. In slices, so that closing
        # is noticed soon without cancelling psycopg mid-read.
        try:
            while not self._closing:
                # Iterated to its end (``stop_after``/``timeout``): leaving it early
                # would keep psycopg's connection lock until the generator is collected.
                async for _ in connection.notifies(timeout=_STOP_CHECK_SECONDS, stop_after=1):
                    woken.set()
        except (psycopg.Error, OSError, TypeError) as exc:
            # The listening connection broke (or psycopg < 3.2, whose notifies()
            # takes no timeout): poll for a while, then listen again.
            log.warning(
                "delivery: stopped listening for new outbox rows (%s); polling every %.1fs",
                exc.__class__.__name__,
                poll_seconds,
            )
            self._retry_at = time.monotonic() + _LISTEN_RETRY_SECONDS
            woken.set()  # the waiting sender falls back to polling at once
        finally:
            await self._disconnect()

    async def _connect(self, poll_seconds: float) -> psycopg.AsyncConnection[Any] | None:
        if self._connection is not None:
            return self._connection
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

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await connection.close()

    async def close(self) -> None:
        """Stop listening and close the listening connection (if any)."""
        self._closing = True
        listener, self._listener = self._listener, None
        if listener is not None:
            # It notices ``_closing`` within one slice of listening.
            await asyncio.gather(listener, return_exceptions=True)
        await self._disconnect()
        self._closing = False


async def sleep_until_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
