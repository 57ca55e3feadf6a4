"""Preferences in and out as JSON: backups, migrations, moving between deployments.

The public format (``export_preferences`` writes it, ``import_preferences``
reads it)::

    {"version": 2,
     "users": [{"name": "alice", "contexts": {"email": {"enabled": true,
      "destinations": ["alice@example.org"],
      "digest": {"minutes": 0, "count": 0, "at": "08:00", "timezone": "Europe/Prague"},
      "quiet_hours": {"from": "22:00", "to": "07:00", "timezone": "Europe/Prague"},
      "filters": [{"name": "my builds", "active": true, "oneshot": false,
        "delivery": "instant", "urgent": false,
        "paused_until": "2027-01-31T08:00:00+00:00",
        "rules": [{"rule": "app_is", "args": {"app": "koji"}},
                  {"rule": "triggered_by_me", "args": {}, "negated": true},
                  {"rule": "package_involved", "args": {"package": "kernel"},
                   "negated": true, "expires_at": "2027-01-05T12:00:00+00:00"}]}]}}}]}

**Versions.** ``version`` says which shape a file has, so a reader never reads one
shape as another; :data:`FORMAT_VERSION` is the one written, and import reads it and
every older one:

- **1**, the oldest: what fmn wrote before delivery modes (schema revision 0007).
  A digest is only ``{"minutes", "count"}``, and a filter has no mode of its own: a
  context with a digest (``minutes`` or ``count`` above 0) collected every
  filter's matches into it. So a filter without ``delivery`` in such a context is
  read as ``"digest"`` (as revision 0007 set the database's filters), anywhere else
  as ``"instant"``.
- **2**, delivery modes: ``delivery``, ``urgent``, ``quiet_hours``, the digest's
  ``at`` and ``timezone``, ``paused_until`` and ``expires_at``; a filter without
  ``delivery`` is instant, wherever it is.

A file without ``version`` is the oldest shape, version 1, unless any entry holds a
key version 1 never had (the ones just listed): fmn wrote version 2 without a
``version`` key for a while, and those files are read as version 2. A file of a
newer version (from a newer fmn) is refused whole with
:class:`~fmn_core.errors.UnsupportedFormatVersion`, never read as an older one.

A rule's ``expires_at`` and a filter's ``paused_until`` are written only when set,
as ISO 8601 with the UTC offset; a time already past is imported as it is, and the
housekeeping ends it (``fmn_core.expiry``) and tells the user, as it would have. A
user's mute is not part of the format: it is of the moment, not a preference.

Only confirmed destinations are exported, because imported ones count as
confirmed: an export must never turn an unproven address into a proven one.
Import is an operator's tool and all-or-nothing: every entry is checked first
(also that the account directory knows each new user), every problem is reported
with its JSON path in one ``ImportRejected``, and only a clean file writes
anything. For each user it names, an import replaces the contexts the file gives
and leaves the others alone. Rows still waiting in the outbox keep the filter of
their name when the file gives one (a row whose filter is gone waits for the
digest); what the old policy held, or a missing address the file now gives, is
decided on again at once.

Files are read as hostile: :func:`parse_preferences` bounds their size and
nesting depth before parsing (:mod:`fmn_core.bounds`) and refuses ``NaN``,
``Infinity`` and repeated keys; the checks then refuse non-finite numbers, control
characters and lone surrogates anywhere, so whatever a file holds ends in a clear
``ImportRejected`` naming the path, never in a database error. Feed and live-feed
tokens stay unique across users: a token the file gives twice, or one another
user (or another context) already holds, is refused naming that user.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from .accounts import check_account_name, directory_of
from .bounds import check_json_bounds
from .config import Config
from .confirmation import MAX_DESTINATIONS_PER_CONTEXT
from .db import catalog_of, config_of
from .defaults import give_defaults
from .destinations import FEED_CONTEXTS, check_destination
from .errors import ImportRejected, InputTooLarge, InvalidArgument, UnsupportedFormatVersion
from .filters import FilterDraft, Problems, parse_filters
from .models import Destination, Filter, Notification, Preference, User
from .outbox import FINISHED_STATES
from .push_urls import Resolver
from .rules import Catalog
from .schedule import check_local_time, check_timezone
from .store import (
    add_drafts,
    find_user,
    lock_accounts,
    ordered_filters,
    ordered_rules,
    preference_for_write,
    record_change,
    user_for_write,
)
from .waiting import POLICY_HOLDS, release_held

__all__ = [
    "FORMAT_VERSION",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_DEPTH",
    "ImportSummary",
    "export_preferences",
    "import_preferences",
    "parse_preferences",
]

#: The format version ``export_preferences`` writes, and the newest import reads.
FORMAT_VERSION = 2
#: The version delivery modes came with: before it, a digest context collected every filter.
_MODES_VERSION = 2

#: The largest preferences file read (an export of tens of thousands of users fits).
MAX_IMPORT_BYTES = 64 * 1024 * 1024
#: The format nests about ten levels (users, contexts, filters, rules, arguments).
MAX_IMPORT_DEPTH = 32
#: Problems listed per file before the rest are only counted: a hostile file may
#: have millions.
_MAX_PROBLEMS = 1000
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})

_TOP_KEYS = frozenset({"version", "users"})
_USER_KEYS = frozenset({"name", "contexts"})
_CONTEXT_KEYS = frozenset({"enabled", "destinations", "digest", "quiet_hours", "filters"})
_DIGEST_KEYS = frozenset({"minutes", "count", "at", "timezone"})
_QUIET_KEYS = frozenset({"from", "to", "timezone"})
_DIGEST_LIMITS = {"minutes": 7 * 24 * 60, "count": 1000}
#: Keys a version 1 file never has, by where they go: an unversioned file holding one
#: was written by an fmn with delivery modes (version 2 without its ``version`` key).
_SINCE_MODES_CONTEXT = frozenset({"quiet_hours"})
_SINCE_MODES_DIGEST = frozenset({"at", "timezone"})
_SINCE_MODES_FILTER = frozenset({"delivery", "urgent", "paused_until"})
_SINCE_MODES_RULE = frozenset({"expires_at"})


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
    for rule in ordered_rules(filter_):
        entry: dict[str, Any] = {
            "rule": rule.name,
            "args": dict(sorted((rule.arguments or {}).items())),
        }
        if rule.negated:
            entry["negated"] = True
        if rule.expires_at is not None:
            # Without it, a restored "mute this package for 30 days" would mute for good.
            entry["expires_at"] = _moment_text(rule.expires_at)
        rules.append(entry)
    exported = {
        "name": filter_.name,
        "active": filter_.active,
        "oneshot": filter_.oneshot,
        "rules": rules,
    }
    # Like "negated", the delivery keys are written only when they differ from
    # their default (missing means instant, not urgent): older files stay as they were.
    if filter_.delivery != "instant":
        exported["delivery"] = filter_.delivery
    if filter_.urgent:
        exported["urgent"] = True
    if filter_.paused_until is not None:
        exported["paused_until"] = _moment_text(filter_.paused_until)
    return exported


def _moment_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def _export_context(preference: Preference) -> dict[str, Any]:
    digest: dict[str, Any] = {
        "minutes": preference.digest_minutes,
        "count": preference.digest_count,
    }
    if preference.digest_at is not None:
        digest["at"] = preference.digest_at
        digest["timezone"] = preference.digest_timezone
    entry: dict[str, Any] = {
        "enabled": preference.enabled,
        "destinations": sorted(d.address for d in preference.destinations if d.confirmed),
        "digest": digest,
        "filters": [_export_filter(f) for f in ordered_filters(preference)],
    }
    if preference.quiet_from is not None and preference.quiet_to is not None:
        entry["quiet_hours"] = {
            "from": preference.quiet_from,
            "to": preference.quiet_to,
            "timezone": preference.quiet_timezone or "UTC",
        }
    return entry


def export_preferences(session: Session) -> dict[str, Any]:
    """Every user's preferences in the public JSON form (format :data:`FORMAT_VERSION`),
    sorted so that equal preferences give equal files (users and contexts by name,
    filters and rules in their order)."""
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
        "version": FORMAT_VERSION,
        "users": [
            {
                "name": user.name,
                "contexts": {
                    p.context: _export_context(p)
                    for p in sorted(user.preferences, key=lambda p: p.context)
                },
            }
            for user in users
        ],
    }


# --- reading a file ----------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # A repeated key hides one entry behind another; say so, don't pick one.
            raise ValueError(f"the key {key[:40]!r} appears twice in one object")
        result[key] = value
    return result


def parse_preferences(
    raw: bytes | str,
    *,
    max_bytes: int = MAX_IMPORT_BYTES,
    max_depth: int = MAX_IMPORT_DEPTH,
) -> Any:
    """Parse a preferences file's bytes for :func:`import_preferences`.

    Size and depth are bounded before parsing; a file that is too large, too deep,
    not UTF-8 or not valid JSON (``NaN``, repeated keys) raises ``ImportRejected``
    with the path ``(file)``.
    """
    try:
        check_json_bounds(raw, max_bytes=max_bytes, max_depth=max_depth)
    except InputTooLarge as error:
        raise ImportRejected([("(file)", f"the file {error}")]) from None
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as error:
        raise ImportRejected(
            [("(file)", f"is not UTF-8 text (byte {error.start}); save it as UTF-8")]
        ) from None
    try:
        return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_repeats)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise ImportRejected([("(file)", f"is not valid JSON at {where}: {error.msg}")]) from None
    except (ValueError, RecursionError) as error:
        # parse_constant, the repeated-key hook and Python's integer-size limit.
        raise ImportRejected([("(file)", f"is not valid JSON: {error}")]) from None


def _text_problem(text: str) -> str | None:
    for character in text:
        category = unicodedata.category(character)
        if category == "Cs":
            return "holds a lone surrogate (not text); remove it"
        if category in _UNSAFE_CATEGORIES:
            return f"holds control characters (U+{ord(character):04X}); remove them"
    return None


def _check_values(data: Any, max_depth: int, problems: Problems) -> bool:
    """Refuse what no field may hold, wherever it is, without recursing: non-finite
    numbers, control characters and surrogates, keys that are not text, nesting
    deeper than ``max_depth`` (data handed over by Python rather than parsed).

    Returns whether the data nests too deeply for the field checks to walk it.
    """
    too_deep = False
    stack: list[tuple[Any, str, int]] = [(data, "(top)", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            problems.append((path, "must be a finite number"))
        elif isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                problems.append((path, problem))
        elif isinstance(value, Mapping | list | tuple):
            if depth >= max_depth:
                problems.append((path, f"nests deeper than {max_depth} levels"))
                too_deep = True
                continue
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, str):
                        problems.append((f"{path}.{str(key)[:40]}", "keys must be text"))
                        continue
                    shown = key if _text_problem(key) is None else repr(key)[:40]
                    child = shown if path == "(top)" else f"{path}.{shown}"
                    if shown != key:
                        problems.append((child, "the key " + str(_text_problem(key))))
                    stack.append((item, child, depth + 1))
            else:
                for index, item in enumerate(value):
                    stack.append((item, f"{path}[{index}]", depth + 1))
        if len(problems) >= _MAX_PROBLEMS:
            break
    return too_deep


# --- import ------------------------------------------------------------------------


@dataclass
class _ContextPlan:
    context: str
    enabled: bool = True
    digest_minutes: int = 0
    digest_count: int = 0
    digest_at: str | None = None
    digest_timezone: str = "UTC"
    quiet: tuple[str, str, str] | None = None
    destinations: list[str] = field(default_factory=list)
    filters: list[FilterDraft] = field(default_factory=list)


@dataclass
class _UserPlan:
    name: str
    path: str = ""
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
    at = value.get("at")
    if at is not None:
        try:
            plan.digest_at = check_local_time(at, "at")
        except InvalidArgument:
            problems.append(
                (f"{path}.at", 'must be null or a time of day as "HH:MM", like "08:00"')
            )
    try:
        plan.digest_timezone = check_timezone(value.get("timezone", "UTC"), "timezone")
    except InvalidArgument:
        problems.append((f"{path}.timezone", 'must be an IANA time zone like "Europe/Prague"'))


def _check_quiet_hours(value: Any, path: str, plan: _ContextPlan, problems: Problems) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        problems.append(
            (
                path,
                'must be null or an object like {"from": "22:00", "to": "07:00", '
                '"timezone": "Europe/Prague"}',
            )
        )
        return
    _unknown_keys(value, _QUIET_KEYS, path, "quiet hours", problems)
    times: list[str] = []
    for key in ("from", "to"):
        try:
            times.append(check_local_time(value.get(key), key))
        except InvalidArgument:
            problems.append((f"{path}.{key}", 'must be a time of day as "HH:MM", like "22:00"'))
    try:
        zone = check_timezone(value.get("timezone", "UTC"), "timezone")
    except InvalidArgument:
        problems.append((f"{path}.timezone", 'must be an IANA time zone like "Europe/Prague"'))
        return
    if len(times) == 2:
        if times[0] == times[1]:
            problems.append((f"{path}.to", 'must differ from "from" (an empty window)'))
            return
        plan.quiet = (times[0], times[1], zone)


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
                matrix=config.matrix,
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


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _holds_keys_since_modes(users: Any) -> bool:
    """Whether any entry of an unversioned file holds a key version 1 never had."""
    for user in _mappings(users):
        contexts = user.get("contexts")
        for context in contexts.values() if isinstance(contexts, Mapping) else ():
            if not isinstance(context, Mapping):
                continue
            digest = context.get("digest")
            if not _SINCE_MODES_CONTEXT.isdisjoint(context) or (
                isinstance(digest, Mapping) and not _SINCE_MODES_DIGEST.isdisjoint(digest)
            ):
                return True
            for filter_ in _mappings(context.get("filters")):
                if not _SINCE_MODES_FILTER.isdisjoint(filter_):
                    return True
                rules = _mappings(filter_.get("rules"))
                if any(not _SINCE_MODES_RULE.isdisjoint(rule) for rule in rules):
                    return True
    return False


def _format_version(data: Mapping[str, Any], problems: Problems) -> int:
    """The version a file's entries are read in (a newer one was refused already)."""
    if "version" not in data:
        return _MODES_VERSION if _holds_keys_since_modes(data.get("users")) else 1
    declared = data["version"]
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
        problems.append(
            ("version", f"must be a whole number from 1 to {FORMAT_VERSION}, like {FORMAT_VERSION}")
        )
        return FORMAT_VERSION
    return declared


