"""The write path for what a user shapes: contexts, filters, rules, templates, muting.

Every function takes ``(session, actor, ...)``, validates its input, checks that
the actor may act on the target account (:mod:`fmn_core.access`), writes, and
records a change event so every process's matcher reloads that user. A call that
raises has written nothing. Results are views (:mod:`fmn_core.views`). Front ends
reach these through :mod:`fmn_core.preferences`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy.orm import Session

from .access import Actor, check_bool, check_whole, offered_context, target_account
from .db import catalog_of, config_of
from .errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
)
from .filters import (
    MAX_FILTERS_PER_CONTEXT,
    MAX_MUTE,
    MAX_RULES_PER_FILTER,
    check_filter_name,
    stored_rule_name,
)
from .models import Filter, Preference, Rule, utcnow
from .schedule import check_local_time, check_timezone
from .store import (
    add_drafts,
    existing_filter,
    find_preference,
    find_user,
    lock_account,
    name_taken,
    ordered_filters,
    ordered_rules,
    preference_for_write,
    preferences_query,
    record_change,
    renumber,
    user_for_write,
)
from .templates import TemplateView, all_templates, find_template, template_view
from .views import (
    ContextView,
    FilterView,
    context_view,
    describe_rule,
    filter_view,
    filter_views,
)
from .waiting import POLICY_HOLDS, release_held

__all__ = [
    "MAX_DIGEST_COUNT",
    "MAX_DIGEST_MINUTES",
    "MAX_MUTE",
    "add_filter",
    "add_rule",
    "get_context",
    "get_filter",
    "list_contexts",
    "list_filters",
    "list_templates",
    "move_filter",
    "mute",
    "pause_filter",
    "remove_filter",
    "remove_rule",
    "rename_filter",
    "set_context_enabled",
    "set_digest",
    "set_filter_active",
    "set_filter_oneshot",
    "set_rule_negated",
    "unmute",
    "use_template",
]

MAX_DIGEST_MINUTES = 7 * 24 * 60
MAX_DIGEST_COUNT = 1000


# --- contexts ----------------------------------------------------------------------


def list_contexts(session: Session, actor: Actor, *, user: str | None = None) -> list[ContextView]:
    """Every context this deployment offers, with the user's settings (defaults if none)."""
    name = target_account(actor, user)
    row = find_user(session, name)
    stored: dict[str, Preference] = {}
    if row is not None:
        stored = {p.context: p for p in session.scalars(preferences_query(row))}
    return [context_view(c, stored.get(c), row) for c in config_of(session).contexts]


def get_context(
    session: Session, actor: Actor, context: str, *, user: str | None = None
) -> ContextView:
    """One context's settings, destinations and filters."""
    name = target_account(actor, user)
    context = offered_context(session, context)
    row = find_user(session, name)
    return context_view(context, find_preference(session, row, context), row)


def set_context_enabled(
    session: Session, actor: Actor, context: str, enabled: bool, *, user: str | None = None
) -> ContextView:
    """Turn a whole context on or off (its filters and destinations are kept)."""
    name = target_account(actor, user)
    context = offered_context(session, context)
    enabled = check_bool(enabled, "enabled")
    lock_account(session, name)
    row = user_for_write(session, name)
    preference = preference_for_write(session, row, context)
    preference.enabled = enabled
    record_change(session, row, "context")
    return context_view(context, preference, row)


def set_digest(
    session: Session,
    actor: Actor,
    context: str,
    minutes: int,
    count: int = 0,
    *,
    at: str | None = None,
    timezone: str | None = None,
    user: str | None = None,
) -> ContextView:
    """When a context's digest goes out: at most every ``minutes``, after ``count``
    notifications, and/or daily at ``at`` (``HH:MM``) in ``timezone`` (an IANA name;
    the stored one, else UTC, when not given). ``0, 0`` and no ``at`` turns the
    digest off: the rows of digest filters are then sent at once.

    Only the matches of ``digest`` filters wait for the digest
    (:func:`fmn_core.delivery_settings.set_filter_delivery`). What the old policy
    holds is decided on again at once under the new one.
    """
    name = target_account(actor, user)
    context = offered_context(session, context)
    minutes = check_whole(minutes, "minutes", 0, MAX_DIGEST_MINUTES)
    count = check_whole(count, "count", 0, MAX_DIGEST_COUNT)
    at = check_local_time(at, "at") if at is not None else None
    zone = (
        check_timezone(timezone, "timezone", label="The daily digest's time zone")
        if timezone is not None
        else None
    )
    return write_digest(session, name, context, at, zone, (minutes, count))


