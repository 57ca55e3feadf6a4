"""Stored bus messages read back: their facts, for previews, history and senders.

A stored row is re-parsed with the same decoder as ingest. A row that no longer
loads (a schema package changed since it was stored) is not an error for the
reader: the history shows it without a summary, and a sender renders it from
what the row itself knows (:func:`fallback_facts`).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple, Protocol

from .errors import MalformedMessage
from .messages import MessageFacts, facts_of, load_message

__all__ = ["FactsCache", "MessageRow", "StoredFields", "fallback_facts", "stored_facts"]

log = logging.getLogger(__name__)


class StoredFields(Protocol):
    """What is read of a stored message: a ``StoredMessage``, or a claim's ``MessageRow``."""

    @property
    def id(self) -> str: ...

    @property
    def topic(self) -> str: ...

    @property
    def body(self) -> Any: ...

    @property
    def headers(self) -> Any: ...


class MessageRow(NamedTuple):
    """A stored message's columns as a query returned them (no ORM object to build)."""

    id: str
    topic: str
    body: Any
    headers: Any


def stored_facts(message: StoredFields) -> MessageFacts | None:
    """The facts of a stored message, or None if it no longer loads."""
    try:
        return facts_of(
            load_message(
                {
                    "id": message.id,
                    "topic": message.topic,
                    "body": message.body,
                    "headers": message.headers or {},
                }
            )
        )
    except MalformedMessage as exc:
        log.debug("message %s: stored message no longer loads: %s", message.id, exc)
        return None


def fallback_facts(message: StoredFields) -> MessageFacts:
    """What the row itself knows of a message that no longer loads."""
    parts = message.topic.split(".")
    app = parts[3] if len(parts) > 3 and parts[0] == "org" else (parts[0] if parts else "")
    return MessageFacts(
        id=message.id,
        topic=message.topic,
        app_name=app,
        agent_name=None,
        usernames=frozenset(),
        packages=frozenset(),
        groups=frozenset(),
        containers=frozenset(),
        modules=frozenset(),
        flatpaks=frozenset(),
        severity=20,
        summary="",
        url=None,
        body=message.body,
        headers=dict(message.headers or {}),
        schema="base.message",
    )


class FactsCache:
    """Re-parses each stored message once (per claim); falls back to the row's own facts."""

    def __init__(self) -> None:
        self._facts: dict[str, MessageFacts] = {}

    def get(self, message: StoredFields) -> MessageFacts:
        """The message's facts, parsed on first use."""
        cached = self._facts.get(message.id)
        if cached is not None:
            return cached
        facts = stored_facts(message)
        if facts is None:
            log.warning("message %s: stored message no longer loads; sent from its row", message.id)
            facts = fallback_facts(message)
        self._facts[message.id] = facts
        return facts
