"""Feeds: a user's sent notifications as the Atom/RSS feeds and the live catch-up read them.

A feed or live token is a destination like any other; :func:`owner_of_address`
finds whose it is, and :func:`sent_entries` reads only the display columns
ingest stored (:mod:`fmn_core.display`), never a message body.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .display import SUMMARY_MAX_CHARS, stored_display
from .models import Destination, Notification, NotificationState, Preference, StoredMessage, User
from .text import one_line

__all__ = ["SentEntry", "owner_of_address", "sent_entries", "token_entries"]


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
    since: dt.datetime | None = None,
    after_id: int | None = None,
) -> list[SentEntry]:
    """A user's sent notifications in one context, newest first (feeds, live catch-up).

    Reads only the display columns ingest stored (:mod:`fmn_core.display`), never
    a message body: a request's memory is bounded by ``limit`` times a few
    kilobytes, whatever the messages weighed.
    """
    statement = (
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
    if since is not None:
        statement = statement.where(Notification.sent_at >= since)
    if after_id is not None:
        statement = statement.where(Notification.id > after_id)
    rows = session.execute(
        statement.order_by(Notification.sent_at.desc(), Notification.id.desc()).limit(limit)
    ).all()
    entries = []
    for row in rows:
        shown = stored_display(row.topic, row.summary, row.url, row.app)
        entries.append(
            SentEntry(
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
        )
    return entries


def token_entries(
    session: Session,
    context: str,
    token: str,
    user_id: int,
    *,
    limit: int = 50,
    since: dt.datetime | None = None,
    after_id: int | None = None,
) -> list[SentEntry] | None:
    """:func:`sent_entries` for whoever holds ``token``, while it is still ``user_id``'s.

    None once it is not (the user removed it, or made a new one in its place):
    a connection opened with a leaked token must end when the token is taken
    away, not go on reading what is sent to the new one.
    """
    owner = owner_of_address(session, context, token)
    if owner is None or owner[0] != user_id:
        return None
    return sent_entries(session, user_id, context, limit=limit, since=since, after_id=after_id)