def write_digest(
    session: Session,
    name: str,
    context: str,
    at: str | None,
    zone: str | None,
    minutes_count: tuple[int, int] | None,
) -> ContextView:
    """Store already-checked digest settings for account ``name`` in ``context``.

    The one write path for a context's digest, shared by :func:`set_digest` and
    :func:`fmn_core.delivery_settings.set_daily_digest` (which keeps the minutes
    and count: ``minutes_count`` None). The stored timezone stays when ``zone`` is
    None; what the old policy held is made due so it is decided on again.
    """
    lock_account(session, name)
    row = user_for_write(session, name)
    preference = preference_for_write(session, row, context)
    if minutes_count is not None:
        preference.digest_minutes, preference.digest_count = minutes_count
    preference.digest_at = at
    if zone is not None:
        preference.digest_timezone = zone
    record_change(session, row, "digest")
    release_held(session, row.id, POLICY_HOLDS, context=context)
    return context_view(context, preference, row)


# --- filters -----------------------------------------------------------------------


def list_filters(
    session: Session, actor: Actor, context: str, *, user: str | None = None
) -> list[FilterView]:
    """A context's filters in order."""
    name = target_account(actor, user)
    context = offered_context(session, context)
    return filter_views(context, find_preference(session, find_user(session, name), context))


def get_filter(
    session: Session, actor: Actor, context: str, name: str, *, user: str | None = None
) -> FilterView:
    """One filter by name (exact, else a unique case-insensitive match)."""
    _row, _preference, filter_, context = existing_filter(
        session, actor, context, name, user, write=False
    )
    return filter_view(context, filter_)


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
    target = target_account(actor, user)
    context = offered_context(session, context)
    name = check_filter_name(name)
    oneshot = check_bool(oneshot, "oneshot")
    lock_account(session, target)
    preference = find_preference(session, find_user(session, target), context)
    if name_taken(preference, name):
        raise AlreadyExists(
            f"There is already a filter called {name!r} in {context}; choose another name."
        )
    if preference is not None and len(preference.filters) >= MAX_FILTERS_PER_CONTEXT:
        raise InvalidArgument(
            f"{context} already has {MAX_FILTERS_PER_CONTEXT} filters; remove one first.",
            argument="name",
        )
    row = user_for_write(session, target)
    preference = preference_for_write(session, row, context)
    filter_ = Filter(
        preference=preference,
        name=name,
        active=True,
        oneshot=oneshot,
        position=len(preference.filters) + 1,
    )
    session.add(filter_)
    renumber(ordered_filters(preference))
    record_change(session, row, "filter")
    return filter_view(context, filter_)


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
    row, preference, filter_, context = existing_filter(session, actor, context, name, user)
    if name_taken(preference, new_name, exclude=filter_):
        raise AlreadyExists(
            f"There is already a filter called {new_name!r} in {context}; choose another name."
        )
    filter_.name = new_name
    record_change(session, row, "filter")
    return filter_view(context, filter_)


def remove_filter(
    session: Session, actor: Actor, context: str, name: str, *, user: str | None = None
) -> None:
    """Delete a filter and its rules; the ones after it move up."""
    row, preference, filter_, _context_name = existing_filter(session, actor, context, name, user)
    preference.filters.remove(filter_)
    renumber(ordered_filters(preference))
    record_change(session, row, "filter")


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
    row, preference, filter_, context = existing_filter(session, actor, context, name, user)
    ordered = ordered_filters(preference)
    position = check_whole(position, "position", 1, len(ordered))
    ordered.remove(filter_)
    ordered.insert(position - 1, filter_)
    renumber(ordered)
    record_change(session, row, "filter")
    return filter_views(context, preference)


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
    return _set_filter_flag(session, actor, context, name, "active", active, user)


def _future(value: object, what: str) -> dt.datetime | None:
    """An optional end time: aware, in the future, within a year."""
    if value is None:
        return None
    now = utcnow()
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise InvalidArgument(f"{what} must be a time with a timezone.", argument=what)
    if value <= now or value - now > MAX_MUTE:
        raise InvalidArgument(
            f"{what} must be in the future and within a year; choose another time.",
            argument=what,
        )
    return value.astimezone(dt.UTC)


def pause_filter(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    until: dt.datetime | None,
    *,
    user: str | None = None,
) -> FilterView:
    """Skip a filter until a time (within a year), or resume it at once with ``None``."""
    until = _future(until, "until")
    row, _preference, filter_, context = existing_filter(session, actor, context, name, user)
    filter_.paused_until = until
    record_change(session, row, "filter")
    return filter_view(context, filter_)


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
    return _set_filter_flag(session, actor, context, name, "oneshot", oneshot, user)


def _set_filter_flag(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    flag: Literal["active", "oneshot"],
    value: object,
    user: str | None,
) -> FilterView:
    return update_filter(session, actor, context, name, flag, check_bool(value, flag), user)


