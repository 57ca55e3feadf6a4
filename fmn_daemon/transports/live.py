"""The live feed: notifications pushed to connected web and desktop clients.

A ``live`` destination is a secret token. Clients connect to
``/live/ws/<token>`` (WebSocket) or ``/live/sse/<token>`` (Server-Sent Events)
and get each notification as JSON ``{id, topic, summary, url, app, filter,
created}``. :class:`LiveHub` fans notifications out to this process's
connected clients; the HTTP endpoint also polls the database for ``live``
rows another daemon sent, so a client sees everything whichever daemon it is
connected to.

When no client is connected the notification is still marked sent: live means
live. What was missed stays visible in the user's recent notifications, and a
client that reconnects with ``?since=<id>`` (or SSE ``Last-Event-ID``) gets the
ones it missed from the database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fmn_core.destinations import check_feed_token, mask_address
from fmn_core.errors import InvalidDestination
from fmn_core.feeds import Position, SentEntry
from fmn_core.models import utcnow
from fmn_core.rendering import Rendered

from . import TransportRefused

__all__ = [
    "LIVE_POLL_SECONDS",
    "LiveHub",
    "LiveStream",
    "LiveTransport",
    "Subscription",
    "live_event",
]

log = logging.getLogger(__name__)

#: How often a live client's connection looks for rows other daemons sent.
LIVE_POLL_SECONDS = 2.0


class Subscription:
    """One connected client: a bounded queue of JSON events."""

    def __init__(self, token: str, size: int) -> None:
        self.token = token
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, event: dict[str, Any]) -> None:
        """Queue an event; a client that can't keep up loses its oldest ones."""
        while self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    def __repr__(self) -> str:
        return f"Subscription({mask_address('live', self.token)!r})"


class LiveHub:
    """Per-token subscribers of this process. Use from the event loop's thread only."""

    def __init__(self, queue_size: int = 200) -> None:
        self.queue_size = queue_size
        self._subscribers: dict[str, set[Subscription]] = {}

    @contextmanager
    def subscribe(self, token: str) -> Iterator[Subscription]:
        """Register a client for ``token`` for the duration of the ``with`` block."""
        subscription = Subscription(token, self.queue_size)
        self._subscribers.setdefault(token, set()).add(subscription)
        try:
            yield subscription
        finally:
            remaining = self._subscribers.get(token)
            if remaining is not None:
                remaining.discard(subscription)
                if not remaining:
                    del self._subscribers[token]

    def subscribers(self, token: str | None = None) -> int:
        """How many clients are connected (for ``token``, or in total)."""
        if token is not None:
            return len(self._subscribers.get(token, ()))
        return sum(len(s) for s in self._subscribers.values())

    def publish(self, token: str, events: list[dict[str, Any]]) -> int:
        """Hand events to every client of ``token``; returns how many clients got them."""
        subscriptions = list(self._subscribers.get(token, ()))
        for subscription in subscriptions:
            for event in events:
                subscription.offer(event)
        return len(subscriptions)


class LiveTransport:
    """Delivers ``live`` notifications to the hub (sent even with nobody listening)."""

    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub

    async def send(self, destination: str, rendered: Rendered) -> None:
        """Publish the rendered entries to ``destination``'s clients."""
        try:
            check_feed_token(destination)
        except InvalidDestination as exc:
            raise TransportRefused(str(exc)) from None
        reached = self.hub.publish(destination, [e.as_json() for e in rendered.entries])
        log.debug(
            "live %s: %d entries to %d clients",
            mask_address("live", destination),
            len(rendered.entries),
            reached,
        )


def live_event(entry: SentEntry) -> dict[str, Any]:
    """A sent notification as the live feed's JSON object (from stored display columns)."""
    return {
        "id": entry.id,
        "message_id": entry.message_id,
        "topic": entry.topic,
        "summary": entry.summary,
        "url": entry.url,
        "app": entry.app,
        "filter": entry.filter_name,
        "created": entry.created_at.isoformat(),
    }


_END: dict[str, Any] = {"_end": True}

#: Reads a client's sent rows after a place in send order, oldest first, at most
#: ``page_size`` of them: ``read(after=…, above_id=…)``, or ``read(position_of=id)``
#: for the rows after that sent row (and its place, None when it has none). None
#: when the client's token was taken away.
EntryReader = Callable[..., Awaitable[tuple[list[SentEntry], Position | None] | None]]


