"""Built-in and operator templates, and the filter documents they are made of."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from fmn_core import preferences as prefs
from fmn_core.db import Database
from fmn_core.errors import InvalidArgument
from fmn_core.messages import MessageFacts, facts_of, load_message
from fmn_core.models import Filter, Template
from fmn_core.preferences import Actor
from fmn_core.rules import RuleContext, default_catalog
from fmn_core.templates import BUILTIN_TEMPLATES, ensure_builtin_templates

ALICE = Actor("alice")

#: The rules of the public contract, and the one application rule built-in templates use.
TEMPLATE_RULES = {"koji_build_failed"} | {
    "app_is",
    "topic_matches",
    "severity_at_least",
    "pertains_to_me",
    "user_involved",
    "triggered_by_me",
    "triggered_by",
    "package_involved",
    "package_owned_by_me",
    "package_owned_by",
    "package_owned_by_group",
    "group_involved",
    "summary_contains",
}


def test_builtin_templates_validate_against_the_catalog() -> None:
    catalog = default_catalog()
    names = [t.name for t in BUILTIN_TEMPLATES]
    assert {"packager", "quiet", "mentions", "everything-mine"} <= set(names)
    assert len(names) == len(set(names))
    for template in BUILTIN_TEMPLATES:
        drafts = template.parse(catalog)
        assert drafts and template.title and template.description
        for draft in drafts:
            assert draft.rules, f"{template.name}: {draft.name} has no rules"
            for rule in draft.rules:
                assert rule.name in TEMPLATE_RULES
                spec = catalog.get(rule.name)
                assert spec.validate(rule.arguments) == dict(rule.arguments)


class _Owns:
    def __init__(self, owner: str, packages: set[str]) -> None:
        self.owner, self.packages = owner, frozenset(packages)

    def packages_of(self, owner: str) -> frozenset[str]:
        return self.packages if owner == self.owner else frozenset()

    def owners_of(self, package: str) -> frozenset[str]:
        return frozenset({self.owner}) if package in self.packages else frozenset()


def facts(
    topic: str,
    *,
    agent: str | None = None,
    users: set[str] | None = None,
    packages: set[str] | None = None,
    summary: str = "",
    severity: int = 20,
) -> MessageFacts:
    app = topic.split(".")[3]
    return MessageFacts(
        id="m",
        topic=topic,
        app_name=app,
        agent_name=agent,
        usernames=frozenset(users or ()),
        packages=frozenset(packages or ()),
        groups=frozenset(),
        containers=frozenset(),
        modules=frozenset(),
        flatpaks=frozenset(),
        severity=severity,
        summary=summary,
        url=None,
        body={},
        headers={},
        schema="base.message",
    )


def matching_filters(
    template: str, message: MessageFacts, owned: frozenset[str] = frozenset({"python-requests"})
) -> list[str]:
    catalog = default_catalog()
    context = RuleContext("alice", _Owns("alice", set(owned)))
    found = next(t for t in BUILTIN_TEMPLATES if t.name == template)
    hits = []
    for draft in found.parse(catalog):
        if all(
            catalog.get(r.name)(message, context, r.arguments) != r.negated for r in draft.rules
        ):
            hits.append(draft.name)
    return hits


@pytest.mark.parametrize(
    ("template", "message", "expected"),
    [
        (
            "packager",
            facts(
                "org.fedoraproject.prod.bodhi.update.request.testing",
                agent="bob",
                packages={"python-requests"},
            ),
            ["updates of my packages"],
        ),
        (
            "packager",
            facts(
                "org.fedoraproject.prod.bodhi.update.request.testing",
                agent="alice",
                packages={"python-requests"},
            ),
            [],
        ),
        (
            "packager",
            facts(
                "org.fedoraproject.prod.bodhi.update.comment", agent="bob", users={"alice", "bob"}
            ),
            ["comments on my updates", "concerns me"],
        ),
        (
            "packager",
            facts("org.fedoraproject.prod.bodhi.update.comment", agent="alice", users={"alice"}),
            [],
        ),
        ("quiet", facts("org.fedoraproject.prod.pagure.issue.new", users={"alice"}), []),
        (
            "quiet",
            facts("org.fedoraproject.prod.pagure.issue.new", users={"alice"}, severity=40),
            ["errors that concern me"],
        ),
        (
            "mentions",
            facts("org.fedoraproject.prod.pagure.issue.new", agent="bob", users={"alice"}),
            ["concerns me"],
        ),
        (
            "everything-mine",
            facts(
                "org.fedoraproject.prod.bodhi.update.comment",
                agent="alice",
                users={"alice"},
                packages={"python-requests"},
            ),
            ["concerns me", "my packages"],
        ),
    ],
)
def test_builtin_templates_match_what_they_promise(
    template: str, message: MessageFacts, expected: list[str]
) -> None:
    assert matching_filters(template, message) == expected


@pytest.fixture(scope="module")
def koji_build(corpus: list[str]) -> dict[str, Any]:
    """A real koji build message (koji-fedoramessaging, 2024): releng's Fedora-i3-Live."""
    line = next(line for line in corpus if '"0c322c1e-6144-5d4e-884f-6fb102662f87"' in line)
    data: dict[str, Any] = json.loads(line)
    return data