def update_filter(
    session: Session,
    actor: Actor,
    context: str,
    name: str,
    field: Literal["active", "oneshot", "delivery", "urgent"],
    value: bool | str,
    user: str | None,
    *,
    release_policy_holds: bool = False,
) -> FilterView:
    """Write one already-checked field of a filter and record the change.

    The one write path for a single filter setting, shared with
    :mod:`fmn_core.delivery_settings` (STYLE 16: one implementation per idea).
    ``release_policy_holds`` makes what the old policy held due at once, so the
    senders decide on those rows again under the new delivery or urgency.
    """
    row, _preference, filter_, context = existing_filter(session, actor, context, name, user)
    setattr(filter_, field, value)
    record_change(session, row, "filter")
    if release_policy_holds:
        release_held(session, row.id, POLICY_HOLDS, context=context)
    return filter_view(context, filter_)


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
    expires_at: dt.datetime | None = None,
    user: str | None = None,
) -> FilterView:
    """Add a catalog rule (validated against its parameters) to the end of a filter.

    ``expires_at`` makes it time-bound (an exclusion for a while): the matcher
    ignores it from then on and housekeeping deletes it, telling the user once.
    """
    negated = check_bool(negated, "negated")
    expires_at = _future(expires_at, "expires_at")
    catalog = catalog_of(session)
    spec, normalized = catalog.validate(rule.strip() if isinstance(rule, str) else "", arguments)
    row, _preference, filter_, context = existing_filter(session, actor, context, filter_name, user)
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
            if existing.expires_at is not None and existing.expires_at <= utcnow():
                # Ended, and not yet removed by housekeeping, which would remove the
                # new rule with it: the new one takes its place, with its own end.
                existing.expires_at = expires_at
                record_change(session, row, "rule")
                return filter_view(context, filter_, catalog)
            raise AlreadyExists(
                f"Filter {filter_.name!r} already has the rule "
                f"{describe_rule(stored, normalized, negated)!r}."
            )
    session.add(
        Rule(
            filter=filter_,
            name=stored,
            arguments=normalized,
            negated=negated,
            position=len(filter_.rules) + 1,
            expires_at=expires_at,
        )
    )
    renumber(ordered_rules(filter_))
    record_change(session, row, "rule")
    return filter_view(context, filter_, catalog)


def _numbered_rule(filter_: Filter, number: object) -> Rule:
    rules = ordered_rules(filter_)
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
    row, _preference, filter_, context = existing_filter(session, actor, context, filter_name, user)
    rule = _numbered_rule(filter_, number)
    filter_.rules.remove(rule)
    renumber(ordered_rules(filter_))
    record_change(session, row, "rule")
    return filter_view(context, filter_)


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
    negated = check_bool(negated, "negated")
    row, _preference, filter_, context = existing_filter(session, actor, context, filter_name, user)
    _numbered_rule(filter_, number).negated = negated
    record_change(session, row, "rule")
    return filter_view(context, filter_)


# --- templates ---------------------------------------------------------------------


def list_templates(session: Session) -> list[TemplateView]:
    """The built-in templates, then the operator's."""
    return [template_view(t) for t in all_templates(session)]


def use_template(
    session: Session, actor: Actor, template: str, context: str, *, user: str | None = None
) -> list[FilterView]:
    """Copy a template's filters to the end of a context; returns all its filters."""
    target = target_account(actor, user)
    context = offered_context(session, context)
    found = find_template(session, template) if isinstance(template, str) else None
    if found is None:
        names = ", ".join(t.name for t in all_templates(session))
        raise NotFound(
            f"There is no template called {str(template)[:40]!r}; choose one of: {names}."
        )
    drafts = found.parse(catalog_of(session))
    lock_account(session, target)
    preference = find_preference(session, find_user(session, target), context)
    for draft in drafts:
        if name_taken(preference, draft.name):
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
    row = user_for_write(session, target)
    preference = preference_for_write(session, row, context)
    add_drafts(session, preference, drafts)
    record_change(session, row, "template")
    return filter_views(context, preference)


# --- muting ------------------------------------------------------------------------


def mute(
    session: Session, actor: Actor, until: dt.datetime | dt.timedelta, *, user: str | None = None
) -> dt.datetime:
    """Hold back every notification (they are kept) until a time, or for a duration."""
    target = target_account(actor, user)
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
    lock_account(session, target)
    row = user_for_write(session, target)
    row.muted_until = until.astimezone(dt.UTC)
    record_change(session, row, "mute")
    # Rows held for an earlier mute wait until its end: a shorter mute must free them.
    release_held(session, row.id, ("muted",))
    return row.muted_until


def unmute(session: Session, actor: Actor, *, user: str | None = None) -> None:
    """Deliver again; what was held back while muted follows."""
    target = target_account(actor, user)
    lock_account(session, target)
    row = find_user(session, target)
    if row is None or row.muted_until is None:
        return
    row.muted_until = None
    record_change(session, row, "mute")
    release_held(session, row.id, ("muted",))
