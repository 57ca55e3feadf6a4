"""The preference service: the one write path for everything a user can change.

Every function takes ``(session, actor, ...)``, validates its input, checks that
the actor may act on the target account, writes, and records a ``ChangeEvent``
so every process's matcher refreshes that user. The TUI and the IRC bot call
these functions and nothing else, so both accept the same input and say the
same words when they refuse it.

Rules of the house, all enforced here:

- Only admins may pass ``user=`` for another account; everyone else gets
  ``PermissionDenied``. Destinations and confirmations are only ever looked up
  inside the target user's own preferences, so no id reaches someone else's row.
- Input is validated before anything is written: a call that raises has written
  nothing. The one exception is :func:`confirm`, which must remember a wrong
  guess (see its docstring).
- Uniqueness is checked with a query before inserting, never by catching an
  ``IntegrityError`` (which would poison the caller's PostgreSQL transaction).
- Results are frozen dataclasses copied from the rows, safe after the session
  has closed. Core never commits, rolls back or closes the session.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, object_session, selectinload

from .accounts import check_account_name, directory_of, irc_fold
from .code_limits import check_code_limits, record_code
from .config import Config
from .db import catalog_of, config_of
from .destinations import (
    FEED_CONTEXTS,
    check_destination,
    hash_code,
    mask_address,
    new_code,
    new_feed_token,
    normalize_code,
)
from .errors import (
    AccountDirectoryUnavailable,
    AlreadyExists,
    ConfirmationFailed,
    InvalidArgument,
    MalformedMessage,
    NotFound,
    PermissionDenied,
    RateLimited,
    UnknownAccount,
    UnknownContext,
    UnknownRule,
)
from .filters import (
    MAX_FILTERS_PER_CONTEXT,
    MAX_RULES_PER_FILTER,
    FilterDraft,
    check_filter_name,
    stored_rule_name,
)
from .messages import facts_of, load_message
from .models import (
    ChangeEvent,
    Confirmation,
    Destination,
    Filter,
    Message,
    Notification,
    Preference,
    Rule,
    User,
    utcnow,
)
from .ownership import OwnershipCache
from .rules import Catalog, RuleContext, RuleSpec
from .templates import TemplateView, all_templates, find_template, template_view

__all__ = [
    "MAX_DESTINATIONS_PER_CONTEXT",
    "MAX_PENDING_PER_CONTEXT",
    "Actor",
    "ContextView",
    "DestinationView",
    "FilterView",
    "NotificationView",
    "OutgoingCode",
    "PendingConfirmation",
    "PreviewHit",
    "RuleView",
    "TemplateView",
    "add_filter",
    "add_rule",
    "confirm",
    "get_context",
    "get_filter",
    "list_contexts",
    "list_filters",
    "list_templates",
    "mark_code_sent",
    "move_filter",
    "mute",
    "pending_confirmation_codes",
    "preview",
    "profile_addresses",
    "recent_notifications",
    "remove_destination",
    "remove_filter",
    "remove_rule",
    "rename_filter",
    "resend_confirmation",
    "set_context_enabled",
    "set_destination",
    "set_digest",
    "set_filter_active",
    "set_filter_oneshot",
    "set_rule_negated",
    "unmute",
    "use_template",
]

log = logging.getLogger(__name__)

MAX_DESTINATIONS_PER_CONTEXT = 10
#: Unconfirmed addresses a context may hold at once: each one mails a stranger a code.
MAX_PENDING_PER_CONTEXT = 3
MAX_DIGEST_MINUTES = 7 * 24 * 60
MAX_DIGEST_COUNT = 1000
MAX_PREVIEW = 1000
MAX_RECENT = 200
MAX_MUTE = dt.timedelta(days=366)
_FEED_TOKEN_TRIES = 5


# --- actor and views ---------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who is acting: the account the front end authenticated, and whether it is an admin.

    ``irc_account`` is the IRC services account the bot saw the actor identified
    as in this command (mapped to ``name`` through the directory): an IRC
    destination equal to it is proven without a code.
    """

    name: str
    is_admin: bool = False
    irc_account: str | None = None


@dataclass(frozen=True)
class RuleView:
    """One rule of a filter; ``number`` is 1-based, ``text`` like ``not app_is app=koji``."""

    number: int
    name: str
    title: str
    arguments: Mapping[str, Any]
    negated: bool
    text: str


@dataclass(frozen=True)
class FilterView:
    """One filter; ``position`` is 1-based."""

    id: int
    context: str
    name: str
    active: bool
    oneshot: bool
    position: int
    rules: tuple[RuleView, ...]


@dataclass(frozen=True)
class DestinationView:
    """A destination; ``address`` only ever reaches its owner, elsewhere use ``masked``."""

    id: int
    context: str
    address: str
    masked: str
    confirmed: bool
    pending: bool
    expires_at: dt.datetime | None

    def __repr__(self) -> str:
        return (
            f"DestinationView(id={self.id!r}, context={self.context!r}, masked={self.masked!r}, "
            f"confirmed={self.confirmed!r})"
        )


@dataclass(frozen=True)
class ContextView:
    """A user's settings for one delivery context."""

    context: str
    enabled: bool
    digest_minutes: int
    digest_count: int
    destinations: tuple[DestinationView, ...]
    filters: tuple[FilterView, ...]
    muted_until: dt.datetime | None


