"""Time-bound rules and paused filters: ending them, and telling the user once.

A rule with ``expires_at`` (an exclusion added for a while, "mute this package
for 30 days") and a filter with ``paused_until`` change meaning at that time by
themselves: the matcher already ignores the rule, or evaluates the filter again,
from that moment on (it reloads the user then; see ``Matcher.apply_changes``).
:func:`expire_preferences` is the housekeeping that follows: it deletes the
expired rules, clears the ended pauses, and leaves each user one sentence per
change in ``users.notices``, which the bot and the TUI show once
(:func:`take_notices`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from .access import Actor, target_account
from .models import ChangeEvent, Filter, Preference, Rule, User, utcnow
from .store import MAX_SINGLE_LOCKS, lock_account, lock_accounts, ordered_rules, renumber
from .views import describe_rule

__all__ = ["MAX_ACCOUNTS_PER_RUN", "MAX_NOTICES", "expire_preferences", "take_notices"]

#: Notices kept per user (oldest dropped first): a user away for months is told the latest.
MAX_NOTICES = 50


#: Accounts one housekeeping run ends things for, each under its own lock (more would
#: take the lock of every account, which holds off every person's edits for the
#: run), so a backlog (after a long stop) goes a batch a minute.
MAX_ACCOUNTS_PER_RUN = MAX_SINGLE_LOCKS


def _due_accounts(session: Session, now: dt.datetime) -> list[str]:
    """The accounts with an expired rule or an ended pause, by name, a batch at most."""
    rules = (
        select(User.name)
        .join(Preference, Preference.user_id == User.id)
        .join(Filter, Filter.preference_id == Preference.id)
        .join(Rule, Rule.filter_id == Filter.id)
        .where(Rule.expires_at.is_not(None), Rule.expires_at <= now)
    )
    pauses = (
        select(User.name)
        .join(Preference, Preference.user_id == User.id)
        .join(Filter, Filter.preference_id == Preference.id)
        .where(Filter.paused_until.is_not(None), Filter.paused_until <= now)
    )
    names = set(session.scalars(rules.distinct().order_by(User.name).limit(MAX_ACCOUNTS_PER_RUN)))
    names.update(session.scalars(pauses.distinct().order_by(User.name).limit(MAX_ACCOUNTS_PER_RUN)))
    return sorted(names)[:MAX_ACCOUNTS_PER_RUN]


def expire_preferences(session: Session, now: dt.datetime | None = None) -> int:
    """Delete rules whose expiry passed, end pauses that passed; how many rows changed.

    Each user affected gets one notice per change and one change event (their
    matcher entries are reloaded everywhere). Like every preference write, it takes
    each account's lock (:func:`~fmn_core.store.lock_account`, in name order, as an
    import does) and only then reads what to end: a person changing or removing the
    rule, or the filter, at that moment goes first or after, never half-way (their
    unit failed on a rule already deleted, and their clearing of the notices
    dropped the one added meanwhile). At most :data:`MAX_ACCOUNTS_PER_RUN` accounts
    a run; the rest wait for the next.
    """
    now = now or utcnow()
    told: defaultdict[int, list[str]] = defaultdict(list)
    accounts = _due_accounts(session, now)
    if not accounts:
        return 0
    lock_accounts(session, accounts)
    # Under the locks, read again: the person who held one may have changed the row.
    # Two daemons doing housekeeping at once: each row is handled by one of them.
    postgres = session.get_bind().dialect.name == "postgresql"
    mine = select(User.id).where(User.name.in_(accounts)).scalar_subquery()
    expired = (
        select(Rule, Filter, Preference)
        .join(Filter, Filter.id == Rule.filter_id)
        .join(Preference, Preference.id == Filter.preference_id)
        .where(Rule.expires_at.is_not(None), Rule.expires_at <= now)
        .where(Preference.user_id.in_(mine))
        .order_by(Rule.id)
    )
    if postgres:
        expired = expired.with_for_update(skip_locked=True)
    rules = session.execute(expired).all()
    touched: set[int] = set()
    for rule, filter_, preference in rules:
        text = describe_rule(rule.name, dict(rule.arguments or {}), rule.negated)
        assert rule.expires_at is not None
        told[preference.user_id].append(
            f"The rule `{text}` of your filter {filter_.name!r} ({preference.context}) ended "
            f"on {rule.expires_at:%Y-%m-%d %H:%M} UTC and was removed."
        )
        filter_.rules.remove(rule)
        touched.add(filter_.id)
    for filter_id in touched:
        filter_row = session.get(Filter, filter_id)
        if filter_row is not None:
            renumber(ordered_rules(filter_row))
    ended = (
        select(Filter, Preference)
        .join(Preference, Preference.id == Filter.preference_id)
        .where(Filter.paused_until.is_not(None), Filter.paused_until <= now)
        .where(Preference.user_id.in_(mine))
        .order_by(Filter.id)
    )
    if postgres:
        ended = ended.with_for_update(skip_locked=True)
    pauses = session.execute(ended).all()
    for filter_, preference in pauses:
        assert filter_.paused_until is not None
        told[preference.user_id].append(
            f"Your filter {filter_.name!r} ({preference.context}) is on again: its pause "
            f"ended on {filter_.paused_until:%Y-%m-%d %H:%M} UTC."
        )
        filter_.paused_until = None
    for user_id, sentences in sorted(told.items()):
        user = session.get(User, user_id)
        if user is None:
            continue
        user.notices = [*(user.notices or []), *sentences][-MAX_NOTICES:]
        session.add(ChangeEvent(user_id=user_id, kind="expired"))
    session.flush()
    return len(rules) + len(pauses)


def take_notices(session: Session, actor: Actor, *, user: str | None = None) -> list[str]:
    """What fmn has to tell the user (oldest first), each only once: reading clears them."""
    target = target_account(actor, user)
    if target == actor.name:
        # Reading clears: under the account's lock, or a notice housekeeping adds
        # meanwhile would be cleared unread.
        lock_account(session, target)
    row = session.scalars(select(User).where(User.name == target)).one_or_none()
    if row is None or not row.notices:
        return []
    notices = [str(n) for n in row.notices]
    if target == actor.name:  # an admin looking at someone else's leaves them unread
        row.notices = None
        session.flush()
    return notices
