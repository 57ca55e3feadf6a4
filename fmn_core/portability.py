"""Preferences in and out as JSON: backups, migrations, moving between deployments.

The public format (``export_preferences`` writes it, ``import_preferences``
reads it)::

    {"users": [{"name": "alice", "contexts": {"email": {"enabled": true,
      "destinations": ["alice@example.org"], "digest": {"minutes": 0, "count": 0},
      "filters": [{"name": "my builds", "active": true, "oneshot": false,
        "rules": [{"rule": "app_is", "args": {"app": "koji"}},
                  {"rule": "triggered_by_me", "args": {}, "negated": true}]}]}}}]}

Only confirmed destinations are exported, because imported ones count as
confirmed: an export must never turn an unproven address into a proven one.
Import is an operator's tool and all-or-nothing: every entry is checked first,
every problem is reported with its JSON path in one ``ImportRejected``, and only
a clean file writes anything. For each user it names, an import replaces the
contexts the file gives and leaves the others alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from .accounts import check_account_name
from .config import Config
from .db import catalog_of, config_of
from .destinations import Resolver, check_destination
from .errors import ImportRejected, InvalidArgument
from .filters import FilterDraft, Problems, parse_filters
from .models import Destination, Filter, Preference, User
from .preferences import (
    MAX_DESTINATIONS_PER_CONTEXT,
    _add_drafts,
    _changed,
    _ordered_filters,
    _ordered_rules,
    _preference_for_write,
    _user_for_write,
)
from .rules import Catalog

__all__ = ["ImportSummary", "export_preferences", "import_preferences"]

_USER_KEYS = frozenset({"name", "contexts"})
_CONTEXT_KEYS = frozenset({"enabled", "destinations", "digest", "filters"})
_DIGEST_KEYS = frozenset({"minutes", "count"})
_DIGEST_LIMITS = {"minutes": 7 * 24 * 60, "count": 1000}


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote."""

    users: int = 0
    contexts: int = 0
    filters: int = 0
    rules: int = 0
    destinations: int = 0


# --- export ------------------------------------------------------------------------


def _export_filter(filter_: Filter) -> dict[str, Any]:
    rules = []
    for rule in _ordered_rules(filter_):
        entry: dict[str, Any] = {
            "rule": rule.name,
            "args": dict(sorted((rule.arguments or {}).items())),
        }
        if rule.negated:
            entry["negated"] = True
        rules.append(entry)
    return {
        "name": filter_.name,
        "active": filter_.active,
        "oneshot": filter_.oneshot,
        "rules": rules,
    }


def _export_context(preference: Preference) -> dict[str, Any]:
    return {
        "enabled": preference.enabled,
        "destinations": sorted(d.address for d in preference.destinations if d.confirmed),
        "digest": {"minutes": preference.digest_minutes, "count": preference.digest_count},
        "filters": [_export_filter(f) for f in _ordered_filters(preference)],
    }


def export_preferences(session: Session) -> dict[str, Any]:
    """Every user's preferences in the public JSON form, sorted so that equal
    preferences give equal files (users and contexts by name, filters and rules in
    their order)."""
    users = session.scalars(
        select(User)
        .order_by(User.name)
        .options(
            selectinload(User.preferences)
            .selectinload(Preference.filters)
            .selectinload(Filter.rules),
            selectinload(User.preferences).selectinload(Preference.destinations),
        )
    )
    return {
        "users": [
            {
                "name": user.name,
                "contexts": {
                    p.context: _export_context(p)
                    for p in sorted(user.preferences, key=lambda p: p.context)
                },
            }
            for user in users
        ]
    }


# --- import ------------------------------------------------------------------------


@dataclass
class _ContextPlan:
    context: str
    enabled: bool = True
    digest_minutes: int = 0
    digest_count: int = 0
    destinations: list[str] = field(default_factory=list)
    filters: list[FilterDraft] = field(default_factory=list)


@dataclass
class _UserPlan:
    name: str
    contexts: list[_ContextPlan] = field(default_factory=list)


def _unknown_keys(
    entry: Mapping[str, Any], allowed: frozenset[str], path: str, what: str, problems: Problems
) -> None:
    for key in sorted(set(entry) - allowed, key=str):
        problems.append((f"{path}.{key}", f"unknown key; {what} has {', '.join(sorted(allowed))}"))


def _check_digest(value: Any, path: str, plan: _ContextPlan, problems: Problems) -> None:
    if not isinstance(value, Mapping):
        problems.append((path, 'must be an object like {"minutes": 0, "count": 0}'))
        return
    _unknown_keys(value, _DIGEST_KEYS, path, "a digest", problems)
    for key, limit in _DIGEST_LIMITS.items():
        number = value.get(key, 0)
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= limit:
            problems.append((f"{path}.{key}", f"must be a whole number from 0 to {limit}"))
        elif key == "minutes":
            plan.digest_minutes = number
        else:
            plan.digest_count = number


