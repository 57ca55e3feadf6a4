"""Built-in and operator templates, and the filter documents they are made of."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from fmn_core import preferences as prefs
from fmn_core.db import Database
from fmn_core.errors import InvalidArgument
from fmn_core.messages import MessageFacts
from fmn_core.models import Filter, Template
from fmn_core.preferences import Actor
from fmn_core.rules import RuleContext, default_catalog
from fmn_core.templates import (
    BUILTIN_TEMPLATES,
    FilterDraft,
    Problems,
    check_filter_name,
    ensure_builtin_templates,
    parse_filters,
)

ALICE = Actor("alice")

#: The rules of the public contract; built-in templates use only these.
CONTRACT_RULES = {
    "app_is", "topic_matches", "severity_at_least", "pertains_to_me", "user_involved",
    "triggered_by_me", "triggered_by", "package_involved", "package_owned_by_me",
    "package_owned_by", "package_owned_by_group", "group_involved", "summary_contains",
}


def test_builtin_templates_validate_against_the_catalog() -> None:
    catalog = default_catalog()
    names = [t.name for t in BUILTIN_TEMPLATES]
    assert {"packager", "quiet", "mentions", "everything-mine"} <= set(names)
    assert len(names) == len(set(names))
    for template in BUILTIN_TEMPLATES:
        drafts = template.parse()
        assert drafts and template.title and template.description
        for draft in drafts:
            assert draft.rules, f"{template.name}: {draft.name} has no rules"
            for rule in draft.rules:
                assert rule.name in CONTRACT_RULES
                spec = catalog.get(rule.name)
                assert spec.validate(rule.arguments) == dict(rule.arguments)


class _Owns:
    def __init__(self, owner: str, packages: set[str]) -> None:
        self.owner, self.packages = owner, frozenset(packages)

    def packages_of(self, owner: str) -> frozenset[str]:
        return self.packages if owner == self.owner else frozenset()

    def owners_of(self, package: str) -> frozenset[str]:
        return frozenset({self.owner}) if package in self.packages else frozenset()


def facts(topic: str, *, agent: str | None = None, users: set[str] | None = None,
          packages: set[str] | None = None, summary: str = "", severity: int = 20) -> MessageFacts:
    app = topic.split(".")[3]
    return MessageFacts(
        id="m", topic=topic, app_name=app, agent_name=agent, usernames=frozenset(users or ()),
        packages=frozenset(packages or ()), groups=frozenset(), containers=frozenset(),
        modules=frozenset(), flatpaks=frozenset(), severity=severity, summary=summary, url=None,
        body={}, headers={}, schema="base.message",
    )


def matching_filters(template: str, message: MessageFacts) -> list[str]:
    catalog = default_catalog()
    context = RuleContext("alice", _Owns("alice", {"python-requests"}))
    found = next(t for t in BUILTIN_TEMPLATES if t.name == template)
    hits = []
    for draft in found.parse():
        if all(catalog.get(r.name)(message, context, r.arguments) != r.negated
               for r in draft.rules):
            hits.append(draft.name)
    return hits


@pytest.mark.parametrize(
    ("template", "message", "expected"),
    [
        ("packager", facts("org.fedoraproject.prod.buildsys.build.state.change",
                           packages={"python-requests"},
                           summary="Build FAILED: python-requests-2.0-1.fc40"),
         ["failed builds of my packages"]),
        ("packager", facts("org.fedoraproject.prod.buildsys.build.state.change",
                           packages={"python-requests"}, summary="Build COMPLETE: ..."), []),
        ("packager", facts("org.fedoraproject.prod.bodhi.update.request.testing", agent="bob",
                           packages={"python-requests"}), ["updates of my packages"]),
        ("packager", facts("org.fedoraproject.prod.bodhi.update.request.testing", agent="alice",
                           packages={"python-requests"}), []),
        ("packager", facts("org.fedoraproject.prod.bodhi.update.comment", agent="bob",
                           users={"alice", "bob"}),
         ["comments on my updates", "concerns me"]),
        ("packager", facts("org.fedoraproject.prod.bodhi.update.comment", agent="alice",
                           users={"alice"}), []),
        ("quiet", facts("org.fedoraproject.prod.pagure.issue.new", users={"alice"}), []),
        ("quiet", facts("org.fedoraproject.prod.pagure.issue.new", users={"alice"},
                        severity=40), ["errors that concern me"]),
        ("mentions", facts("org.fedoraproject.prod.pagure.issue.new", agent="bob",
                           users={"alice"}), ["concerns me"]),
        ("everything-mine", facts("org.fedoraproject.prod.bodhi.update.comment", agent="alice",
                                  users={"alice"}, packages={"python-requests"}),
         ["concerns me", "my packages"]),
    ],
)
def test_builtin_templates_match_what_they_promise(template: str, message: MessageFacts,
                                                   expected: list[str]) -> None:
    assert matching_filters(template, message) == expected


def test_ensure_builtin_templates_upserts(db: Database) -> None:
    with db.begin() as session:
        assert ensure_builtin_templates(session) == len(BUILTIN_TEMPLATES)
    with db.begin() as session:
        assert ensure_builtin_templates(session) == 0
        row = session.get(Template, "quiet")
        assert row is not None and row.definition["filters"][1]["name"] == "errors that concern me"
        row.title = "Something else"
    with db.begin() as session:
        assert ensure_builtin_templates(session) == 1
        restored = session.get(Template, "quiet")
        assert restored is not None and restored.title == "Quiet"
        total = session.scalar(select(func.count()).select_from(Template))
        assert total == len(BUILTIN_TEMPLATES)


OPERATOR_TEMPLATE = {
    "filters": [
        {"name": "python-sig", "active": True, "oneshot": False,
         "rules": [{"rule": "package_owned_by_group", "args": {"group": "python-sig"}}]},
    ]
}


def test_list_templates_returns_builtins_then_operator_rows(db: Database) -> None:
    with db.begin() as session:
        ensure_builtin_templates(session)
        session.add(Template(name="aa-python", title="Python SIG", description="Python packages",
                             definition=OPERATOR_TEMPLATE))
    with db.begin() as session:
        views = prefs.list_templates(session)
    builtins = sorted(t.name for t in BUILTIN_TEMPLATES)
    assert [v.name for v in views] == [*builtins, "aa-python"]
    operator = views[-1]
    assert operator.title == "Python SIG" and operator.filters[0]["name"] == "python-sig"
    # Views are copies: changing one changes nothing stored.
    operator.filters[0]["name"] = "changed"
    with db.begin() as session:
        assert prefs.list_templates(session)[-1].filters[0]["name"] == "python-sig"


def test_use_template_with_an_operator_template(db: Database) -> None:
    with db.begin() as session:
        session.add(Template(name="python", title="Python SIG", definition=OPERATOR_TEMPLATE))
    with db.begin() as session:
        views = prefs.use_template(session, ALICE, "python", "irc")
    assert [(f.name, f.rules[0].text) for f in views] == [
        ("python-sig", "package_owned_by_group group=python-sig")
    ]


def test_use_template_refuses_a_broken_operator_template(db: Database) -> None:
    broken = {"filters": [{"name": "x", "rules": [{"rule": "no_such_rule", "args": {}}]}]}
    with db.begin() as session:
        session.add(Template(name="broken", title="Broken", definition=broken))
    with pytest.raises(InvalidArgument, match="tell the fmn operator") as caught, \
            db.begin() as session:
        prefs.use_template(session, ALICE, "broken", "email")
    assert "filters[0].rules[0].rule" in str(caught.value)
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Filter)) == 0


def test_parse_filters_reports_every_problem_with_its_path() -> None:
    document: Any = [
        {"name": "ok", "rules": [{"rule": "app_is", "args": {"app": "koji"}}]},
        {"name": "OK", "active": "yes", "colour": 1,
         "rules": [{"rule": "app_is", "args": {}}, {"rule": "nope"}, "text",
                   {"rule": "triggered_by_me", "negated": 1}, {"rule": "app_is", "args": []}]},
        {"name": "\x00", "rules": "all"},
        7,
    ]
    problems: Problems = []
    drafts = parse_filters(document, "filters", default_catalog(), problems)
    paths = [path for path, _ in problems]
    assert paths == [
        "filters[1].colour",
        "filters[1].name",
        "filters[1].active",
        "filters[1].rules[0].args.app",
        "filters[1].rules[1].rule",
        "filters[1].rules[2]",
        "filters[1].rules[3].negated",
        "filters[1].rules[4].args",
        "filters[2].name",
        "filters[2].rules",
        "filters[3]",
    ]
    assert "already the name of filter 0" in problems[1][1]
    assert drafts[0] == FilterDraft("ok", True, False, drafts[0].rules)
    assert drafts[0].rules[0].arguments == {"app": "koji"}


def test_parse_filters_stores_module_references_by_short_name() -> None:
    problems: Problems = []
    drafts = parse_filters(
        [{"name": "f", "rules": [{"rule": "fmn_core.catalog:app_is", "args": {"app": "x"}}]}],
        "filters", default_catalog(), problems)
    assert problems == [] and drafts[0].rules[0].name == "app_is"


def test_check_filter_name_strips_and_limits() -> None:
    assert check_filter_name("  my builds ") == "my builds"
    assert check_filter_name("x" * 100) == "x" * 100
    for bad in ("", "x" * 101, "a\u2028b", "a\tb", 3):
        with pytest.raises(InvalidArgument):
            check_filter_name(bad)
