"""What feeds and the live feed show of a message, computed once when it is stored.

A feed or a live catch-up request lists up to 50 notifications. Building each
entry from the stored message body (re-parsing it with its schema) made every
such request cost as much memory as the bodies it touched: five clients asking
``?since=0`` after a few large messages held gigabytes. Instead, ingest computes
a message's :class:`MessageDisplay` once, from the facts it has in hand anyway,
and stores it in the ``messages`` row (``summary``, ``url``, ``app``). Feeds and
live catch-ups then select those columns and never the body.

Every field is bounded (so a hostile message stores at most a few kilobytes of
display text) and cleaned with :mod:`fmn_core.text` (one line, no control
characters), so nothing stored here can break an XML document or a JSON line.
Rows stored before these columns existed have none: they show their topic
(:func:`stored_display`), which needs no body either.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .messages import MessageFacts
from .text import has_control, one_line

__all__ = [
    "APP_MAX_CHARS",
    "SUMMARY_MAX_CHARS",
    "URL_MAX_CHARS",
    "MessageDisplay",
    "app_from_topic",
    "display_fields",
    "display_of",
    "safe_url",
    "stored_display",
]

#: Longest summary a feed entry shows (longer ones are cut with an ellipsis).
SUMMARY_MAX_CHARS = 500
#: Longest link a feed entry carries; a longer one is dropped, not cut (a cut URL is wrong).
URL_MAX_CHARS = 2048
#: Longest application name.
APP_MAX_CHARS = 64


@dataclass(frozen=True, slots=True)
class MessageDisplay:
    """The bounded, cleaned text a feed entry or live event shows for one message."""

    summary: str
    url: str | None
    app: str


def app_from_topic(topic: str) -> str:
    """The application a topic names (``org.fedoraproject.prod.<app>.…``), bounded."""
    parts = topic.split(".")
    app = parts[3] if len(parts) > 3 and parts[0] == "org" else (parts[0] if parts else "")
    return one_line(app, limit=APP_MAX_CHARS)


def safe_url(url: str | None) -> str | None:
    """``url`` if it is a link fit to show and follow, else None."""
    # Only absolute http(s) links, whole and without control characters: a feed
    # reader or a web client follows them, so a javascript: or data: URL has no
    # place there.
    # ``split()`` cuts at exactly the characters ``isspace`` names, in C.
    if not url or len(url) > URL_MAX_CHARS or has_control(url) or url.split() != [url]:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def display_of(facts: MessageFacts) -> MessageDisplay:
    """The display fields of a message's facts (what ingest stores)."""
    return MessageDisplay(*display_fields(facts))


def display_fields(facts: MessageFacts) -> tuple[str, str | None, str]:
    """``display_of``'s summary, URL and application, without the object around them.

    Ingest puts them straight into the message's row, once per message.
    """
    summary = one_line(facts.summary, limit=SUMMARY_MAX_CHARS) if facts.summary else ""
    app = one_line(facts.app_name, limit=APP_MAX_CHARS) if facts.app_name else ""
    return (
        summary or one_line(facts.topic, limit=SUMMARY_MAX_CHARS),
        safe_url(facts.url),
        app or app_from_topic(facts.topic),
    )


def stored_display(
    topic: str, summary: str | None, url: str | None, app: str | None
) -> MessageDisplay:
    """The display of a stored row; rows stored before display columns existed show the topic.

    Stored values were cleaned at ingest; they are cleaned again here because a
    row may have been written by anything with access to the database.
    """
    clean_topic = one_line(topic, limit=SUMMARY_MAX_CHARS)
    return MessageDisplay(
        summary=one_line(summary, limit=SUMMARY_MAX_CHARS) if summary else clean_topic,
        url=safe_url(url),
        app=one_line(app, limit=APP_MAX_CHARS) if app else app_from_topic(topic),
    )
