"""The write path for how notifications travel: filter modes, daily digests, quiet hours.

Every call here checks its input before writing, acts on the actor's own account
(or, for an admin, on ``user=``), records a change event, and makes what the old
policy held due at once (:func:`fmn_core.waiting.release_held`), so the senders
decide on those rows again under the new policy: turning quiet hours off sends
what they held now, not at the old end of the window.

``set_digest`` (minutes, count and the daily time) lives with the other context
settings in :mod:`fmn_core.editing`.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from .access import Actor, check_bool, offered_context, target_account
from .editing import update_filter, write_digest
from .errors import InvalidArgument
from .schedule import check_delivery, check_local_time, check_timezone
from .store import (
    find_user,
    lock_account,
    preference_for_write,
    record_change,
    user_for_write,
)
from .views import ContextView, FilterView, context_view
from .waiting import POLICY_HOLDS, Waiting, list_waiting, release_held

__all__ = [
    "MAX_PENDING",
    "pending_notifications",
    "set_daily_digest",
    "set_filter_delivery",
    "set_filter_urgent",
    "set_quiet_hours",
]

#: The most notifications ``pending_notifications`` lists.
MAX_PENDING = 200


def set_filter_delivery(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    delivery: str,
    *,
    user: str | None = None,
) -> FilterView:
    """Send a filter's matches ``instant`` (at once) or in the context's ``digest``."""
    delivery = check_delivery(delivery)
    return update_filter(
        session, actor, context, name, "delivery", delivery, user, release_policy_holds=True
    )


def set_filter_urgent(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    urgent: bool,
    *,
    user: str | None = None,
) -> FilterView:
    """Let a filter's matches through quiet hours (``urgent``), or make them wait."""
    urgent = check_bool(urgent, "urgent")
    return update_filter(
        session, actor, context, name, "urgent", urgent, user, release_policy_holds=True
    )


def set_daily_digest(
    session: Session,
    actor: Actor,
    context: str,
    at: str | None,
    timezone: str | None = None,
    *,
    user: str | None = None,
) -> ContextView:
    """Send the context's digest daily at ``at`` (``HH:MM``) in ``timezone`` (IANA;
    the stored one when not given), or no daily digest (``at`` None). The
    every-N-minutes and after-K settings are kept."""
    name = target_account(actor, user)
    context = offered_context(session, context)
    at = check_local_time(at, "at") if at is not None else None
    zone = (
        check_timezone(timezone, "timezone", label="The daily digest's time zone")
        if timezone is not None
        else None
    )
    return write_digest(session, name, context, at, zone, None)


def set_quiet_hours(
    session: Session,
    actor: Actor,
    context: str,
    start: str | None,
    end: str | None,
    timezone: str | None = None,
    *,
    user: str | None = None,
) -> ContextView:
    """Hold the context's instant notifications that are not urgent from ``start`` to
    ``end`` (local ``HH:MM``, the window may span midnight) in ``timezone`` (IANA,
    UTC when not given); ``None, None`` ends quiet hours."""
    name = target_account(actor, user)
    context = offered_context(session, context)
    if (start is None) != (end is None):
        raise InvalidArgument(
            "Give quiet hours both a start and an end (like 22:00 and 07:00), or neither.",
            argument="end" if end is None else "start",
        )
    window: tuple[str, str, str] | None = None
    if start is not None and end is not None:
        start, end = check_local_time(start, "start"), check_local_time(end, "end")
        if start == end:
            raise InvalidArgument(
                f"Quiet hours must end at another time than they start ({start}); the "
                "end must differ from the start.",
                argument="end",
            )
        zone = check_timezone(timezone or "UTC", "timezone", label="The quiet hours' time zone")
        window = (start, end, zone)
    lock_account(session, name)
    row = user_for_write(session, name)
    preference = preference_for_write(session, row, context)
    preference.quiet_from, preference.quiet_to, preference.quiet_timezone = window or (
        None,
        None,
        None,
    )
    record_change(session, row, "quiet_hours")
    release_held(session, row.id, POLICY_HOLDS, context=context)
    return context_view(context, preference, row)


def pending_notifications(
    session: Session,
    actor: Actor,
    *,
    context: str | None = None,
    limit: int = 20,
    user: str | None = None,
) -> list[Waiting]:
    """The user's notifications that have not been sent, why each waits and until when
    (soonest first; dead ones last)."""
    target = target_account(actor, user)
    if context is not None:
        context = offered_context(session, context)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PENDING:
        raise InvalidArgument(
            f"limit must be a whole number from 1 to {MAX_PENDING}.", argument="limit"
        )
    row = find_user(session, target)
    if row is None:
        return []
    return list_waiting(session, user_id=row.id, context=context, limit=limit)