def _refuse_newer(data: Any) -> None:
    """Refuse a file of a format newer than this fmn reads, before anything else: its
    entries may mean what no check here knows, and would be read silently wrong."""
    if not isinstance(data, Mapping):
        return
    declared = data.get("version")
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > FORMAT_VERSION:
        raise UnsupportedFormatVersion(declared, FORMAT_VERSION)


def _collected_by_digest(plan: _ContextPlan, entries: Any) -> None:
    """Read a version 1 context's filters as they behaved then: a context with a digest
    collected every filter's matches, so a filter without ``delivery`` is a digest one."""
    if plan.digest_minutes <= 0 and plan.digest_count <= 0:
        return
    # parse_filters gives one draft per object in the list, in order.
    objects = _mappings(entries)
    if len(objects) != len(plan.filters):
        return  # a list with problems: nothing is written anyway
    plan.filters = [
        draft if "delivery" in entry else dataclasses.replace(draft, delivery="digest")
        for entry, draft in zip(objects, plan.filters, strict=True)
    ]


def _check_context(
    name: Any,
    value: Any,
    path: str,
    config: Config,
    catalog: Catalog,
    resolve: bool,
    resolver: Resolver | None,
    problems: Problems,
    version: int = FORMAT_VERSION,
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
        problems.append(
            (path, "must be an object with enabled, destinations, digest, quiet_hours, filters")
        )
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
    if "quiet_hours" in value:
        _check_quiet_hours(value["quiet_hours"], f"{path}.quiet_hours", plan, problems)
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
    if version < _MODES_VERSION:
        _collected_by_digest(plan, value.get("filters", []))
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
    _unknown_keys(data, _TOP_KEYS, "(top)", "a preferences file", problems)
    version = _format_version(data, problems)
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
        plan = _UserPlan(name, path)
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
                version,
            )
            if checked is not None:
                plan.contexts.append(checked)
        plans.append(plan)
    return plans


