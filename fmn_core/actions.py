"""Acting from a notification: "mute this package", "pause this filter for 7 days".

A notification names the filter that sent it (its outbox row), so refining that
filter needs no filter editor: each action is one change through the preference
service, made to the filter that sent the notification:

- ``mute-package``: ``not package_involved package=<one of the message's packages>``;
- ``mute-app``: ``not app_is app=<the message's application>``;
- ``pause-filter``: the filter is skipped for :data:`PAUSE_DAYS` days;
- ``digest``: sending one filter's notifications to a digest is the per-filter
  delivery mode of issue 13, not in this deployment yet: it says so and changes
  nothing.

The bot and the TUI call :func:`act_on_notification` as the signed-in user. Mail
footers and feed entries carry signed links instead (:class:`~fmn_core.rendering.Links`):
:func:`check_claim` turns a genuine token into the user it was made for, refusing it
once it expired, once the user withdrew their links (a new ``users.link_nonce``:
:func:`revoke_action_links`), once the feed token whose feed carried it is no longer
theirs, or when the notification it names is not theirs. A link only ever acts as
the user it was made for, on their own notification.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from .access import Actor, offered_context, target_account
from .config import CONTEXTS
from .delivery_settings import set_filter_delivery
from .editing import add_rule, pause_filter
from .errors import ActionLinkRefused, AlreadyExists, InvalidArgument, NotFound
from .explain import message_id_of
from .feeds import token_fingerprint
from .messages import MessageFacts
from .models import Destination, Filter, Notification, Preference, StoredMessage, User, utcnow
from .rendering import ACTION_TITLES, ActionClaim
from .store import lock_account, record_change
from .stored_messages import stored_facts

__all__ = [
    "ACTIONS",
    "MUTE_DAYS_MAX",
    "PAUSE_DAYS",
    "ActionPlan",
    "act_on_notification",
    "check_claim",
    "plan_action",
    "revoke_action_links",
]

#: The actions, as links and commands name them.
ACTIONS = tuple(ACTION_TITLES)
#: "Pause this filter for 7 days".
PAUSE_DAYS = 7
#: A mute may be time-bound, for at most this many days.
MUTE_DAYS_MAX = 365


@dataclass(frozen=True)
class ActionPlan:
    """What an action would change, before it is applied (the GET page shows this)."""

    user: str
    message_id: str
    action: str
    title: str
    #: ``(context, filter name)`` of each notification the message made for the user.
    filters: tuple[tuple[str, str], ...]
    #: What the user chooses from (the message's packages for ``mute-package``).
    choices: tuple[str, ...]
    #: One sentence per change it would make, as the result will say it.
    changes: tuple[str, ...]
    #: Why it cannot be applied, or "".
    unavailable: str = ""


def _check_action(action: str) -> str:
    if not isinstance(action, str) or action not in ACTION_TITLES:
        raise InvalidArgument(
            f"There is no action {str(action)[:30]!r}; the actions are: {', '.join(ACTIONS)}.",
            argument="action",
        )
    return action


def _notifications(
    session: Session, user: User | None, message_id: str, context: str | None
) -> list[tuple[Notification, Filter]]:
    """The user's notifications for the message (one context's, if given) and their filters."""
    if user is None:
        return []
    statement = (
        select(Notification, Filter)
        .join(
            Filter,
            or_(
                Filter.id == Notification.filter_id,
                # A row whose filter id is gone (older rows, a filter removed and made
                # again): the user's filter of that name in that context, if any.
                and_(Notification.filter_id.is_(None), Filter.name == Notification.filter_name),
            ),
        )
        .join(Preference, Preference.id == Filter.preference_id)
        .where(
            Notification.message_id == message_id,
            Notification.user_id == user.id,
            # The filter must still be the user's own, in the same context.
            Preference.user_id == user.id,
            Preference.context == Notification.context,
        )
    )
    if context is not None:
        statement = statement.where(Notification.context == context)
    found = [(row[0], row[1]) for row in session.execute(statement)]
    order = {name: i for i, name in enumerate(CONTEXTS)}
    return sorted(found, key=lambda pair: order.get(pair[0].context, len(order)))


def _facts(session: Session, message_id: str) -> MessageFacts:
    row = session.get(StoredMessage, message_id)
    facts = stored_facts(row) if row is not None else None
    if facts is None:
        raise NotFound(f"fmn can no longer read the message {message_id[:80]!r}.")
    return facts


def _rule_change(
    rule: str, argument: str, value: str, filter_name: str, context: str, until: dt.datetime | None
) -> str:
    expiry = f", expiring on {until:%Y-%m-%d %H:%M} UTC" if until is not None else ""
    return f"`not {rule} {argument}={value}` added to filter {filter_name!r} ({context}){expiry}"


def _until(days: int | None, now: dt.datetime) -> dt.datetime | None:
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MUTE_DAYS_MAX:
        raise InvalidArgument(
            f"A mute lasts from 1 to {MUTE_DAYS_MAX} days, or for good.", argument="days"
        )
    return now + dt.timedelta(days=days)


def _plan(
    session: Session,
    target: str,
    message_id: str,
    action: str,
    context: str | None,
    choice: str | None,
    days: int | None,
    now: dt.datetime,
) -> ActionPlan:
    action = _check_action(action)
    if context is not None:
        context = offered_context(session, context)
    user = session.scalars(select(User).where(User.name == target)).one_or_none()
    pairs = _notifications(session, user, message_id, context)
    if not pairs:
        raise NotFound(
            f"You have no notification for the message {message_id[:80]!r}"
            + (f" in {context}" if context else "")
            + "; actions act on the filter that sent you one."
        )
    filters = tuple((n.context, f.name) for n, f in pairs)
    title = ACTION_TITLES[action]
    if action == "digest":
        changes = tuple(
            f"filter {name!r} ({ctx}) now sends its matches to the {ctx} digest"
            for ctx, name in filters
        )
        return ActionPlan(target, message_id, action, title, filters, (), changes)
    if action == "pause-filter":
        until = now + dt.timedelta(days=PAUSE_DAYS)
        changes = tuple(
            f"filter {name!r} ({ctx}) paused until {until:%Y-%m-%d %H:%M} UTC"
            for ctx, name in filters
        )
        return ActionPlan(target, message_id, action, title, filters, (), changes)
    facts = _facts(session, message_id)
    mute_until = _until(days, now)
    if action == "mute-app":
        app = facts.app_name.lower()
        if not app:
            return ActionPlan(
                target,
                message_id,
                action,
                title,
                filters,
                (),
                (),
                "This message names no application to mute.",
            )
        changes = tuple(
            _rule_change("app_is", "app", app, name, ctx, mute_until) for ctx, name in filters
        )
        return ActionPlan(target, message_id, action, title, filters, (app,), changes)
    packages = tuple(sorted(facts.packages))
    if not packages:
        return ActionPlan(
            target, message_id, action, title, filters, (), (), "This message is about no package."
        )
    chosen = [choice] if choice is not None else list(packages)
    if choice is not None and (not isinstance(choice, str) or choice not in packages):
        raise InvalidArgument(
            f"The message is not about {str(choice)[:60]!r}; choose one of: {', '.join(packages)}.",
            argument="package",
        )
    changes = tuple(
        _rule_change("package_involved", "package", package, name, ctx, mute_until)
        for package in chosen
        for ctx, name in filters
    )
    return ActionPlan(target, message_id, action, title, filters, packages, changes)


def plan_action(
    session: Session,
    actor: Actor,
    message: str,
    action: str,
    *,
    context: str | None = None,
    days: int | None = None,
    user: str | None = None,
) -> ActionPlan:
    """What ``action`` would change for the user's notification of ``message``; writes nothing."""
    target = target_account(actor, user)
    return _plan(session, target, message_id_of(message), action, context, None, days, utcnow())