def koji_build_in_state(data: dict[str, Any], state: int) -> MessageFacts:
    """The real message with koji's build state set (0 building ... 4 canceled)."""
    body = {**data["body"], "new": state}
    return facts_of(load_message({"topic": data["topic"], "body": body, "headers": {}}))


@pytest.mark.parametrize("template", ["packager", "quiet"])
@pytest.mark.parametrize(
    ("state", "expected"),
    [(3, ["failed builds of my packages"]), (1, []), (0, []), (2, []), (4, [])],
)
def test_builtin_templates_hear_of_failed_koji_builds_of_my_packages(
    koji_build: dict[str, Any], template: str, state: int, expected: list[str]
) -> None:
    message = koji_build_in_state(koji_build, state)
    assert message.packages == {"Fedora-i3-Live"}
    assert matching_filters(template, message, frozenset({"Fedora-i3-Live"})) == expected
    # Somebody else's package: never, whatever its state.
    assert matching_filters(template, message) == []


def test_builtin_templates_read_the_build_state_not_the_summary(koji_build: dict[str, Any]) -> None:
    # A completed build of a package whose name says "failed" is no failure.
    body = {**koji_build["body"], "new": 1, "name": "failed-tests"}
    message = facts_of(load_message({"topic": koji_build["topic"], "body": body, "headers": {}}))
    assert "failed" in message.summary.lower()
    assert matching_filters("packager", message, frozenset({"failed-tests"})) == []
    failed = facts_of(
        load_message({"topic": koji_build["topic"], "body": {**body, "new": 3}, "headers": {}})
    )
    assert matching_filters("packager", failed, frozenset({"failed-tests"})) == [
        "failed builds of my packages"
    ]


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
        {
            "name": "python-sig",
            "active": True,
            "oneshot": False,
            "rules": [{"rule": "package_owned_by_group", "args": {"group": "python-sig"}}],
        },
    ]
}


def test_list_templates_returns_builtins_then_operator_rows(db: Database) -> None:
    with db.begin() as session:
        ensure_builtin_templates(session)
        session.add(
            Template(
                name="aa-python",
                title="Python SIG",
                description="Python packages",
                definition=OPERATOR_TEMPLATE,
            )
        )
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
    with (
        pytest.raises(InvalidArgument, match="tell the fmn operator") as caught,
        db.begin() as session,
    ):
        prefs.use_template(session, ALICE, "broken", "email")
    assert "filters[0].rules[0].rule" in str(caught.value)
    with db.begin() as session:
        assert session.scalar(select(func.count()).select_from(Filter)) == 0
