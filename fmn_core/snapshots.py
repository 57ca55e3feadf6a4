"""Users' preferences as plain, frozen copies: what the matcher compiles.

``load_snapshots`` reads them with three column queries per chunk of users
rather than through ORM objects: 100k users' rows load in seconds instead of
minutes, and nothing is left to lazy-load. Tests and benchmarks build
snapshots directly, without a database.
"""

from __future__ import annotations

import gc
import json
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from .models import Filter, Preference, Rule, User

__all__ = ["ContextSnapshot", "FilterSnapshot", "RuleSnapshot", "UserSnapshot", "load_snapshots"]

#: Ids are fetched in chunks this size (well under every backend's parameter limit).
_CHUNK = 1000
#: Rows fetched from the database at a time while loading.
_STREAM = 10_000


@dataclass(frozen=True, slots=True)
class RuleSnapshot:
    """A rule as stored: its catalog name, arguments, and whether it is negated."""

    name: str
    arguments: Mapping[str, Any]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class FilterSnapshot:
    """A filter as stored; its place in ``ContextSnapshot.filters`` is its position."""

    filter_id: int
    name: str
    rules: tuple[RuleSnapshot, ...]
    active: bool = True


@dataclass(frozen=True, slots=True)
class ContextSnapshot:
    """One user's preference for one context, with its filters in position order."""

    context: str
    filters: tuple[FilterSnapshot, ...]
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """Everything the matcher needs about one user: a plain copy of their rows."""

    user_id: int
    name: str
    contexts: tuple[ContextSnapshot, ...]


def load_snapshots(session: Session, user_ids: Collection[int] | None = None) -> list[UserSnapshot]:
    """Read users' preferences (all, or these ids'): three queries per chunk of users.

    Users without any preference rows get no snapshot.
    """
    # Millions of long-lived objects and no garbage cycles: without a pause the
    # cyclic collector rescans all of them again and again while they are built.
    paused = gc.isenabled()
    gc.disable()
    try:
        if user_ids is None:
            return _load_chunk(session, None)
        ids = sorted(set(user_ids))
        snapshots: list[UserSnapshot] = []
        for start in range(0, len(ids), _CHUNK):
            snapshots.extend(_load_chunk(session, ids[start : start + _CHUNK]))
        return snapshots
    finally:
        if paused:
            gc.enable()


def _load_chunk(session: Session, ids: list[int] | None) -> list[UserSnapshot]:
    preferences = select(
        Preference.id, Preference.user_id, Preference.context, Preference.enabled, User.name
    ).join(User, User.id == Preference.user_id)
    filters = select(Filter.id, Filter.preference_id, Filter.name, Filter.active).join(
        Preference, Preference.id == Filter.preference_id
    )
    # The arguments as their stored JSON text: thousands of users store the same
    # few (``app=bodhi``), so each distinct text is parsed once and its snapshot
    # shared, which saves most of the loading time and memory at 100k users.
    rules = (
        select(
            Rule.filter_id, Rule.name, cast(Rule.arguments, Text).label("arguments"), Rule.negated
        )
        .join(Filter, Filter.id == Rule.filter_id)
        .join(Preference, Preference.id == Filter.preference_id)
    )
    if ids is not None:
        preferences = preferences.where(Preference.user_id.in_(ids))
        filters = filters.where(Preference.user_id.in_(ids))
        rules = rules.where(Preference.user_id.in_(ids))

    rules_of: defaultdict[int, list[RuleSnapshot]] = defaultdict(list)
    shared: dict[tuple[str, str | None, bool], RuleSnapshot] = {}
    # Rows stream in slices (``_STREAM``) rather than all at once: at 100k users
    # the rows alone would take hundreds of MB while the snapshots are built.
    streamed = {"yield_per": _STREAM}
    for rule in session.execute(
        rules.order_by(Rule.filter_id, Rule.position, Rule.id), execution_options=streamed
    ):
        key = (rule.name, rule.arguments, bool(rule.negated))
        snapshot = shared.get(key)
        if snapshot is None:
            arguments = json.loads(rule.arguments) if rule.arguments else None
            snapshot = shared[key] = RuleSnapshot(rule.name, dict(arguments or {}), key[2])
        rules_of[rule.filter_id].append(snapshot)
    filters_of: defaultdict[int, list[FilterSnapshot]] = defaultdict(list)
    for filter_ in session.execute(
        filters.order_by(Filter.preference_id, Filter.position, Filter.id),
        execution_options=streamed,
    ):
        filters_of[filter_.preference_id].append(
            FilterSnapshot(
                filter_.id, filter_.name, tuple(rules_of.get(filter_.id, ())), bool(filter_.active)
            )
        )
    names: dict[int, str] = {}
    contexts_of: defaultdict[int, list[ContextSnapshot]] = defaultdict(list)
    for pref in session.execute(
        preferences.order_by(Preference.user_id, Preference.context), execution_options=streamed
    ):
        names[pref.user_id] = pref.name
        contexts_of[pref.user_id].append(
            ContextSnapshot(pref.context, tuple(filters_of.get(pref.id, ())), bool(pref.enabled))
        )
    return [UserSnapshot(uid, names[uid], tuple(contexts)) for uid, contexts in contexts_of.items()]