def act_on_notification(
    session: Session,
    actor: Actor,
    message: str,
    action: str,
    *,
    context: str | None = None,
    choice: str | None = None,
    days: int | None = None,
    user: str | None = None,
) -> list[str]:
    """Apply an action to the filter(s) that sent the user ``message``; what was written.

    Without ``context``, every notification the message made for the user is
    acted on. ``choice`` is the package for ``mute-package`` (needed when the
    message names several); ``days`` makes a mute time-bound. Changes go through
    the preference service (so they are validated and every matcher reloads);
    one already in place is reported as such rather than refused.
    """
    target = target_account(actor, user)
    message_id = message_id_of(message)
    now = utcnow()
    # The plan and the writes see one state of the account (a link clicked twice).
    lock_account(session, target)
    plan = _plan(session, target, message_id, action, context, choice, days, now)
    if plan.unavailable:
        raise InvalidArgument(plan.unavailable, argument="action")
    if action == "mute-package" and choice is None and len(plan.choices) > 1:
        raise InvalidArgument(
            f"The message is about several packages; choose one of: {', '.join(plan.choices)}.",
            argument="package",
        )
    owner = Actor(target)
    written: list[str] = []
    if action == "pause-filter":
        resume = now + dt.timedelta(days=PAUSE_DAYS)
        for (ctx, name), change in zip(plan.filters, plan.changes, strict=True):
            pause_filter(session, owner, ctx, name, resume)
            written.append(change)
        return written
    if action == "digest":
        for (ctx, name), change in zip(plan.filters, plan.changes, strict=True):
            set_filter_delivery(session, owner, ctx, name, "digest")
            written.append(change)
        return written
    rule, argument = ("app_is", "app") if action == "mute-app" else ("package_involved", "package")
    value = plan.choices[0] if choice is None else choice
    until = _until(days, now)
    for ctx, name in plan.filters:
        change = _rule_change(rule, argument, value, name, ctx, until)
        try:
            add_rule(
                session, owner, ctx, name, rule, {argument: value}, negated=True, expires_at=until
            )
        except AlreadyExists:
            written.append(f"{change.split(' added to ')[0]} is already in filter {name!r} ({ctx})")
            continue
        written.append(change)
    return written