def _check_destinations(
    value: Any,
    path: str,
    plan: _ContextPlan,
    config: Config,
    resolve: bool,
    resolver: Resolver | None,
    problems: Problems,
) -> None:
    if not isinstance(value, list):
        problems.append((path, "must be a list of addresses"))
        return
    if len(value) > MAX_DESTINATIONS_PER_CONTEXT:
        problems.append(
            (path, f"has {len(value)} destinations; at most {MAX_DESTINATIONS_PER_CONTEXT}")
        )
    for index, address in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(address, str):
            problems.append((where, "must be text"))
            continue
        try:
            normalized = check_destination(
                plan.context,
                address,
                config.push,
                fcm=config.fcm,
                resolve=resolve,
                resolver=resolver,
            )
        except InvalidArgument as error:
            problems.append((where, str(error)))
            continue
        if normalized in plan.destinations:
            problems.append((where, "is listed twice"))
            continue
        plan.destinations.append(normalized)


def _check_context(
    name: Any,
    value: Any,
    path: str,
    config: Config,
    catalog: Catalog,
    resolve: bool,
    resolver: Resolver | None,
    problems: Problems,
) -> _ContextPlan | None:
    if name not in config.contexts:
        problems.append(
            (
                path,
                f"{str(name)[:40]!r} is not a context offered here; use one of "
                f"{', '.join(config.contexts)}",
            )
        )
        return None
    if not isinstance(value, Mapping):
        problems.append((path, "must be an object with enabled, destinations, digest, filters"))
        return None
    plan = _ContextPlan(name)
    _unknown_keys(value, _CONTEXT_KEYS, path, "a context", problems)
    enabled = value.get("enabled", True)
    if isinstance(enabled, bool):
        plan.enabled = enabled
    else:
        problems.append((f"{path}.enabled", "must be true or false"))
    if "digest" in value:
        _check_digest(value["digest"], f"{path}.digest", plan, problems)
    _check_destinations(
        value.get("destinations", []),
        f"{path}.destinations",
        plan,
        config,
        resolve,
        resolver,
        problems,
    )
    plan.filters = parse_filters(value.get("filters", []), f"{path}.filters", catalog, problems)
    return plan


def _check_document(
    data: Any,
    config: Config,
    catalog: Catalog,
    resolve: bool,
    resolver: Resolver | None,
    problems: Problems,
) -> list[_UserPlan]:
    if not isinstance(data, Mapping):
        problems.append(("(top)", 'must be an object like {"users": [...]}'))
        return []
    _unknown_keys(data, frozenset({"users"}), "(top)", "a preferences file", problems)
    users = data.get("users")
    if not isinstance(users, list):
        problems.append(("users", "must be a list of users"))
        return []
    plans: list[_UserPlan] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(users):
        path = f"users[{index}]"
        if not isinstance(entry, Mapping):
            problems.append((path, 'must be an object like {"name": "alice", "contexts": {...}}'))
            continue
        _unknown_keys(entry, _USER_KEYS, path, "a user", problems)
        try:
            # check_account_name refuses non-text itself; its parameter says str.
            name = check_account_name(entry.get("name"))  # type: ignore[arg-type]
        except InvalidArgument as error:
            problems.append((f"{path}.name", str(error)))
            name = ""
        if name in seen:
            problems.append((f"{path}.name", f"{name!r} is already users[{seen[name]}]"))
        elif name:
            seen[name] = index
        plan = _UserPlan(name)
        contexts = entry.get("contexts", {})
        if not isinstance(contexts, Mapping):
            problems.append((f"{path}.contexts", "must be an object of context names"))
            contexts = {}
        for context in sorted(contexts, key=str):
            checked = _check_context(
                context,
                contexts[context],
                f"{path}.contexts.{context}",
                config,
                catalog,
                resolve,
                resolver,
                problems,
            )
            if checked is not None:
                plan.contexts.append(checked)
        plans.append(plan)
    return plans


def _write_context(session: Session, user: User, plan: _ContextPlan) -> None:
    preference = _preference_for_write(session, user, plan.context)
    for filter_ in list(preference.filters):
        preference.filters.remove(filter_)
    for destination in list(preference.destinations):
        preference.destinations.remove(destination)
    # Old rows go first: the new ones may reuse their unique names and addresses,
    # and the unit of work would otherwise insert before it deletes.
    session.flush()
    preference.enabled = plan.enabled
    preference.digest_minutes, preference.digest_count = plan.digest_minutes, plan.digest_count
    for address in plan.destinations:
        session.add(Destination(preference=preference, address=address, confirmed=True))
    _add_drafts(session, preference, plan.filters)


def import_preferences(
    session: Session,
    data: Mapping[str, Any],
    *,
    resolve: bool = True,
    resolver: Resolver | None = None,
) -> ImportSummary:
    """Load a preferences file (an admin operation: its destinations count as confirmed).

    Raises ``ImportRejected`` listing every invalid entry by JSON path, such as
    ``users[0].contexts.email.filters[1].rules[0].args.app``, before writing
    anything. ``resolve`` and ``resolver`` are passed to the push-URL check.
    """
    config = config_of(session)
    problems: Problems = []
    plans = _check_document(data, config, catalog_of(session), resolve, resolver, problems)
    if problems:
        raise ImportRejected(problems)
    counts = {"contexts": 0, "filters": 0, "rules": 0, "destinations": 0}
    for plan in plans:
        user = _user_for_write(session, plan.name)
        for context in plan.contexts:
            _write_context(session, user, context)
            counts["contexts"] += 1
            counts["filters"] += len(context.filters)
            counts["rules"] += sum(len(f.rules) for f in context.filters)
            counts["destinations"] += len(context.destinations)
        _changed(session, user, "import")
    return ImportSummary(users=len(plans), **counts)