def _check_feed_tokens(session: Session, plans: list[_UserPlan], problems: Problems) -> None:
    """A feed token belongs to one user and one context: refuse one the file gives
    twice, or one that stays with somebody else after the import."""
    given: dict[str, tuple[str, str, str]] = {}
    for plan in plans:
        for context in plan.contexts:
            if context.context not in FEED_CONTEXTS:
                continue
            for index, token in enumerate(context.destinations):
                where = f"{plan.path}.contexts.{context.context}.destinations[{index}]"
                if token in given:
                    user, other, _ = given[token]
                    problems.append(
                        (
                            where,
                            f"this feed token is also given to user {user!r} ({other}); a "
                            "token belongs to one user and context, so leave one of them out",
                        )
                    )
                else:
                    given[token] = (plan.name, context.context, where)
    if not given:
        return
    replaced = {(p.name, c.context) for p in plans for c in p.contexts}
    tokens = sorted(given)
    for start in range(0, len(tokens), 500):
        rows = session.execute(
            select(Destination.feed_token, User.name, Preference.context)
            .join(Preference, Preference.id == Destination.preference_id)
            .join(User, User.id == Preference.user_id)
            .where(Destination.feed_token.in_(tokens[start : start + 500]))
        )
        for held, holder, held_in in rows:
            if held is None or (holder, held_in) in replaced:
                continue  # that holder's destinations are replaced by this import
            _, _, where = given[held]
            problems.append(
                (
                    where,
                    f"this feed token already belongs to user {holder!r} ({held_in}); leave "
                    "it out and set a new feed for this user after the import",
                )
            )