@dataclass(frozen=True)
class PreviewHit:
    """A stored message a filter would have matched."""

    message_id: str
    topic: str
    summary: str
    received_at: dt.datetime


@dataclass(frozen=True)
class NotificationView:
    """One row of a user's outbox, with its message."""

    id: int
    message_id: str
    topic: str
    summary: str
    context: str
    filter_name: str
    state: str
    created_at: dt.datetime
    sent_at: dt.datetime | None


@dataclass(frozen=True)
class PendingConfirmation:
    """A destination and the one-time code to send to it (None when nothing to send)."""

    destination: DestinationView
    code: str | None

    def __repr__(self) -> str:
        return f"PendingConfirmation(destination={self.destination!r})"


@dataclass(frozen=True)
class OutgoingCode:
    """A confirmation code the daemon or the bot has yet to send."""

    destination_id: int
    user: str
    context: str
    address: str
    code: str

    def __repr__(self) -> str:
        return (
            f"OutgoingCode(destination_id={self.destination_id!r}, user={self.user!r}, "
            f"context={self.context!r}, address={mask_address(self.context, self.address)!r})"
        )


# --- validation helpers ------------------------------------------------------------


def _target(actor: Actor, user: str | None) -> str:
    """The account a call acts on, after the ownership check."""
    own = check_account_name(actor.name)
    if user is None:
        return own
    if not isinstance(user, str) or user.strip() != own:
        if not actor.is_admin:
            raise PermissionDenied(
                "You can only see and change your own preferences; ask an fmn administrator "
                "to act on another account."
            )
        return check_account_name(user)
    return own


def _context(session: Session, context: str) -> str:
    offered = config_of(session).contexts
    name = context.strip().lower() if isinstance(context, str) else ""
    if name not in offered:
        raise UnknownContext(str(context)[:40], offered)
    return name


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} must be true or false.", argument=what)
    return value


