"""Filters as data: built-in templates, operator templates, and their validation.

A template is a named list of filters that a user clones into a context, in the
same shape the public preferences file uses for a context's ``filters``::

    [{"name": "my builds", "active": true, "oneshot": false,
      "rules": [{"rule": "app_is", "args": {"app": "koji"}, "negated": false}]}]

:func:`parse_filters` checks that shape against the rule catalog and reports
every problem with its JSON path, so templates, imports and the preference
service all accept exactly the same filters.
"""

from __future__ import annotations

import copy
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import InvalidArgument, UnknownRule
from .models import Template
from .rules import Catalog, RuleSpec, default_catalog

__all__ = [
    "BUILTIN_TEMPLATES",
    "MAX_FILTERS_PER_CONTEXT",
    "MAX_FILTER_NAME",
    "MAX_RULES_PER_FILTER",
    "FilterDraft",
    "Problems",
    "RuleDraft",
    "TemplateDefinition",
    "TemplateView",
    "all_templates",
    "check_filter_name",
    "ensure_builtin_templates",
    "find_template",
    "parse_filters",
    "stored_rule_name",
    "template_view",
]

MAX_FILTER_NAME = 100
MAX_FILTERS_PER_CONTEXT = 100
MAX_RULES_PER_FILTER = 20

#: ``(JSON path, what is wrong)`` pairs, collected rather than raised one by one.
Problems = list[tuple[str, str]]

_FILTER_KEYS = frozenset({"name", "active", "oneshot", "rules"})
_RULE_KEYS = frozenset({"rule", "args", "negated"})

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


@dataclass(frozen=True)
class FilterDraft:
    """A validated filter, not yet stored."""

    name: str
    active: bool = True
    oneshot: bool = False
    rules: tuple[RuleDraft, ...] = ()


def _flag(entry: Mapping[str, Any], key: str, default: bool, path: str, problems: Problems) -> bool:
    value = entry.get(key, default)
    if not isinstance(value, bool):
        problems.append((f"{path}.{key}", "must be true or false"))
        return default
    return value


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
    return RuleDraft(stored_rule_name(spec, catalog), normalized, negated)


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
        drafts.append(FilterDraft(name, active, oneshot, tuple(rules)))
    return drafts


# --- templates ---------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateDefinition:
    """A template as code defines it (built-ins) or an operator stores it."""

    name: str
    title: str
    description: str
    filters: tuple[dict[str, Any], ...]

    def parse(self, catalog: Catalog | None = None) -> list[FilterDraft]:
        """The template's filters, validated; ``InvalidArgument`` if it is broken."""
        problems: Problems = []
        drafts = parse_filters(
            list(self.filters), "filters", catalog or default_catalog(), problems
        )
        if problems:
            where, why = problems[0]
            raise InvalidArgument(
                f"The template {self.name!r} is broken ({where}: {why.rstrip('.')}); "
                "tell the fmn operator.",
                argument="template",
            )
        return drafts


@dataclass(frozen=True)
class TemplateView:
    """A template as front ends list it."""

    name: str
    title: str
    description: str
    filters: tuple[dict[str, Any], ...] = field(default=())


def _rule(name: str, negated: bool = False, **arguments: str) -> dict[str, Any]:
    return {"rule": name, "args": arguments, "negated": negated}


def _filter(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "active": True, "oneshot": False, "rules": list(rules)}


_KOJI_BUILDS = "*.buildsys.build.state.change"