def _check_accounts(session: Session, plans: list[_UserPlan], problems: Problems) -> None:
    """Refuse, with its path, a user fmn has no row for and the directory does not know
    (an account deleted since the export, say), before anything is written: otherwise
    the write would stop at the first one, naming no entry and not the others."""
    names = sorted({plan.name for plan in plans if plan.name})
    known: set[str] = set()
    for start in range(0, len(names), 500):
        known.update(
            session.scalars(select(User.name).where(User.name.in_(names[start : start + 500])))
        )
    directory = directory_of(session)
    for plan in plans:
        if plan.name and plan.name not in known and not directory.exists(plan.name):
            problems.append(
                (
                    f"{plan.path}.name",
                    f"there is no Fedora account named {plan.name!r}; leave this user out "
                    "of the file, or create the account first",
                )
            )


def _clear_context(
    session: Session, user: User, plan: _ContextPlan, replaced: dict[int, tuple[Preference, str]]
) -> Preference:
    """Empty a context the file gives; each removed filter's id goes into ``replaced``."""
    preference = preference_for_write(session, user, plan.context)
    for filter_ in list(preference.filters):
        replaced[filter_.id] = (preference, filter_.name.casefold())
        preference.filters.remove(filter_)
    for destination in list(preference.destinations):
        preference.destinations.remove(destination)
    return preference


