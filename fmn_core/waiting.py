"""What waits in the outbox, why, and until when.

Every notification that is not sent says why (``Notification.hold_reason``, set
by the delivery policy when it holds a row, or the row's state) and when it is
looked at again (``due_at``). Operators read it with ``fmn-daemon outbox --json``,
users with ``fmn pending`` on IRC and the TUI's recent notifications; all of them
word the reason with :func:`fmn_core.wording.waiting_reason`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .models import Notification, NotificationState, StoredMessage, User, utcnow
from .outbox import WAITING_STATES, announce_new_rows
from .text import one_line
from .wording import waiting_reason

__all__ = ["POLICY_HOLDS", "Waiting", "due_at_of", "list_waiting", "release_held"]

_NOT_SENT = (
    NotificationState.PENDING.value,
    NotificationState.SENDING.value,
    NotificationState.FAILED.value,
    NotificationState.DEAD.value,
)


@dataclass(frozen=True, slots=True)
class Waiting:
    """One notification that has not been sent."""

    id: int
    user: str
    context: str
    message_id: str
    topic: str
    summary: str
    filter_name: str
    state: str
    hold_reason: str | None
    due_at: dt.datetime | None
    #: :func:`fmn_core.wording.waiting_reason` of the row.
    reason: str
    created_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        """The ``fmn-daemon outbox --json`` line of this row."""
        return {
            "id": self.id,
            "user": self.user,
            "context": self.context,
            "message_id": self.message_id,
            "state": self.state,
            "reason": self.reason,
            "due_at": (
                self.due_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
                if self.due_at is not None
                else None
            ),
        }


def due_at_of(
    state: str, next_attempt_at: dt.datetime | None, claimed_until: dt.datetime | None
) -> dt.datetime | None:
    """When a row is looked at again: its next attempt, its lease end, or None (dead)."""
    if state == NotificationState.SENDING.value:
        return claimed_until
    if state == NotificationState.DEAD.value:
        return None
    return next_attempt_at


def list_waiting(
    session: Session,
    *,
    user_id: int | None = None,
    context: str | None = None,
    limit: int = 1000,
) -> list[Waiting]:
    """Not-sent notifications, soonest due first (dead ones last), at most ``limit``.

    ``user_id`` limits the list to one user: callers that serve a user pass the
    id of the account they checked, never one taken from a request.
    """
    statement = (
        select(Notification, User.name, StoredMessage.topic, StoredMessage.summary)
        .join(User, User.id == Notification.user_id)
        .join(StoredMessage, StoredMessage.id == Notification.message_id)
        .where(Notification.state.in_(_NOT_SENT))
    )
    if user_id is not None:
        statement = statement.where(Notification.user_id == user_id)
    if context is not None:
        statement = statement.where(Notification.context == context)
    statement = statement.order_by(
        (Notification.state == NotificationState.DEAD.value),
        Notification.next_attempt_at,
        Notification.id,
    ).limit(limit)
    rows: list[Waiting] = []
    for notification, name, topic, summary in session.execute(statement):
        due = due_at_of(
            notification.state, notification.next_attempt_at, notification.claimed_until
        )
        rows.append(
            Waiting(
                id=notification.id,
                user=name,
                context=notification.context,
                message_id=notification.message_id,
                topic=one_line(topic),
                summary=one_line(summary or topic),
                filter_name=one_line(notification.filter_name),
                state=notification.state,
                hold_reason=notification.hold_reason,
                due_at=due,
                reason=waiting_reason(
                    notification.state, notification.hold_reason, due, notification.last_error
                ),
                created_at=notification.created_at,
            )
        )
    return rows


#: Rows held by a delivery policy: a change to that policy looks at them again.
POLICY_HOLDS = ("digest", "quiet_hours", "rate_limit")


def release_held(
    session: Session,
    user_id: int,
    reasons: Sequence[str],
    *,
    context: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Make a user's rows held for ``reasons`` due now; returns how many.

    The write path calls this when what held them changed (a digest turned off,
    quiet hours changed, an address confirmed, a mute ended): the senders decide
    on them again at once, under the new policy, instead of at the old time.
    Nothing else about the rows changes (a failed row keeps its attempts).
    """
    statement = update(Notification).where(
        Notification.user_id == user_id,
        Notification.state.in_(WAITING_STATES),
        Notification.hold_reason.in_(list(reasons)),
    )
    if context is not None:
        statement = statement.where(Notification.context == context)
    result = session.execute(
        statement.values(next_attempt_at=now if now is not None else utcnow()).execution_options(
            synchronize_session=False
        )
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        announce_new_rows(session)
    return count
