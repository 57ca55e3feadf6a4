"""Looking back: what a filter would have matched, and what a user was sent.

:func:`preview` evaluates a filter with the matcher itself: the filter is
compiled by a :class:`~fmn_core.matcher.Matcher` of its own and each stored
message goes through ``Matcher.recipients``, so a preview says exactly what the
daemon would deliver. A filter the matcher skips (no rules, a rule that is not
installed, stored arguments no longer valid) matches nothing here too, and a
rule that raises counts as not matching, as it does there.

Topics and summaries come from the bus, so a view carries them as every display
of a message does (``fmn_core.display``): one line, without control characters,
cut at ``SUMMARY_MAX_CHARS``. The front ends show them as they are.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .access import Actor, check_whole, offered_context, target_account
from .accounts import directory_of
from .db import catalog_of
from .display import SUMMARY_MAX_CHARS
from .matcher import Matcher
from .models import Filter, Notification, StoredMessage, User
from .ownership import OwnershipQueries
from .rules import OwnershipLookup
from .snapshots import ContextSnapshot, FilterSnapshot, RuleSnapshot, UserSnapshot
from .store import existing_filter, find_user, ordered_rules
from .stored_messages import stored_facts
from .text import one_line
from .views import NotificationView, PreviewHit
from .waiting import due_at_of
from .wording import waiting_reason

__all__ = [
    "MAX_PREVIEW",
    "MAX_RECENT",
    "filter_matcher",
    "preview",
    "recent_notifications",
]

MAX_PREVIEW = 1000
MAX_RECENT = 200


def filter_matcher(
    session: Session, user: User, context: str, filter_: Filter, ownership: OwnershipLookup
) -> Matcher:
    """A matcher holding only this filter (as if active), compiled as the daemon compiles it."""
    rules = tuple(
        RuleSnapshot(rule.name, dict(rule.arguments or {}), rule.negated)
        for rule in ordered_rules(filter_)
    )
    snapshot = UserSnapshot(
        user.id,
        user.name,
        (ContextSnapshot(context, (FilterSnapshot(filter_.id, filter_.name, rules),)),),
    )
    return Matcher.from_snapshots(
        [snapshot],
        catalog_of(session),
        ownership,
        (context,),
        directory_of(session),
    )


def preview(
    session: Session,
    actor: Actor,
    context: str,
    filter_name: str,
    *,
    limit: int = 200,
    user: str | None = None,
) -> list[PreviewHit]:
    """Which of the last ``limit`` stored messages (newest first) this filter matches.

    Evaluated by the matcher (see the module docstring): a filter without rules, or
    one the matcher skips, matches nothing.
    """
    limit = check_whole(limit, "limit", 1, MAX_PREVIEW)
    row, _preference, filter_, context = existing_filter(session, actor, context, filter_name, user)
    # Only the ownership rows these messages and this filter ask about are read:
    # the whole table is seconds of CPU at Fedora's size, for every preview.
    ownership = OwnershipQueries(session)
    matcher = filter_matcher(session, row, context, filter_, ownership)
    if matcher.stats().filters == 0:
        return []
    messages = session.scalars(
        select(StoredMessage)
        .order_by(StoredMessage.received_at.desc(), StoredMessage.id.desc())
        .limit(limit)
    )
    read = [(message, stored_facts(message)) for message in messages]
    ownership.read_owners(p for _, facts in read if facts is not None for p in facts.packages)
    return [
        PreviewHit(
            message.id,
            one_line(message.topic, limit=SUMMARY_MAX_CHARS),
            one_line(facts.summary, limit=SUMMARY_MAX_CHARS),
            message.received_at,
        )
        for message, facts in read
        if facts is not None and matcher.recipients(facts)
    ]


def recent_notifications(
    session: Session,
    actor: Actor,
    *,
    context: str | None = None,
    limit: int = 20,
    user: str | None = None,
) -> list[NotificationView]:
    """The user's latest notifications (newest first), whatever their state."""
    target = target_account(actor, user)
    if context is not None:
        context = offered_context(session, context)
    limit = check_whole(limit, "limit", 1, MAX_RECENT)
    row = find_user(session, target)
    if row is None:
        return []
    statement = (
        select(Notification, StoredMessage)
        .join(StoredMessage, StoredMessage.id == Notification.message_id)
        .where(Notification.user_id == row.id)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit)
    )
    if context is not None:
        statement = statement.where(Notification.context == context)
    views = []
    for notification, message in session.execute(statement):
        facts = stored_facts(message)
        due = due_at_of(
            notification.state, notification.next_attempt_at, notification.claimed_until
        )
        views.append(
            NotificationView(
                notification.id,
                message.id,
                one_line(message.topic, limit=SUMMARY_MAX_CHARS),
                one_line(facts.summary, limit=SUMMARY_MAX_CHARS) if facts else "",
                notification.context,
                notification.filter_name,
                notification.state,
                notification.created_at,
                notification.sent_at,
                waiting_reason(
                    notification.state, notification.hold_reason, due, notification.last_error
                ),
                None if notification.state == "sent" else due,
            )
        )
    return views