def _fill_context(session: Session, preference: Preference, plan: _ContextPlan) -> None:
    preference.enabled = plan.enabled
    preference.digest_minutes, preference.digest_count = plan.digest_minutes, plan.digest_count
    preference.digest_at, preference.digest_timezone = plan.digest_at, plan.digest_timezone
    quiet = plan.quiet or (None, None, None)
    preference.quiet_from, preference.quiet_to, preference.quiet_timezone = quiet
    feed = plan.context in FEED_CONTEXTS
    for address in plan.destinations:
        session.add(
            Destination(
                preference=preference,
                address=address,
                feed_token=address if feed else None,
                confirmed=True,
            )
        )
    add_drafts(session, preference, plan.filters)


def _unsent_of(session: Session, user: User, contexts: list[str]) -> dict[int, list[int]]:
    """The user's rows not yet sent in these contexts, by the id of their filter.

    Read before the contexts are emptied: deleting a filter sets its rows'
    ``filter_id`` to NULL in the database.
    """
    found: dict[int, list[int]] = {}
    rows = session.execute(
        select(Notification.id, Notification.filter_id).where(
            Notification.user_id == user.id,
            Notification.context.in_(contexts),
            Notification.state.not_in(FINISHED_STATES),
            Notification.filter_id.is_not(None),
        )
    )
    for row_id, filter_id in rows:
        if filter_id is not None:  # the query says so; the column's type does not
            found.setdefault(filter_id, []).append(row_id)
    return found


