"""What core hands to front ends: frozen copies of the rows, safe after the session closes.

The view classes, and the one place they are built from rows. Views are built
inside the caller's unit of work and never lazy-load afterwards; an address is
in a view only for its owner (logs and channels use ``masked``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import object_session

from .db import catalog_of, config_of
from .destinations import mask_address
from .errors import UnknownRule
from .models import Destination, Filter, Preference, Rule, User
from .rules import Catalog
from .store import ordered_filters, ordered_rules

__all__ = [
    "ContextView",
    "DestinationView",
    "FilterView",
    "NotificationView",
    "OutgoingCode",
    "PendingConfirmation",
    "PreviewHit",
    "RuleView",
    "context_view",
    "describe_rule",
    "destination_view",
    "feed_url",
    "filter_view",
    "filter_views",
    "rule_view",
]


@dataclass(frozen=True)
class RuleView:
    """One rule of a filter; ``number`` is 1-based, ``text`` like ``not app_is app=koji``."""

    number: int
    name: str
    title: str
    arguments: Mapping[str, Any]
    negated: bool
    text: str
    #: A time-bound rule: the matcher ignores it from then on (housekeeping deletes it).
    expires_at: dt.datetime | None = None


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
    #: The matcher skips the filter until then.
    paused_until: dt.datetime | None = None
    #: How its matches travel: ``instant`` or ``digest`` (the context's next digest).
    delivery: str = "instant"
    #: Its matches pass through quiet hours.
    urgent: bool = False


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
    #: For a feed (``rss``) or the live feed: the URL to give a feed reader or a
    #: live client (it carries the secret token, so only its owner gets it);
    #: None for other contexts, or when ``http.public_url`` is not set.
    url: str | None = None

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
    #: A daily digest at this local time (``HH:MM``), in ``digest_timezone``.
    digest_at: str | None = None
    digest_timezone: str = "UTC"
    #: Quiet hours (``HH:MM`` to ``HH:MM`` local, in ``quiet_timezone``), or None.
    quiet_from: str | None = None
    quiet_to: str | None = None
    quiet_timezone: str | None = None


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
    #: Why it has not been sent and until when, in words
    #: (``fmn_core.wording.waiting_reason``); ``"sent"`` once it was.
    reason: str = ""
    #: When a waiting row is looked at again (None once sent or dead).
    due_at: dt.datetime | None = None


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
    #: The front end that set the address (``tui`` or ``irc``; None before 0007).
    origin: str | None = None

    def __repr__(self) -> str:
        return (
            f"OutgoingCode(destination_id={self.destination_id!r}, user={self.user!r}, "
            f"context={self.context!r}, address={mask_address(self.context, self.address)!r})"
        )


def describe_rule(name: str, arguments: Mapping[str, Any], negated: bool) -> str:
    """A rule as text: ``not app_is app=koji``."""
    args = " ".join(f"{k}={v}" for k, v in sorted(arguments.items()))
    return " ".join(part for part in ("not" if negated else "", name, args) if part)


def rule_view(number: int, rule: Rule, catalog: Catalog) -> RuleView:
    """A rule as shown; a rule whose plugin is gone still shows."""
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
            describe_rule(rule.name, arguments, rule.negated),
            rule.expires_at,
        )
    return RuleView(
        number,
        rule.name,
        spec.title,
        arguments,
        rule.negated,
        describe_rule(rule.name, arguments, rule.negated),
        rule.expires_at,
    )


def _catalog_near(row: Filter | Preference) -> Catalog:
    # Views are built inside the caller's unit of work, so the row's session is
    # there, carrying the catalog as it carries the configuration.
    session = object_session(row)
    if session is None:
        raise RuntimeError(f"{type(row).__name__} is not in a session; build views inside one")
    return catalog_of(session)


def filter_view(context: str, filter_: Filter, catalog: Catalog | None = None) -> FilterView:
    """A filter and its rules as shown."""
    catalog = catalog if catalog is not None else _catalog_near(filter_)
    rules = tuple(
        rule_view(number, rule, catalog)
        for number, rule in enumerate(ordered_rules(filter_), start=1)
    )
    return FilterView(
        filter_.id,
        context,
        filter_.name,
        filter_.active,
        filter_.oneshot,
        filter_.position,
        rules,
        filter_.paused_until,
        filter_.delivery,
        filter_.urgent,
    )


#: Where the daemon serves a token's feed (``fmn_daemon.http``).
_FEED_PATHS = {"rss": "/feeds/{token}.rss", "live": "/live/sse/{token}"}


def feed_url(context: str, token: str, public_url: str | None) -> str | None:
    """The URL of a feed or live-feed token, as the daemon serves it (None elsewhere)."""
    path = _FEED_PATHS.get(context)
    if path is None or not public_url or not token:
        return None
    return public_url.rstrip("/") + path.format(token=token)


def destination_view(context: str, destination: Destination) -> DestinationView:
    """A destination as shown to its owner."""
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
        _feed_url_near(context, destination),
    )


def _feed_url_near(context: str, destination: Destination) -> str | None:
    if context not in _FEED_PATHS:
        return None
    session = object_session(destination)
    public_url = config_of(session).http.public_url if session is not None else None
    return feed_url(context, destination.address, public_url)


def context_view(context: str, preference: Preference | None, user: User | None) -> ContextView:
    """A user's settings for one context (the defaults without a row)."""
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
            destination_view(context, d)
            for d in sorted(preference.destinations, key=lambda d: d.id)
        ),
        tuple(filter_view(context, f, catalog) for f in ordered_filters(preference)),
        muted,
        preference.digest_at,
        preference.digest_timezone,
        preference.quiet_from,
        preference.quiet_to,
        preference.quiet_timezone,
    )


def filter_views(context: str, preference: Preference | None) -> list[FilterView]:
    """A context's filters as shown, in order."""
    if preference is None:
        return []
    catalog = _catalog_near(preference)
    return [filter_view(context, f, catalog) for f in ordered_filters(preference)]
