"""Filters as data: the public JSON form of a context's filters, and its validation.

The preferences file, templates and the preference service all describe filters
in the same shape::

    [{"name": "my builds", "active": true, "oneshot": false,
      "rules": [{"rule": "app_is", "args": {"app": "koji"}, "negated": false}]}]

:func:`parse_filters` checks that shape against the rule catalog and reports
every problem with its JSON path, so templates, imports and the preference
service all accept exactly the same filters. :func:`check_filter_name` and
:func:`stored_rule_name` are the single checks of a filter's name and of how a
rule is stored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument, UnknownRule
from .models import utcnow
from .rules import Catalog, RuleSpec
from .schedule import DELIVERY_MODES

__all__ = [
    "MAX_FILTERS_PER_CONTEXT",
    "MAX_FILTER_NAME",
    "MAX_MUTE",
    "MAX_RULES_PER_FILTER",
    "FilterDraft",
    "Problems",
    "RuleDraft",
    "check_filter_name",
    "parse_filters",
    "stored_rule_name",
]

MAX_FILTER_NAME = 100
MAX_FILTERS_PER_CONTEXT = 100
MAX_RULES_PER_FILTER = 20
#: How far ahead a rule may expire, a filter's pause or a mute end.
MAX_MUTE = dt.timedelta(days=366)

#: ``(JSON path, what is wrong)`` pairs, collected rather than raised one by one.
Problems = list[tuple[str, str]]

_FILTER_KEYS = frozenset(
    {"name", "active", "oneshot", "rules", "delivery", "urgent", "paused_until"}
)
_RULE_KEYS = frozenset({"rule", "args", "negated", "expires_at"})

# Bidirectional overrides make a name display as something else in a terminal.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_filter_name(name: object) -> str:
    """A filter name, stripped: 1 to 100 characters, no control characters."""
    if not isinstance(name, str):
        raise InvalidArgument(
            "A filter name must be text; give the filter a name.", argument="name"
        )
    name = name.strip()
    if not name:
        raise InvalidArgument(
            "A filter name must not be empty; give the filter a name.", argument="name"
        )
    if len(name) > MAX_FILTER_NAME:
        raise InvalidArgument(
            f"A filter name has at most {MAX_FILTER_NAME} characters (this one has {len(name)}); "
            "choose a shorter name.",
            argument="name",
        )
    if any(
        unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in _BIDI_CONTROLS for c in name
    ):
        raise InvalidArgument(
            "A filter name must not contain control characters; type it on one line.",
            argument="name",
        )
    return name


def stored_rule_name(spec: RuleSpec, catalog: Catalog) -> str:
    """How a rule is stored: its short name, or ``module:function`` when another
    rule holds that short name."""
    if spec.name in catalog and catalog.get(spec.name) is spec:
        return spec.name
    return spec.ref


@dataclass(frozen=True)
class RuleDraft:
    """A validated rule, not yet stored: catalog name and normalized arguments."""

    name: str
    arguments: Mapping[str, Any]
    negated: bool = False
    #: When the rule ends by itself (an exclusion added for a while), in UTC.
    expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class FilterDraft:
    """A validated filter, not yet stored."""

    name: str
    active: bool = True
    oneshot: bool = False
    rules: tuple[RuleDraft, ...] = ()
    #: ``instant`` or ``digest`` (``fmn_core.schedule.DELIVERY_MODES``).
    delivery: str = "instant"
    #: Passes through quiet hours.
    urgent: bool = False
    #: Skipped until then, in UTC.
    paused_until: dt.datetime | None = None


def _flag(entry: Mapping[str, Any], key: str, default: bool, path: str, problems: Problems) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        problems.append((f"{path}.{key}", "must be true or false"))
        return default
    return value


#: How the format writes a time (``fmn_core.portability``).
_EXAMPLE_TIME = "2027-01-31T08:00:00+00:00"


def _moment(
    entry: Mapping[str, Any], key: str, path: str, problems: Problems
) -> dt.datetime | None:
    """An optional end time in the public form: ISO 8601 with its UTC offset.

    A time already past is kept: it ended while the file was on its way, and the
    housekeeping that ends such rules and pauses tells the user, as it would have.
    """
    value = entry.get(key)
    if value is None:
        return None
    where = f"{path}.{key}"
    moment = None
    if isinstance(value, str) and len(value) <= 40:
        with contextlib.suppress(ValueError):
            moment = dt.datetime.fromisoformat(value)
    if moment is None or moment.tzinfo is None:
        problems.append((where, f"must be a time with its UTC offset, like {_EXAMPLE_TIME!r}"))
        return None
    try:
        moment = moment.astimezone(dt.UTC)
    except OverflowError:
        problems.append((where, "is not a time fmn can store"))
        return None
    if moment - utcnow() > MAX_MUTE:
        problems.append((where, "must be within a year from now"))
        return None
    return moment


def _parse_rule(entry: Any, path: str, catalog: Catalog, problems: Problems) -> RuleDraft | None:
    if not isinstance(entry, Mapping):
        problems.append((path, 'must be an object like {"rule": "app_is", "args": {...}}'))
        return None
    before = len(problems)
    for key in sorted(set(entry) - _RULE_KEYS, key=str):
        problems.append(
            (f"{path}.{key}", f"unknown key; a rule has {', '.join(sorted(_RULE_KEYS))}")
        )
    name = entry.get("rule")
    arguments = entry.get("args", {})
    negated = _flag(entry, "negated", False, path, problems)
    expires_at = _moment(entry, "expires_at", path, problems)
    if not isinstance(name, str) or not name.strip():
        problems.append((f"{path}.rule", "must name a rule from the catalog"))
        return None
    if not isinstance(arguments, Mapping):
        problems.append((f"{path}.args", "must be an object of argument names and values"))
        return None
    try:
        spec, normalized = catalog.validate(name.strip(), arguments)
    except UnknownRule as error:
        problems.append((f"{path}.rule", str(error)))
        return None
    except InvalidArgument as error:
        where = f"{path}.args.{error.argument}" if error.argument else f"{path}.args"
        problems.append((where, str(error)))
        return None
    if len(problems) > before:
        return None
    return RuleDraft(stored_rule_name(spec, catalog), normalized, negated, expires_at)


def parse_filters(data: Any, path: str, catalog: Catalog, problems: Problems) -> list[FilterDraft]:
    """Validate a list of filters in the public JSON form.

    Every problem is appended to ``problems`` with its JSON path (``path`` is the
    list's own path); the drafts returned are only meaningful when none was found.
    """
    if not isinstance(data, list):
        problems.append((path, "must be a list of filters"))
        return []
    if len(data) > MAX_FILTERS_PER_CONTEXT:
        problems.append((path, f"has {len(data)} filters; at most {MAX_FILTERS_PER_CONTEXT}"))
    drafts: list[FilterDraft] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(data):
        where = f"{path}[{index}]"
        if not isinstance(entry, Mapping):
            problems.append((where, 'must be an object like {"name": "my builds", "rules": [...]}'))
            continue
        for key in sorted(set(entry) - _FILTER_KEYS, key=str):
            problems.append(
                (f"{where}.{key}", f"unknown key; a filter has {', '.join(sorted(_FILTER_KEYS))}")
            )
        try:
            name = check_filter_name(entry.get("name"))
        except InvalidArgument as error:
            problems.append((f"{where}.name", str(error)))
            name = ""
        if name:
            folded = name.casefold()
            if folded in seen:
                problems.append(
                    (f"{where}.name", f"{name!r} is already the name of filter {seen[folded]}")
                )
            seen.setdefault(folded, index)
        active = _flag(entry, "active", True, where, problems)
        oneshot = _flag(entry, "oneshot", False, where, problems)
        urgent = _flag(entry, "urgent", False, where, problems)
        paused_until = _moment(entry, "paused_until", where, problems)
        delivery = entry.get("delivery", "instant")
        if delivery not in DELIVERY_MODES:
            problems.append((f"{where}.delivery", 'must be "instant" or "digest"'))
            delivery = "instant"
        raw_rules = entry.get("rules", [])
        rules: list[RuleDraft] = []
        if not isinstance(raw_rules, list):
            problems.append((f"{where}.rules", "must be a list of rules"))
        else:
            if len(raw_rules) > MAX_RULES_PER_FILTER:
                problems.append(
                    (
                        f"{where}.rules",
                        f"has {len(raw_rules)} rules; at most {MAX_RULES_PER_FILTER}",
                    )
                )
            for number, raw in enumerate(raw_rules):
                draft = _parse_rule(raw, f"{where}.rules[{number}]", catalog, problems)
                if draft is not None:
                    rules.append(draft)
        drafts.append(
            FilterDraft(name, active, oneshot, tuple(rules), str(delivery), urgent, paused_until)
        )
    return drafts