def _repoint_unsent(
    session: Session,
    replaced: Mapping[int, tuple[Preference, str]],
    unsent: Mapping[int, list[int]],
) -> None:
    """Give the rows of a replaced filter the filter of that name the file gives.

    A row whose filter is gone travels as the context's digest, not urgent: without
    this, re-importing the very same preferences would hold an urgent or instant
    filter's waiting rows for the digest.
    """
    session.flush()
    for old_id, row_ids in unsent.items():
        if old_id not in replaced:
            continue
        preference, folded = replaced[old_id]
        new = next((f for f in preference.filters if f.name.casefold() == folded), None)
        if new is None:
            continue  # the file drops that filter: its rows go as a removed filter's do
        for start in range(0, len(row_ids), 500):
            session.execute(
                update(Notification)
                .where(Notification.id.in_(row_ids[start : start + 500]))
                .values(filter_id=new.id)
                .execution_options(synchronize_session=False)
            )


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
    anything; ``UnsupportedFormatVersion`` (one) for a file of a newer format than
    :data:`FORMAT_VERSION`. ``resolve`` and ``resolver`` are passed to the push-URL
    check.
    """
    _refuse_newer(data)
    config = config_of(session)
    problems: Problems = []
    found: Problems = []
    if _check_values(data, MAX_IMPORT_DEPTH, found):
        raise ImportRejected(sorted(found))
    plans = _check_document(data, config, catalog_of(session), resolve, resolver, problems)
    # The field checks explain most of what the value sweep finds, in their words;
    # the sweep adds what no field check looks at (NaN in an argument, say).
    named = {path for path, _ in problems}
    problems.extend(sorted(p for p in found if p[0] not in named))
    # Front ends write one account at a time under its lock: an import takes the
    # lock of every account it names (of all accounts, for a site's file).
    lock_accounts(session, (plan.name for plan in plans))
    if not problems:
        _check_accounts(session, plans, problems)
        _check_feed_tokens(session, plans, problems)
    if problems:
        raise ImportRejected(problems)
    counts = {"contexts": 0, "filters": 0, "rules": 0, "destinations": 0}
    cleared: list[tuple[Preference, _ContextPlan]] = []
    replaced: dict[int, tuple[Preference, str]] = {}
    unsent: dict[int, list[int]] = {}
    users: list[User] = []
    new: list[tuple[User, set[str]]] = []
    for plan in plans:
        existed = find_user(session, plan.name) is not None
        user = user_for_write(session, plan.name)
        users.append(user)
        if not existed:
            new.append((user, {c.context for c in plan.contexts}))
        elif plan.contexts:
            unsent.update(_unsent_of(session, user, [c.context for c in plan.contexts]))
        cleared.extend((_clear_context(session, user, c, replaced), c) for c in plan.contexts)
    # Every replaced row goes before any new one: new rows may reuse the old ones'
    # unique names, addresses and feed tokens (another user's, too), and the unit
    # of work would otherwise insert before it deletes.
    session.flush()
    for preference, context in cleared:
        _fill_context(session, preference, context)
    _repoint_unsent(session, replaced, unsent)
    for preference, context in cleared:
        # What the old digest, quiet hours or filter modes held is decided on again now,
        # and so is what waited for an address, if the file gives confirmed ones (as a
        # confirmation does).
        reasons = (*POLICY_HOLDS, "no_address") if context.destinations else POLICY_HOLDS
        release_held(session, preference.user_id, reasons, context=context.context)
        counts["contexts"] += 1
        counts["filters"] += len(context.filters)
        counts["rules"] += sum(len(f.rules) for f in context.filters)
        counts["destinations"] += len(context.destinations)
    # A first import is a new account's first contact: the operator's defaults go into
    # the contexts the file leaves alone (the ones it names, it replaces).
    for user, imported in new:
        give_defaults(session, user, skip=imported)
    for user in users:
        record_change(session, user, "import")
    return ImportSummary(users=len(plans), **counts)