#: The templates every deployment offers. Only contract rules from the built-in
#: catalog appear here; a test validates each one.
BUILTIN_TEMPLATES: tuple[TemplateDefinition, ...] = (
    TemplateDefinition(
        "packager",
        "Packager",
        "Failed Koji builds and Bodhi updates of the packages you maintain, comments on your "
        "updates, and anything else that names you, except what you did yourself.",
        (
            _filter(
                "failed builds of my packages",
                _rule("package_owned_by_me"),
                _rule("topic_matches", pattern=_KOJI_BUILDS),
                _rule("summary_contains", text="failed"),
            ),
            _filter(
                "updates of my packages",
                _rule("package_owned_by_me"),
                _rule("app_is", app="bodhi"),
                _rule("triggered_by_me", negated=True),
            ),
            _filter(
                "comments on my updates",
                _rule("topic_matches", pattern="*.bodhi.update.comment"),
                _rule("pertains_to_me"),
                _rule("triggered_by_me", negated=True),
            ),
            _filter(
                "concerns me",
                _rule("pertains_to_me"),
                _rule("triggered_by_me", negated=True),
            ),
        ),
    ),
    TemplateDefinition(
        "quiet",
        "Quiet",
        "Only failures and errors that concern you or the packages you maintain.",
        (
            _filter(
                "failed builds of my packages",
                _rule("package_owned_by_me"),
                _rule("topic_matches", pattern=_KOJI_BUILDS),
                _rule("summary_contains", text="failed"),
            ),
            _filter(
                "errors that concern me",
                _rule("pertains_to_me"),
                _rule("severity_at_least", level="ERROR"),
            ),
        ),
    ),
    TemplateDefinition(
        "mentions",
        "Mentions",
        "Everything that names you, except what you did yourself.",
        (
            _filter(
                "concerns me",
                _rule("pertains_to_me"),
                _rule("triggered_by_me", negated=True),
            ),
        ),
    ),
    TemplateDefinition(
        "everything-mine",
        "Everything mine",
        "Every message that names you or is about a package you maintain, your own actions "
        "included.",
        (
            _filter("concerns me", _rule("pertains_to_me")),
            _filter("my packages", _rule("package_owned_by_me")),
        ),
    ),
)

_BUILTIN_BY_NAME = {template.name: template for template in BUILTIN_TEMPLATES}


def _from_row(row: Template) -> TemplateDefinition:
    definition = row.definition if isinstance(row.definition, Mapping) else {}
    filters = definition.get("filters", [])
    return TemplateDefinition(
        row.name,
        row.title,
        row.description or "",
        tuple(copy.deepcopy(f) for f in filters) if isinstance(filters, list) else (),
    )


def _definition_json(template: TemplateDefinition) -> dict[str, Any]:
    return {"filters": [copy.deepcopy(f) for f in template.filters]}


def ensure_builtin_templates(session: Session) -> int:
    """Write the built-in templates into the ``templates`` table (insert or update);
    returns how many rows changed. Each one is validated first."""
    for template in BUILTIN_TEMPLATES:
        template.parse()
    existing = {
        row.name: row
        for row in session.scalars(select(Template).where(Template.name.in_(_BUILTIN_BY_NAME)))
    }
    changed = 0
    for template in BUILTIN_TEMPLATES:
        definition = _definition_json(template)
        row = existing.get(template.name)
        if row is None:
            session.add(
                Template(
                    name=template.name,
                    title=template.title,
                    description=template.description,
                    definition=definition,
                )
            )
            changed += 1
        elif (row.title, row.description, row.definition) != (
            template.title,
            template.description,
            definition,
        ):
            row.title, row.description, row.definition = (
                template.title,
                template.description,
                definition,
            )
            changed += 1
    session.flush()
    return changed


def all_templates(session: Session) -> list[TemplateDefinition]:
    """The built-in templates, then the operator's own rows, each group by name.

    A row named like a built-in is the built-in's stored copy; the code wins, so
    every process offers the same built-ins whether or not the table was updated.
    """
    rows = session.scalars(
        select(Template).where(Template.name.not_in(_BUILTIN_BY_NAME)).order_by(Template.name)
    )
    return [*sorted(BUILTIN_TEMPLATES, key=lambda t: t.name), *(_from_row(r) for r in rows)]


def find_template(session: Session, name: str) -> TemplateDefinition | None:
    """One template by name, built-in or the operator's; None if there is none."""
    if any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in name):
        return None  # NUL and lone surrogates can't even be sent to the database
    if name in _BUILTIN_BY_NAME:
        return _BUILTIN_BY_NAME[name]
    row = session.get(Template, name)
    return _from_row(row) if row is not None else None


def template_view(template: TemplateDefinition) -> TemplateView:
    """A copy of a template that front ends may keep."""
    return TemplateView(
        template.name,
        template.title,
        template.description,
        tuple(copy.deepcopy(f) for f in template.filters),
    )