def _whole(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(
            f"{what} must be a whole number from {low} to {high}, not {str(value)[:20]!r}.",
            argument=what,
        )
    return value


# --- loading -----------------------------------------------------------------------


def _find_user(session: Session, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).one_or_none()


def _user_for_write(session: Session, name: str) -> User:
    """The user row, created on first use (queried first: no IntegrityError races here).

    Only for an account the directory knows: preferences for a name nobody holds
    would collect notifications for whoever registers it later.
    """
    user = _find_user(session, name)
    if user is None:
        if not directory_of(session).exists(name):
            raise UnknownAccount(name)
        user = User(name=name, confirm_failures=0)
        session.add(user)
        session.flush()
    return user


def _preferences_query(user: User) -> Select[Preference]:
    return (
        select(Preference)
        .where(Preference.user_id == user.id)
        .options(
            selectinload(Preference.filters).selectinload(Filter.rules),
            selectinload(Preference.destinations).selectinload(Destination.confirmation),
        )
    )


def _find_preference(session: Session, user: User | None, context: str) -> Preference | None:
    if user is None:
        return None
    statement = _preferences_query(user).where(Preference.context == context)
    return session.scalars(statement).one_or_none()


def _preference_for_write(session: Session, user: User, context: str) -> Preference:
    preference = _find_preference(session, user, context)
    if preference is None:
        preference = Preference(
            user=user, context=context, enabled=True, digest_minutes=0, digest_count=0
        )
        session.add(preference)
        session.flush()
    return preference


def _ordered_filters(preference: Preference) -> list[Filter]:
    return sorted(preference.filters, key=lambda f: (f.position, f.id or 0))


def _ordered_rules(filter_: Filter) -> list[Rule]:
    return sorted(filter_.rules, key=lambda r: (r.position, r.id or 0))


def _renumber(items: Sequence[Filter | Rule]) -> None:
    for position, item in enumerate(items, start=1):
        if item.position != position:
            item.position = position


def _lookup_filter(preference: Preference | None, context: str, name: str) -> Filter:
    """A filter by exact name, else by a unique case-insensitive match."""
    if isinstance(name, str) and preference is not None:
        wanted = name.strip()
        for filter_ in preference.filters:
            if filter_.name == wanted:
                return filter_
        folded = [f for f in preference.filters if f.name.casefold() == wanted.casefold()]
        if len(folded) == 1:
            return folded[0]
    raise NotFound(
        f"There is no filter called {str(name)[:60]!r} in {context}; list your filters to see "
        "their names."
    )


def _name_taken(preference: Preference | None, name: str, exclude: Filter | None = None) -> bool:
    if preference is None:
        return False
    return any(
        f is not exclude and f.name.casefold() == name.casefold() for f in preference.filters
    )


def _changed(session: Session, user: User, kind: str) -> None:
    session.add(ChangeEvent(user_id=user.id, kind=kind))
    session.flush()


# --- views -------------------------------------------------------------------------


def _describe(name: str, arguments: Mapping[str, Any], negated: bool) -> str:
    args = " ".join(f"{k}={v}" for k, v in sorted(arguments.items()))
    return " ".join(part for part in ("not" if negated else "", name, args) if part)


def _rule_view(number: int, rule: Rule, catalog: Catalog) -> RuleView:
    arguments = dict(rule.arguments or {})
    try:
        spec = catalog.get(rule.name)
    except UnknownRule:
        # A rule whose plugin is gone still shows; the matcher skips its filter.
        return RuleView(
            number,
            rule.name,
            f"{rule.name} (not installed)",
            arguments,
            rule.negated,
            _describe(rule.name, arguments, rule.negated),
        )
    return RuleView(
        number,
        rule.name,
        spec.title,
        arguments,
        rule.negated,
        _describe(rule.name, arguments, rule.negated),
    )


def _catalog_near(row: Filter | Preference) -> Catalog:
    # Views are built inside the caller's unit of work, so the row's session is
    # there, carrying the catalog as it carries the configuration.
    session = object_session(row)
    if session is None:
        raise RuntimeError(f"{type(row).__name__} is not in a session; build views inside one")
    return catalog_of(session)


def _filter_view(context: str, filter_: Filter, catalog: Catalog | None = None) -> FilterView:
    catalog = catalog if catalog is not None else _catalog_near(filter_)
    rules = tuple(
        _rule_view(number, rule, catalog)
        for number, rule in enumerate(_ordered_rules(filter_), start=1)
    )
    return FilterView(
        filter_.id, context, filter_.name, filter_.active, filter_.oneshot, filter_.position, rules
    )


def _destination_view(context: str, destination: Destination) -> DestinationView:
    confirmation = destination.confirmation
    pending = confirmation is not None and not destination.confirmed
    return DestinationView(
        destination.id,
        context,
        destination.address,
        mask_address(context, destination.address),
        destination.confirmed,
        pending,
        confirmation.expires_at if pending and confirmation is not None else None,
    )


def _context_view(context: str, preference: Preference | None, user: User | None) -> ContextView:
    muted = user.muted_until if user is not None else None
    if preference is None:
        return ContextView(context, True, 0, 0, (), (), muted)
    catalog = _catalog_near(preference)
    return ContextView(
        context,
        preference.enabled,
        preference.digest_minutes,
        preference.digest_count,
        tuple(
            _destination_view(context, d)
            for d in sorted(preference.destinations, key=lambda d: d.id)
        ),
        tuple(_filter_view(context, f, catalog) for f in _ordered_filters(preference)),
        muted,
    )


def _filter_views(context: str, preference: Preference | None) -> list[FilterView]:
    if preference is None:
        return []
    catalog = _catalog_near(preference)
    return [_filter_view(context, f, catalog) for f in _ordered_filters(preference)]


# --- contexts ----------------------------------------------------------------------


def list_contexts(session: Session, actor: Actor, *, user: str | None = None) -> list[ContextView]:
    """Every context this deployment offers, with the user's settings (defaults if none)."""
    name = _target(actor, user)
    row = _find_user(session, name)
    stored: dict[str, Preference] = {}
    if row is not None:
        stored = {p.context: p for p in session.scalars(_preferences_query(row))}
    return [_context_view(c, stored.get(c), row) for c in config_of(session).contexts]


def get_context(
    session: Session, actor: Actor, context: str, *, user: str | None = None
) -> ContextView:
    """One context's settings, destinations and filters."""
    name = _target(actor, user)
    context = _context(session, context)
    row = _find_user(session, name)
    return _context_view(context, _find_preference(session, row, context), row)


def set_context_enabled(
    session: Session, actor: Actor, context: str, enabled: bool, *, user: str | None = None
) -> ContextView:
    """Turn a whole context on or off (its filters and destinations are kept)."""
    name = _target(actor, user)
    context = _context(session, context)
    enabled = _bool(enabled, "enabled")
    row = _user_for_write(session, name)
    preference = _preference_for_write(session, row, context)
    preference.enabled = enabled
    _changed(session, row, "context")
    return _context_view(context, preference, row)


def set_digest(
    session: Session,
    actor: Actor,
    context: str,
    minutes: int,
    count: int = 0,
    *,
    user: str | None = None,
) -> ContextView:
    """Collect a context's notifications: send at most every ``minutes`` and/or after
    ``count`` of them; ``0, 0`` sends each one at once."""
    name = _target(actor, user)
    context = _context(session, context)
    minutes = _whole(minutes, "minutes", 0, MAX_DIGEST_MINUTES)
    count = _whole(count, "count", 0, MAX_DIGEST_COUNT)
    row = _user_for_write(session, name)
    preference = _preference_for_write(session, row, context)
    preference.digest_minutes, preference.digest_count = minutes, count
    _changed(session, row, "digest")
    return _context_view(context, preference, row)


# --- filters -----------------------------------------------------------------------


def _existing_filter(
    session: Session, actor: Actor, context: str, name: str, user: str | None
) -> tuple[User, Preference, Filter, str]:
    """The target user's filter, or ``NotFound``; nothing is created."""
    target = _target(actor, user)
    context = _context(session, context)
    row = _find_user(session, target)
    preference = _find_preference(session, row, context)
    filter_ = _lookup_filter(preference, context, name)
    assert row is not None and preference is not None  # a filter was found under them
    return row, preference, filter_, context


def list_filters(
    session: Session, actor: Actor, context: str, *, user: str | None = None
) -> list[FilterView]:
    """A context's filters in order."""
    name = _target(actor, user)
    context = _context(session, context)
    return _filter_views(context, _find_preference(session, _find_user(session, name), context))


def get_filter(
    session: Session, actor: Actor, context: str, name: str, *, user: str | None = None
) -> FilterView:
    """One filter by name (exact, else a unique case-insensitive match)."""
    _row, _preference, filter_, context = _existing_filter(session, actor, context, name, user)
    return _filter_view(context, filter_)


def add_filter(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    *,
    oneshot: bool = False,
    user: str | None = None,
) -> FilterView:
    """A new, empty, active filter at the end of the context; add rules to it next."""
    target = _target(actor, user)
    context = _context(session, context)
    name = check_filter_name(name)
    oneshot = _bool(oneshot, "oneshot")
    preference = _find_preference(session, _find_user(session, target), context)
    if _name_taken(preference, name):
        raise AlreadyExists(
            f"There is already a filter called {name!r} in {context}; choose another name."
        )
    if preference is not None and len(preference.filters) >= MAX_FILTERS_PER_CONTEXT:
        raise InvalidArgument(
            f"{context} already has {MAX_FILTERS_PER_CONTEXT} filters; remove one first.",
            argument="name",
        )
    row = _user_for_write(session, target)
    preference = _preference_for_write(session, row, context)
    filter_ = Filter(
        preference=preference,
        name=name,
        active=True,
        oneshot=oneshot,
        position=len(preference.filters) + 1,
    )
    session.add(filter_)
    _renumber(_ordered_filters(preference))
    _changed(session, row, "filter")
    return _filter_view(context, filter_)


def rename_filter(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    new_name: str,
    *,
    user: str | None = None,
) -> FilterView:
    """Give a filter another name."""
    new_name = check_filter_name(new_name)
    row, preference, filter_, context = _existing_filter(session, actor, context, name, user)
    if _name_taken(preference, new_name, exclude=filter_):
        raise AlreadyExists(
            f"There is already a filter called {new_name!r} in {context}; choose another name."
        )
    filter_.name = new_name
    _changed(session, row, "filter")
    return _filter_view(context, filter_)


def remove_filter(
    session: Session, actor: Actor, context: str, name: str, *, user: str | None = None
) -> None:
    """Delete a filter and its rules; the ones after it move up."""
    row, preference, filter_, _context_name = _existing_filter(session, actor, context, name, user)
    preference.filters.remove(filter_)
    _renumber(_ordered_filters(preference))
    _changed(session, row, "filter")


def move_filter(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    position: int,
    *,
    user: str | None = None,
) -> list[FilterView]:
    """Put a filter at a 1-based position; returns the context's filters in their new order."""
    row, preference, filter_, context = _existing_filter(session, actor, context, name, user)
    ordered = _ordered_filters(preference)
    position = _whole(position, "position", 1, len(ordered))
    ordered.remove(filter_)
    ordered.insert(position - 1, filter_)
    _renumber(ordered)
    _changed(session, row, "filter")
    return _filter_views(context, preference)


def set_filter_active(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    active: bool,
    *,
    user: str | None = None,
) -> FilterView:
    """Switch a filter on or off without deleting it."""
    active = _bool(active, "active")
    row, _preference, filter_, context = _existing_filter(session, actor, context, name, user)
    filter_.active = active
    _changed(session, row, "filter")
    return _filter_view(context, filter_)


def set_filter_oneshot(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    oneshot: bool,
    *,
    user: str | None = None,
) -> FilterView:
    """Make a filter switch itself off after its first notification (or not)."""
    oneshot = _bool(oneshot, "oneshot")
    row, _preference, filter_, context = _existing_filter(session, actor, context, name, user)
    filter_.oneshot = oneshot
    _changed(session, row, "filter")
    return _filter_view(context, filter_)


# --- rules -------------------------------------------------------------------------


def add_rule(
    session: Session,
    actor: Actor,
    context: str,
    filter_name: str,
    rule: str,
    arguments: Mapping[str, Any] | None,
    *,
    negated: bool = False,
    user: str | None = None,
) -> FilterView:
    """Add a catalog rule (validated against its parameters) to the end of a filter."""
    negated = _bool(negated, "negated")
    catalog = catalog_of(session)
    spec, normalized = catalog.validate(rule.strip() if isinstance(rule, str) else "", arguments)
    row, _preference, filter_, context = _existing_filter(
        session, actor, context, filter_name, user
    )
    stored = stored_rule_name(spec, catalog)
    if len(filter_.rules) >= MAX_RULES_PER_FILTER:
        raise InvalidArgument(
            f"Filter {filter_.name!r} already has {MAX_RULES_PER_FILTER} rules; remove one first.",
            argument="rule",
        )
    for existing in filter_.rules:
        if (existing.name, dict(existing.arguments or {}), existing.negated) == (
            stored,
            normalized,
            negated,
        ):
            raise AlreadyExists(
                f"Filter {filter_.name!r} already has the rule "
                f"{_describe(stored, normalized, negated)!r}."
            )
    session.add(
        Rule(
            filter=filter_,
            name=stored,
            arguments=normalized,
            negated=negated,
            position=len(filter_.rules) + 1,
        )
    )
    _renumber(_ordered_rules(filter_))
    _changed(session, row, "rule")
    return _filter_view(context, filter_, catalog)


def _numbered_rule(filter_: Filter, number: object) -> Rule:
    rules = _ordered_rules(filter_)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= len(rules):
        raise NotFound(
            f"Filter {filter_.name!r} has no rule {str(number)[:20]}; it has {len(rules)} rules, "
            "numbered from 1."
        )
    return rules[number - 1]


def remove_rule(
    session: Session,
    actor: Actor,
    context: str,
    filter_name: str,
    number: int,
    *,
    user: str | None = None,
) -> FilterView:
    """Remove a filter's rule by its 1-based number."""
    row, _preference, filter_, context = _existing_filter(
        session, actor, context, filter_name, user
    )
    rule = _numbered_rule(filter_, number)
    filter_.rules.remove(rule)
    _renumber(_ordered_rules(filter_))
    _changed(session, row, "rule")
    return _filter_view(context, filter_)


def set_rule_negated(
    session: Session,
    actor: Actor,
    context: str,
    filter_name: str,
    number: int,
    negated: bool,
    *,
    user: str | None = None,
) -> FilterView:
    """Make a rule mean its opposite (``not ...``), or undo that."""
    negated = _bool(negated, "negated")
    row, _preference, filter_, context = _existing_filter(
        session, actor, context, filter_name, user
    )
    _numbered_rule(filter_, number).negated = negated
    _changed(session, row, "rule")
    return _filter_view(context, filter_)


# --- destinations and confirmation -------------------------------------------------


def _new_confirmation(config: Config, now: dt.datetime) -> tuple[str, dict[str, Any]]:
    code = new_code()
    return code, {
        "secret_hash": hash_code(code),
        "outgoing_code": code,
        "expires_at": now + dt.timedelta(minutes=config.confirmation.ttl_minutes),
        "created_at": now,
    }


def _limited_code(
    session: Session,
    config: Config,
    name: str,
    user: User | None,
    context: str,
    address: str,
    now: dt.datetime,
) -> str:
    """Check the code-sending limits for one more code to ``address`` (writes nothing)."""
    return check_code_limits(session, config.confirmation, name, user, context, address, now)


def _regenerate(
    session: Session, config: Config, user: User, destination: Destination, now: dt.datetime
) -> str:
    """A new code for a pending destination (the old one stops working), within limits."""
    context = destination.preference.context
    key = _limited_code(session, config, user.name, user, context, destination.address, now)
    code, values = _new_confirmation(config, now)
    if destination.confirmation is None:
        # Imported or hand-made rows may lack one; start a fresh confirmation.
        destination.confirmation = Confirmation(**values)
    else:
        for field_name, value in values.items():
            setattr(destination.confirmation, field_name, value)
    record_code(session, config.confirmation, user, key, now)
    return code


def _unique_feed_token(session: Session) -> str:
    """A new feed token no destination holds yet (the column is unique as well)."""
    for _ in range(_FEED_TOKEN_TRIES):
        token = new_feed_token()
        taken = session.scalar(select(Destination.id).where(Destination.feed_token == token))
        if taken is None:
            return token
    # 192 random bits colliding again and again means the generator is broken.
    raise RuntimeError(f"no unused feed token after {_FEED_TOKEN_TRIES} tries")


def set_destination(
    session: Session, actor: Actor, context: str, address: str | None, *, user: str | None = None
) -> PendingConfirmation:
    """Add a destination to a context, unconfirmed, with a one-time code to send to it.

    E-mail addresses, IRC nicks and push URLs are checked first
    (:mod:`fmn_core.destinations`). For ``rss`` and ``live`` the address is
    ignored: fmn generates a secret feed token, unique across users, confirmed at
    once, and no code. Giving an address that is already pending makes a new code
    for it. Codes are limited per address and per user (:mod:`fmn_core.code_limits`):
    past a limit this raises ``TooManyCodes`` and writes nothing.
    """
    target = _target(actor, user)
    context = _context(session, context)
    config = config_of(session)
    feed = context in FEED_CONTEXTS
    normalized = (
        _unique_feed_token(session)
        if feed
        else check_destination(context, address or "", config.push, fcm=config.fcm)
    )
    now = utcnow()
    found_user = _find_user(session, target)
    preference = _find_preference(session, found_user, context)
    existing = [] if preference is None else list(preference.destinations)
    verified = not feed and _verified_address(session, actor, target, context, normalized)
    for destination in existing:
        if destination.address != normalized:
            continue
        if destination.confirmed:
            raise AlreadyExists(
                f"{mask_address(context, normalized)} is already a confirmed destination for "
                f"{context}."
            )
        if verified:
            destination.confirmed, destination.confirmation = True, None
            _changed(session, destination.preference.user, "destination")
            return PendingConfirmation(_destination_view(context, destination), None)
        owner = destination.preference.user
        fresh = _regenerate(session, config, owner, destination, now)
        _changed(session, owner, "destination")
        return PendingConfirmation(_destination_view(context, destination), fresh)
    if len(existing) >= MAX_DESTINATIONS_PER_CONTEXT:
        raise InvalidArgument(
            f"{context} already has {MAX_DESTINATIONS_PER_CONTEXT} destinations; remove one first.",
            argument="address",
        )
    if not (feed or verified) and sum(not d.confirmed for d in existing) >= MAX_PENDING_PER_CONTEXT:
        raise RateLimited(
            f"{context} already has {MAX_PENDING_PER_CONTEXT} destinations waiting for "
            "confirmation; confirm or remove one first."
        )
    key = (
        None
        if feed or verified
        else _limited_code(session, config, target, found_user, context, normalized, now)
    )
    row = _user_for_write(session, target)
    preference = _preference_for_write(session, row, context)
    destination = Destination(
        preference=preference,
        address=normalized,
        feed_token=normalized if feed else None,
        confirmed=feed or verified,
        created_at=now,
    )
    code: str | None = None
    if key is not None:
        code, values = _new_confirmation(config, now)
        destination.confirmation = Confirmation(**values)
    session.add(destination)
    if key is not None:
        record_code(session, config.confirmation, row, key, now)
    _changed(session, row, "destination")
    log.info(
        "user %s added %s destination %s", row.name, context, mask_address(context, normalized)
    )
    return PendingConfirmation(_destination_view(context, destination), code)


def _verified_address(
    session: Session, actor: Actor, target: str, context: str, address: str
) -> bool:
    """Whether Fedora Accounts already proves this address is the target's, so no code.

    An email listed in the target's profile (Fedora Accounts verifies emails
    before storing them); an IRC nick that is the services account the actor is
    identified as right now, when it acts for itself (a profile can name any
    nick, so a profile nick alone proves nothing).
    """
    if context == "email":
        try:
            profile = directory_of(session).profile(target)
        except AccountDirectoryUnavailable as exc:
            # Not knowing is no proof: the address gets a code, as any other would.
            log.warning("cannot read %s's profile (%s); the address needs a code", target, exc)
            return False
        listed = {_email_key(e) for e in profile.emails} if profile is not None else set()
        return _email_key(address) in listed
    if context == "irc":
        return (
            actor.irc_account is not None
            and target == actor.name
            and irc_fold(actor.irc_account) == irc_fold(address)
        )
    return False


def _email_key(address: str) -> str:
    # Domains are case-insensitive; local parts may not be, so they must match exactly.
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def profile_addresses(
    session: Session, actor: Actor, *, user: str | None = None
) -> dict[str, tuple[str, ...]]:
    """The addresses the account's profile offers, by context (``email``; ``irc`` for the
    actor's own IRC account): setting one needs no confirmation code."""
    target = _target(actor, user)
    profile = directory_of(session).profile(target)
    offered: dict[str, tuple[str, ...]] = {}
    if profile is not None and profile.emails:
        offered["email"] = profile.emails
    if actor.irc_account is not None and target == actor.name:
        offered["irc"] = (actor.irc_account,)
    return offered


def resend_confirmation(
    session: Session, actor: Actor, context: str, *, user: str | None = None
) -> PendingConfirmation:
    """A fresh code (the old one stops working) for the context's newest unconfirmed
    destination, within the same limits as :func:`set_destination` (``TooManyCodes``)."""
    target = _target(actor, user)
    context = _context(session, context)
    config = config_of(session)
    row = _find_user(session, target)
    preference = _find_preference(session, row, context)
    pending = (
        []
        if preference is None
        else [d for d in preference.destinations if not d.confirmed and d.confirmation is not None]
    )
    if row is None or not pending:
        raise NotFound(
            f"Nothing in {context} is waiting for confirmation; set a destination first."
        )
    destination = max(pending, key=lambda d: d.id)
    code = _regenerate(session, config, row, destination, utcnow())
    _changed(session, row, "confirmation")
    return PendingConfirmation(_destination_view(context, destination), code)


def confirm(session: Session, actor: Actor, code: str) -> DestinationView:
    """Confirm one of the actor's own destinations with the code sent to it.

    The code is single-use, case-insensitive and may contain spaces. Wrong guesses
    are counted on the user; after ``confirmation.max_failures`` of them the user
    is locked out for ``confirmation.lockout_minutes`` (``RateLimited``).

    Unlike every other call here, a failing ``confirm`` writes before it raises:
    the failure count. The caller must commit the session when it catches
    ``ConfirmationFailed`` or ``RateLimited`` from this call, or guessing is
    unlimited.
    """
    config = config_of(session).confirmation
    name = check_account_name(actor.name)
    # The user's row is locked (PostgreSQL; SQLite serializes writers anyway) and read
    # afresh: guesses sent in parallel (the bot is threaded) would otherwise all read
    # the same failure count, each add one to it, and guessing would be unlimited.
    row = session.scalars(
        select(User)
        .where(User.name == name)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    now = utcnow()
    if row is not None and row.confirm_locked_until is not None and row.confirm_locked_until > now:
        raise RateLimited(
            "Too many wrong codes; wait until "
            f"{row.confirm_locked_until:%H:%M} UTC, then try again."
        )
    pending: list[Confirmation] = []
    if row is not None:
        pending = list(
            session.scalars(
                select(Confirmation)
                .join(Destination, Destination.id == Confirmation.destination_id)
                .join(Preference, Preference.id == Destination.preference_id)
                .where(Preference.user_id == row.id, Destination.confirmed.is_(False))
                .options(
                    selectinload(Confirmation.destination).selectinload(Destination.preference)
                )
            )
        )
    if row is None or not pending:
        raise ConfirmationFailed(
            "You have nothing waiting for confirmation; set a destination first."
        )
    wanted = hash_code(code) if isinstance(code, str) else ""
    found = next((c for c in pending if hmac.compare_digest(c.secret_hash, wanted)), None)
    if found is not None and found.expires_at <= now:
        raise ConfirmationFailed("This code has expired; ask for a new code and enter that one.")
    if found is None:
        row.confirm_failures = (row.confirm_failures or 0) + 1
        if row.confirm_failures >= config.max_failures:
            row.confirm_failures = 0
            row.confirm_locked_until = now + dt.timedelta(minutes=config.lockout_minutes)
            session.flush()
            log.warning(
                "user %s locked out of confirming after %d wrong codes",
                row.name,
                config.max_failures,
            )
            raise RateLimited(
                f"Too many wrong codes; wait {config.lockout_minutes} minutes, then try again."
            )
        session.flush()
        shown = normalize_code(code)[:12] if isinstance(code, str) else ""
        raise ConfirmationFailed(
            f"The code {shown!r} is wrong or was already used; check it, or ask for a new code."
        )
    destination = found.destination
    context = destination.preference.context
    destination.confirmed = True
    destination.confirmation = None
    row.confirm_failures = 0
    row.confirm_locked_until = None
    _changed(session, row, "confirmation")
    log.info(
        "user %s confirmed %s destination %s",
        row.name,
        context,
        mask_address(context, destination.address),
    )
    return _destination_view(context, destination)


def remove_destination(
    session: Session, actor: Actor, context: str, destination_id: int, *, user: str | None = None
) -> None:
    """Delete one of the context's destinations (and any pending code for it)."""
    target = _target(actor, user)
    context = _context(session, context)
    preference = _find_preference(session, _find_user(session, target), context)
    destination = None
    if preference is not None and type(destination_id) is int:
        # Only ever inside the target's own preference: an id alone reaches nothing.
        destination = next((d for d in preference.destinations if d.id == destination_id), None)
    if preference is None or destination is None:
        raise NotFound(
            f"There is no destination {str(destination_id)[:20]} in {context}; list the "
            "context to see its destinations."
        )
    preference.destinations.remove(destination)
    _changed(session, preference.user, "destination")


def pending_confirmation_codes(
    session: Session, contexts: Iterable[str] | None = None
) -> list[OutgoingCode]:
    """Codes made but not yet sent (and not expired), for the daemon and the bot to
    deliver; call :func:`mark_code_sent` after each one has gone out."""
    statement = (
        select(Confirmation, Destination, Preference, User)
        .join(Destination, Destination.id == Confirmation.destination_id)
        .join(Preference, Preference.id == Destination.preference_id)
        .join(User, User.id == Preference.user_id)
        .where(
            Confirmation.outgoing_code.is_not(None),
            Confirmation.expires_at > utcnow(),
            Destination.confirmed.is_(False),
        )
        .order_by(Confirmation.id)
    )
    if contexts is not None:
        wanted = [contexts] if isinstance(contexts, str) else list(contexts)
        statement = statement.where(Preference.context.in_(wanted))
    return [
        OutgoingCode(
            destination.id,
            user.name,
            preference.context,
            destination.address,
            str(confirmation.outgoing_code),
        )
        for confirmation, destination, preference, user in session.execute(statement)
    ]


def mark_code_sent(session: Session, destination_id: int) -> bool:
    """Forget a code's clear text once it is sent; False if it was confirmed or removed
    meanwhile."""
    confirmation = session.scalars(
        select(Confirmation).where(Confirmation.destination_id == destination_id)
    ).one_or_none()
    if confirmation is None:
        return False
    confirmation.outgoing_code = None
    confirmation.sent_count = (confirmation.sent_count or 0) + 1
    confirmation.last_sent_at = utcnow()
    session.flush()
    return True


# --- templates ---------------------------------------------------------------------


def list_templates(session: Session) -> list[TemplateView]:
    """The built-in templates, then the operator's."""
    return [template_view(t) for t in all_templates(session)]


def _add_drafts(session: Session, preference: Preference, drafts: Sequence[FilterDraft]) -> None:
    position = len(preference.filters)
    for draft in drafts:
        position += 1
        filter_ = Filter(
            preference=preference,
            name=draft.name,
            active=draft.active,
            oneshot=draft.oneshot,
            position=position,
            delivery=draft.delivery,
            urgent=draft.urgent,
        )
        session.add(filter_)
        for number, rule in enumerate(draft.rules, start=1):
            session.add(
                Rule(
                    filter=filter_,
                    name=rule.name,
                    arguments=dict(rule.arguments),
                    negated=rule.negated,
                    position=number,
                )
            )


def use_template(
    session: Session, actor: Actor, template: str, context: str, *, user: str | None = None
) -> list[FilterView]:
    """Copy a template's filters to the end of a context; returns all its filters."""
    target = _target(actor, user)
    context = _context(session, context)
    found = find_template(session, template) if isinstance(template, str) else None
    if found is None:
        names = ", ".join(t.name for t in all_templates(session))
        raise NotFound(
            f"There is no template called {str(template)[:40]!r}; choose one of: {names}."
        )
    drafts = found.parse(catalog_of(session))
    preference = _find_preference(session, _find_user(session, target), context)
    for draft in drafts:
        if _name_taken(preference, draft.name):
            raise AlreadyExists(
                f"{context} already has a filter called {draft.name!r}; rename or remove it "
                f"before using the template {found.name!r}."
            )
    existing = 0 if preference is None else len(preference.filters)
    if existing + len(drafts) > MAX_FILTERS_PER_CONTEXT:
        raise InvalidArgument(
            f"{context} would have more than {MAX_FILTERS_PER_CONTEXT} filters; remove some first.",
            argument="template",
        )
    row = _user_for_write(session, target)
    preference = _preference_for_write(session, row, context)
    _add_drafts(session, preference, drafts)
    _changed(session, row, "template")
    return _filter_views(context, preference)


# --- looking back ------------------------------------------------------------------


def _facts(message: Message) -> Any:
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
    except MalformedMessage:
        return None


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

    The filter's rules are AND'd, like the matcher does; a filter without rules
    matches nothing. A rule that raises on a message counts as not matching.
    """
    limit = _whole(limit, "limit", 1, MAX_PREVIEW)
    row, _preference, filter_, _ctx = _existing_filter(session, actor, context, filter_name, user)
    catalog = catalog_of(session)
    compiled: list[tuple[RuleSpec, dict[str, Any], bool]] = []
    for rule in _ordered_rules(filter_):
        spec = catalog.get(rule.name)
        compiled.append((spec, spec.validate(rule.arguments), rule.negated))
    if not compiled:
        return []
    rule_context = RuleContext(row.name, OwnershipCache.load(session), directory_of(session))
    messages = session.scalars(
        select(Message).order_by(Message.received_at.desc(), Message.id.desc()).limit(limit)
    )
    hits: list[PreviewHit] = []
    for message in messages:
        facts = _facts(message)
        if facts is not None and _matches(compiled, facts, rule_context):
            hits.append(PreviewHit(message.id, message.topic, facts.summary, message.received_at))
    return hits


def _matches(
    compiled: Sequence[tuple[RuleSpec, dict[str, Any], bool]], facts: Any, context: RuleContext
) -> bool:
    for spec, arguments, negated in compiled:
        try:
            result = spec(facts, context, arguments)
        except Exception:  # a rule's failure is its filter's miss, as in the matcher
            log.debug(
                "rule %s raised on message %s in a preview", spec.name, facts.id, exc_info=True
            )
            return False
        if result == negated:
            return False
    return True


def recent_notifications(
    session: Session,
    actor: Actor,
    *,
    context: str | None = None,
    limit: int = 20,
    user: str | None = None,
) -> list[NotificationView]:
    """The user's latest notifications (newest first), whatever their state."""
    target = _target(actor, user)
    if context is not None:
        context = _context(session, context)
    limit = _whole(limit, "limit", 1, MAX_RECENT)
    row = _find_user(session, target)
    if row is None:
        return []
    statement = (
        select(Notification, Message)
        .join(Message, Message.id == Notification.message_id)
        .where(Notification.user_id == row.id)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit)
    )
    if context is not None:
        statement = statement.where(Notification.context == context)
    views = []
    for notification, message in session.execute(statement):
        facts = _facts(message)
        views.append(
            NotificationView(
                notification.id,
                message.id,
                message.topic,
                facts.summary if facts else "",
                notification.context,
                notification.filter_name,
                notification.state,
                notification.created_at,
                notification.sent_at,
            )
        )
    return views


# --- muting ------------------------------------------------------------------------


def mute(
    session: Session, actor: Actor, until: dt.datetime | dt.timedelta, *, user: str | None = None
) -> dt.datetime:
    """Hold back every notification (they are kept) until a time, or for a duration."""
    target = _target(actor, user)
    now = utcnow()
    if isinstance(until, dt.timedelta):
        # Checked before adding: a duration of a million years overflows a datetime.
        if not dt.timedelta(0) < until <= MAX_MUTE:
            raise InvalidArgument(
                "A mute must end in the future and within a year; choose another time.",
                argument="until",
            )
        until = now + until
    if not isinstance(until, dt.datetime) or until.tzinfo is None:
        raise InvalidArgument(
            "Give the end of the mute as a time with a timezone, or as a duration.",
            argument="until",
        )
    if until <= now or until - now > MAX_MUTE:
        raise InvalidArgument(
            "A mute must end in the future and within a year; choose another time.",
            argument="until",
        )
    row = _user_for_write(session, target)
    row.muted_until = until.astimezone(dt.UTC)
    _changed(session, row, "mute")
    return row.muted_until


def unmute(session: Session, actor: Actor, *, user: str | None = None) -> None:
    """Deliver again; what was held back while muted follows."""
    target = _target(actor, user)
    row = _find_user(session, target)
    if row is None or row.muted_until is None:
        return
    row.muted_until = None
    _changed(session, row, "mute")
