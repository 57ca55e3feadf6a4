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
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fmn_core.destinations import check_feed_token, mask_address
from fmn_core.errors import InvalidDestination
from fmn_core.rendering import Rendered

from . import TransportRefused

__all__ = ["LiveHub", "LiveTransport", "Subscription"]

log = logging.getLogger(__name__)


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