def check_claim(session: Session, claim: ActionClaim, now: dt.datetime | None = None) -> Actor:
    """The user a genuine action token acts for, if it still holds; else ``ActionLinkRefused``."""
    now = now or utcnow()
    if claim.expires <= now:
        raise ActionLinkRefused(
            f"This link expired on {claim.expires:%Y-%m-%d}; use the fmn TUI, or the bot's "
            f"commands (fmn why {claim.message_id[:80]}), to change your filters instead."
        )
    user = session.scalars(select(User).where(User.name == claim.user)).one_or_none()
    if user is None or (user.link_nonce or 0) != claim.nonce:
        raise ActionLinkRefused(
            "This link was withdrawn: you asked fmn to refuse the links it had sent you. "
            "Newer notifications carry links that work."
        )
    if claim.via and not _carried_by_a_held_token(session, user, claim.context, claim.via):
        raise ActionLinkRefused(
            "This link came in a feed whose address you have since removed; the links in "
            "your feed's new address work."
        )
    if claim.action not in ACTION_TITLES:
        raise ActionLinkRefused("This link names no action fmn knows.")
    if not _notifications(session, user, claim.message_id, claim.context):
        raise ActionLinkRefused(
            "The notification this link belongs to, or the filter that sent it, is gone."
        )
    return Actor(user.name)


def _carried_by_a_held_token(session: Session, user: User, context: str, via: str) -> bool:
    """Whether ``via`` fingerprints one of the user's confirmed ``context`` feed tokens.

    A feed's links go with its token: the user removes a token because it leaked,
    and whoever read the feed must lose its links too. Links sent by mail are not
    tied to a token (no ``via``) and are not touched.
    """
    addresses = session.scalars(
        select(Destination.address)
        .join(Preference, Preference.id == Destination.preference_id)
        .where(
            Preference.user_id == user.id,
            Preference.context == context,
            Destination.confirmed.is_(True),
        )
    )
    return any(token_fingerprint(address) == via for address in addresses)


def revoke_action_links(session: Session, actor: Actor, *, user: str | None = None) -> int:
    """Refuse every action link sent so far (the user changed their mind); the new nonce."""
    target = target_account(actor, user)
    lock_account(session, target)
    row = session.scalars(select(User).where(User.name == target)).one_or_none()
    if row is None:
        return 0
    row.link_nonce = (row.link_nonce or 0) + 1
    record_change(session, row, "links")
    return row.link_nonce


def describe_choices(plan: ActionPlan) -> Sequence[str]:
    """The values a page offers one button each for (none: a single button)."""
    return plan.choices if plan.action == "mute-package" and len(plan.choices) > 1 else ()
