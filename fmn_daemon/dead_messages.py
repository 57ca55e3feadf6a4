"""Dead messages: bus messages put aside after failing again and again.

A delivery that decodes but that the database keeps refusing (or that makes the
ingest pipeline raise) is tried ``ingest.max_attempts`` times on its own, then
recorded here, logged once, and acked, so the queue behind it keeps moving.
``fmn-daemon messages dead`` lists them, ``fmn-daemon messages requeue ID`` runs
one through the pipeline again (after a fix), and ``fmn-daemon outbox`` counts them.
An id is never given to a second dead message (``AUTOINCREMENT`` on SQLite, whose
plain rowids reuse the newest deleted one; migration 0013), so a requeue repeated
from an old listing finds nothing rather than running another message.

What is kept is safe to show and to store: the id and topic escaped and cut
(``fmn_core.text.for_log``), the reason, and the delivery as one message-file line
(``{"id", "topic", "headers", "body"}``, the body as it arrived), cut at
``ingest.dead_copy_bytes`` so a dead message never costs more than that.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from fmn_core.config import IngestConfig
from fmn_core.db import Database
from fmn_core.errors import MalformedMessage, NotFound
from fmn_core.matcher import Matcher
from fmn_core.messages import parse_line
from fmn_core.models import DeadMessage
from fmn_core.ownership import OwnershipCache
from fmn_core.text import for_log

from .failures import describe
from .ingest import ingest_batch

__all__ = [
    "DeadMessageView",
    "RequeueOutcome",
    "bury",
    "count_dead_messages",
    "delivery_line",
    "list_dead_messages",
    "requeue_dead_message",
]

log = logging.getLogger(__name__)

#: Widths of the escaped id and topic kept (the columns' sizes).
_ID_WIDTH = 255
_TOPIC_WIDTH = 512
_REASON_WIDTH = 2000


@dataclass(frozen=True)
class DeadMessageView:
    """A dead message, for listing (plain data, nothing lazy)."""

    id: int
    message_id: str
    topic: str
    reason: str
    attempts: int
    received_at: dt.datetime
    size: int
    truncated: bool

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return {
            "id": self.id,
            "message_id": self.message_id,
            "topic": self.topic,
            "reason": self.reason,
            "attempts": self.attempts,
            "received_at": self.received_at.isoformat(),
            "size": self.size,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class RequeueOutcome:
    """What a requeue did: ``stored`` the message again, or failed once more (``reason``)."""

    stored: bool
    message_id: str
    notifications: int = 0
    reason: str = ""


def delivery_line(
    message_id: str, topic: str, headers: Mapping[str, Any] | None, body: bytes | str
) -> bytes:
    """The delivery as one message-file line; the body goes in as it arrived (valid JSON)."""
    raw_body = body.encode("utf-8") if isinstance(body, str) else body
    try:
        head = json.dumps(
            {"id": message_id, "topic": topic, "headers": dict(headers or {})}, default=str
        )
    except (ValueError, TypeError, RecursionError):
        head = json.dumps({"id": message_id, "topic": topic, "headers": {}})
    return head[:-1].encode("utf-8") + b', "body": ' + raw_body + b"}"


def bury(
    session: Session,
    *,
    message_id: str,
    topic: str,
    reason: str,
    attempts: int,
    raw: bytes,
    limits: IngestConfig,
) -> int:
    """Record a dead message in the caller's transaction; its row id."""
    truncated = len(raw) > limits.dead_copy_bytes
    row = DeadMessage(
        message_id=for_log(message_id, limit=_ID_WIDTH) or "(no id)",
        topic=for_log(topic, limit=_TOPIC_WIDTH),
        reason=for_log(reason, limit=_REASON_WIDTH),
        attempts=attempts,
        raw=raw[: limits.dead_copy_bytes],
        truncated=truncated,
    )
    session.add(row)
    session.flush()
    return row.id


def count_dead_messages(session: Session) -> int:
    """How many dead messages wait."""
    return int(session.scalar(select(func.count()).select_from(DeadMessage)) or 0)


def list_dead_messages(session: Session, limit: int = 100) -> list[DeadMessageView]:
    """The most recent dead messages, newest first."""
    rows = session.execute(
        select(
            DeadMessage.id,
            DeadMessage.message_id,
            DeadMessage.topic,
            DeadMessage.reason,
            DeadMessage.attempts,
            DeadMessage.received_at,
            func.length(DeadMessage.raw),
            DeadMessage.truncated,
        )
        .order_by(DeadMessage.received_at.desc(), DeadMessage.id.desc())
        .limit(limit)
    ).all()
    return [
        DeadMessageView(
            id=row[0],
            message_id=row[1],
            topic=row[2],
            reason=row[3],
            attempts=row[4],
            received_at=row[5],
            size=int(row[6] or 0),
            truncated=bool(row[7]),
        )
        for row in rows
    ]


def requeue_dead_message(db: Database, dead_id: int) -> RequeueOutcome:
    """Run dead message ``dead_id`` through the ingest pipeline again.

    Stored: the dead row goes, in the same transaction. Refused again: the row
    stays, with one more attempt and the new reason (an outcome, not an error, so
    the record is kept). An unknown id raises ``NotFound``.
    """
    limits = db.config.ingest
    with db.begin() as session:
        row = session.get(DeadMessage, dead_id)
        if row is None:
            raise NotFound(f"there is no dead message {dead_id}; see fmn-daemon messages dead")
        raw, truncated, shown_id = row.raw, row.truncated, row.message_id
    reason = ""
    if truncated:
        reason = "only a cut copy of this message was kept; it cannot be requeued"
    else:
        try:
            message = parse_line(raw, limits)
        except MalformedMessage as exc:
            reason = f"the kept copy is not a valid message: {exc}"
        else:
            try:
                with db.begin() as session:
                    matcher = Matcher.load(session, ownership=OwnershipCache.load(session))
                    result = ingest_batch(session, matcher, [message])
                    if result.malformed:
                        raise MalformedMessage(result.malformed[0][1])
                    session.execute(delete(DeadMessage).where(DeadMessage.id == dead_id))
            except Exception as exc:  # whatever made it fail before; recorded below
                reason = describe(exc)
            else:
                log.info("message %s: requeued from the dead messages", for_log(message.id))
                return RequeueOutcome(True, shown_id, notifications=result.notifications)
    with db.begin() as session:
        row = session.get(DeadMessage, dead_id)
        if row is not None:
            row.attempts += 1
            row.reason = for_log(reason, limit=_REASON_WIDTH)
    return RequeueOutcome(False, shown_id, reason=reason)