class LiveStream:
    """One live client: events from the hub, the database's catch-up, no repeats.

    ``read`` fetches the client's sent ``live`` rows (the HTTP endpoint binds it
    to the user); ``streams`` is the server's set of open streams, so a stopping
    server can end them all.
    """

    def __init__(
        self,
        hub: LiveHub,
        read: EntryReader,
        token: str,
        since: int | None,
        streams: set[LiveStream],
        *,
        page_size: int = 50,
    ) -> None:
        self.hub = hub
        self.read = read
        self.token = token
        self.since = since
        self.streams = streams
        self.page_size = page_size
        #: Ids sent to this client, oldest first (a dict keeps their order).
        self.seen: dict[int, None] = {}
        self.connected_at = utcnow()
        # Polls look for rows sent from a little before the last one seen: clocks
        # of several daemons differ, and a row's sent_at precedes its commit.
        self.poll_from = self.connected_at - dt.timedelta(seconds=LIVE_POLL_SECONDS * 2)
        #: The client's place in send order when it came back with ``since``: it had
        #: every row up to there, so the polls' look back must not send them again.
        self.floor: Position | None = None
        #: ``since`` when its row is gone: the client had the rows up to that id.
        self.above_id: int | None = None
        self.closed = False
        #: The token stopped being the user's while the client was connected.
        self.revoked = False
        self._subscription: Subscription | None = None

    def close(self) -> None:
        """End :meth:`events` now (the client left, or the server is stopping)."""
        self.closed = True
        if self._subscription is not None:
            self._subscription.offer(_END)

    async def _read(self, **kwargs: Any) -> list[SentEntry]:
        found = await self.read(**kwargs)
        if found is None:
            log.info("live: ended a client whose token was removed")
            self.revoked = True
            self.close()
            return []
        entries, position = found
        if "position_of" in kwargs:
            self.floor = position
        if entries:
            newest = max(e.sent_at for e in entries)
            self.poll_from = max(
                self.poll_from, newest - dt.timedelta(seconds=LIVE_POLL_SECONDS * 2)
            )
        return entries

    async def _pages(self, **first: Any) -> AsyncGenerator[list[SentEntry], None]:
        """Every row after a place, a page at a time: a client away for a while may
        have missed more than a page, and the rest must follow."""
        above_id = first.get("above_id")
        entries = await self._read(**first)
        while entries:
            yield entries
            if len(entries) < self.page_size or self.closed:
                return
            last = entries[-1]
            entries = await self._read(after=(last.sent_at, last.id), above_id=above_id)

    def _after_floor(self, entry: SentEntry) -> bool:
        """Whether the client can lack ``entry``: it was sent after the client's place."""
        if self.floor is not None and (entry.sent_at, entry.id) <= self.floor:
            return False
        return not (
            self.above_id is not None
            and entry.id <= self.above_id
            and entry.sent_at <= self.connected_at
        )

    def _fresh(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fresh = []
        for event in events:
            if event["id"] not in self.seen:
                self.seen[event["id"]] = None
                fresh.append(event)
        if len(self.seen) > 10_000:
            # Forget the longest sent, not the lowest ids: a late low id (a digest)
            # is as likely as any to come back in the polls' look back.
            self.seen = dict.fromkeys(list(self.seen)[-5_000:])
        return fresh

    async def _catch_up(self, since: int) -> AsyncGenerator[list[dict[str, Any]], None]:
        """What was sent after the client's row ``since``, in the order it was sent."""
        first: dict[str, Any] = {"position_of": since}
        async for page in self._pages(**first):
            yield self._fresh([live_event(e) for e in page])
        if self.floor is None and not self.closed:
            # Its row is gone (pruned, or pushed from the hub before its commit):
            # the rows with higher ids, as a client without a place expects.
            self.above_id = since
            async for page in self._pages(above_id=since):
                yield self._fresh([live_event(e) for e in page])

    async def events(self) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Batches of new events until closed; an empty batch is a quiet interval."""
        loop = asyncio.get_running_loop()
        with self.hub.subscribe(self.token) as subscription:
            self._subscription = subscription
            self.streams.add(self)
            try:
                if self.since is not None:
                    async for caught_up in self._catch_up(self.since):
                        if self.closed:
                            return
                        yield caught_up
                    if self.closed:
                        return
                last_poll = loop.time()
                while not self.closed:
                    try:
                        first = await asyncio.wait_for(subscription.queue.get(), LIVE_POLL_SECONDS)
                    except TimeoutError:
                        first = None
                    batch = [] if first is None else [first]
                    while not subscription.queue.empty():
                        batch.append(subscription.queue.get_nowait())
                    if self.closed or any(event is _END for event in batch):
                        return
                    if loop.time() - last_poll >= LIVE_POLL_SECONDS:
                        last_poll = loop.time()
                        # Rows other daemons sent to this user meanwhile (and those a
                        # full queue dropped); and whether the token is still theirs.
                        async for page in self._pages(after=(self.poll_from, 0)):
                            batch += [live_event(e) for e in page if self._after_floor(e)]
                        if self.revoked:
                            return
                    yield self._fresh(batch)
            finally:
                self.streams.discard(self)
                self._subscription = None
