"""Templates: named lists of filters a user clones into a context.

A template's filters have the public JSON form of ``fmn_core.filters`` and are
validated by its :func:`~fmn_core.filters.parse_filters`. The built-in templates
are code (and copied into the ``templates`` table); operators may add rows.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import catalog_of
from .errors import InvalidArgument
from .filters import FilterDraft, Problems, parse_filters
from .models import Template
from .rules import Catalog

__all__ = [
    "BUILTIN_TEMPLATES",
    "TemplateDefinition",
    "TemplateView",
    "all_templates",
    "ensure_builtin_templates",
    "find_template",
    "template_view",
]


@dataclass(frozen=True)
class TemplateDefinition:
    """A template as code defines it (built-ins) or an operator stores it."""

    name: str
    title: str
    description: str
    filters: tuple[dict[str, Any], ...]

    def parse(self, catalog: Catalog) -> list[FilterDraft]:
        """The template's filters, validated; ``InvalidArgument`` if it is broken."""
        problems: Problems = []
        drafts = parse_filters(list(self.filters), "filters", catalog, problems)
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


#: The templates every deployment offers. Only rules from the built-in catalog
#: appear here: the contract rules and koji_build_failed; a test validates each one.
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
                _rule("koji_build_failed"),
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
                _rule("koji_build_failed"),
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
        template.parse(catalog_of(session))
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
