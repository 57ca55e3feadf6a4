"""Feeds: a user's sent notifications as the Atom/RSS feeds and the live catch-up read them.

A feed or live token is a destination like any other; :func:`owner_of_address`
finds whose it is, and :func:`sent_entries` reads only the display columns
ingest stored (:mod:`fmn_core.display`), never a message body.

A feed is read in pages (RFC 5005 archived feeds): :func:`sent_page` gives the
newest page and, from a :func:`feed_cursor`, each older one. A cursor is a place
in send order (``sent_at``, id), never an offset: a page reads the same rows
however many arrived since, the read stays on the (user, context, state,
``sent_at``) index, and a cursor whose row retention deleted still reads on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from .display import SUMMARY_MAX_CHARS, stored_display
from .errors import InvalidArgument
from .models import Destination, Notification, NotificationState, Preference, StoredMessage, User
from .text import one_line

__all__ = [
    "Position",
    "SentEntry",
    "entries_after",
    "feed_cursor",
    "owner_of_address",
    "parse_feed_cursor",
    "sent_entries",
    "sent_page",
    "sent_position",
    "token_entries",
    "token_fingerprint",
]

#: Where a sent row stands in the order rows were sent: (``sent_at``, id).
Position = tuple[dt.datetime, int]


@dataclass(frozen=True, slots=True)
class SentEntry:
    """A sent notification as a feed shows it."""

    id: int
    message_id: str
    topic: str
    app: str
    summary: str
    url: str | None
    filter_name: str
    created_at: dt.datetime
    sent_at: dt.datetime


def owner_of_address(session: Session, context: str, address: str) -> tuple[int, str] | None:
    """The (user id, user name) whose confirmed ``context`` destination is ``address``.

    Used for secret-token destinations (feeds, the live feed): whoever holds the
    token reads that user's notifications, and nothing else.
    """
    if not address:
        return None
    row = session.execute(
        select(User.id, User.name)
        .join(Preference, Preference.user_id == User.id)
        .join(Destination, Destination.preference_id == Preference.id)
        .where(
            Preference.context == context,
            Destination.address == address,
            Destination.confirmed.is_(True),
        )
        .limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else None


def sent_entries(
    session: Session,
    user_id: int,
    context: str,
    *,
    limit: int = 50,
) -> list[SentEntry]:
    """A user's newest sent notifications in one context, newest first (the feeds).

    Reads only the display columns ingest stored (:mod:`fmn_core.display`), never
    a message body: a request's memory is bounded by ``limit`` times a few
    kilobytes, whatever the messages weighed.
    """
    return sent_page(session, user_id, context, limit=limit)[0]


def sent_page(
    session: Session,
    user_id: int,
    context: str,
    *,
    before: Position | None = None,
    limit: int = 50,
) -> tuple[list[SentEntry], Position | None]:
    """One page of a user's sent notifications in one context, newest first, and where
    the next older page starts (None when no older row is left).

    Without ``before``, the newest ``limit`` rows (a feed's subscription document);
    with it, the ``limit`` rows sent before that place. ``before`` is a place in
    send order, not a row: it reads only this user's rows in this context, whoever's
    row it was taken from, and still reads on once retention deleted that row.
    """
    statement = _sent_rows(user_id, context)
    if before is not None:
        at, below_row = before
        statement = statement.where(
            or_(
                Notification.sent_at < at,
                and_(Notification.sent_at == at, Notification.id < below_row),
            )
        )
    # One row more than the page says whether an older page exists.
    rows = session.execute(
        statement.order_by(Notification.sent_at.desc(), Notification.id.desc()).limit(limit + 1)
    ).all()
    older: Position | None = None
    if len(rows) > limit:
        oldest = rows[limit - 1]
        older = (oldest.sent_at, oldest.id)
    return [_entry(row) for row in rows[:limit]], older


#: A cursor's parts: microseconds since 1970 (year 9999 has 18 digits) and a row id.
_CURSOR_MICROSECONDS_DIGITS = 18
_CURSOR_ID_DIGITS = 19
_ID_MAX = 2**63 - 1


def feed_cursor(position: Position) -> str:
    """``position`` as it goes in a feed page's URL: ``<microseconds since 1970>-<id>``."""
    at, row = position
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return f"{(at - _EPOCH) // dt.timedelta(microseconds=1)}-{row}"


def parse_feed_cursor(text: str) -> Position:
    """The position a :func:`feed_cursor` names; ``InvalidArgument`` for anything else."""
    micro, dash, row = text.partition("-")
    bad = InvalidArgument(
        f"{text[:40]!r} is not a feed page: follow the feed's prev-archive links, or read "
        "the feed's address without ?before= for its newest entries.",
        argument="before",
    )
    for part, digits in ((micro, _CURSOR_MICROSECONDS_DIGITS), (row, _CURSOR_ID_DIGITS)):
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not (dash and part.isascii() and part.isdigit() and len(part) <= digits):
            raise bad
    if int(row) > _ID_MAX:
        raise bad
    try:
        at = _EPOCH + dt.timedelta(microseconds=int(micro))
    except OverflowError:
        raise bad from None
    return at, int(row)


def token_fingerprint(token: str) -> str:
    """What an action link carries to name the feed token it came through.

    A digest, not the token: a link may be passed on by itself, and must not hand
    over the feed it came from.
    """
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def entries_after(
    session: Session,
    user_id: int,
    context: str,
    after: Position,
    *,
    limit: int = 50,
    above_id: int | None = None,
) -> list[SentEntry]:
    """The sent rows after ``after`` in the order they were sent, oldest first (live reads).

    A live client's place is a position in send order, not an id: ids are given
    when a row is queued, and a digest, a retry or quiet hours send a lower id
    after higher ones, so "ids above the last one seen" missed those and sent
    again the higher ones a client had seen before a late low one. Oldest first,
    so that a reader pages on from the last row it got. ``above_id`` also asks
    for ids above it (the client's id when its row is gone).
    """
    at, after_row = after
    statement = _sent_rows(user_id, context).where(
        or_(
            Notification.sent_at > at,
            and_(Notification.sent_at == at, Notification.id > after_row),
        )
    )
    if above_id is not None:
        statement = statement.where(Notification.id > above_id)
    rows = session.execute(
        statement.order_by(Notification.sent_at.asc(), Notification.id.asc()).limit(limit)
    ).all()
    return [_entry(row) for row in rows]


def sent_position(
    session: Session, user_id: int, context: str, notification_id: int
) -> Position | None:
    """Where the user's sent row ``notification_id`` stands in send order; None when it is
    not one (pruned, not committed yet, another user's or context's, not sent)."""
    row = session.execute(
        select(Notification.sent_at).where(
            Notification.id == notification_id,
            Notification.user_id == user_id,
            Notification.context == context,
            Notification.state == NotificationState.SENT.value,
        )
    ).first()
    if row is None or row[0] is None:
        return None
    return (row[0], notification_id)


def _sent_rows(user_id: int, context: str) -> Select[*tuple[Any, ...]]:
    return (
        select(
            Notification.id,
            Notification.filter_name,
            Notification.created_at,
            Notification.sent_at,
            StoredMessage.id.label("message_id"),
            StoredMessage.topic,
            StoredMessage.summary,
            StoredMessage.url,
            StoredMessage.app,
        )
        .join(StoredMessage, StoredMessage.id == Notification.message_id)
        .where(
            Notification.user_id == user_id,
            Notification.context == context,
            Notification.state == NotificationState.SENT.value,
        )
    )


def _entry(row: Row[Any]) -> SentEntry:
    shown = stored_display(row.topic, row.summary, row.url, row.app)
    return SentEntry(
        id=row.id,
        message_id=row.message_id,
        topic=one_line(row.topic, limit=SUMMARY_MAX_CHARS),
        app=shown.app,
        summary=shown.summary,
        url=shown.url,
        filter_name=one_line(row.filter_name),
        created_at=row.created_at,
        sent_at=row.sent_at or row.created_at,
    )


def token_entries(
    session: Session,
    context: str,
    token: str,
    user_id: int,
    *,
    limit: int = 50,
    after: Position | None = None,
    above_id: int | None = None,
    position_of: int | None = None,
) -> tuple[list[SentEntry], Position | None] | None:
    """:func:`entries_after` for whoever holds ``token``, while it is still ``user_id``'s.

    With ``position_of`` (a client's last id), that row's :func:`sent_position` is
    returned too and the entries are those after it (none are read when it has
    none). None once the token is not the user's (they removed it, or made a new
    one in its place): a connection opened with a leaked token must end when the
    token is taken away, not go on reading what is sent to the new one.
    """
    owner = owner_of_address(session, context, token)
    if owner is None or owner[0] != user_id:
        return None
    position = None
    if position_of is not None:
        position = sent_position(session, user_id, context, position_of)
        if position is None:
            return [], None
        after = position
    start = after if after is not None else (_EPOCH, 0)
    return entries_after(session, user_id, context, start, limit=limit, above_id=above_id), position


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
