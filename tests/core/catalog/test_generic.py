"""The generic rules (fmn_core.catalog.generic): artifacts, bots, topics, ownership."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fmn_core.messages import MessageFacts
from fmn_core.rules import Catalog

from .samples import changed, check, owner


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("container_involved", "container", "fedora-toolbox"),
        ("module_involved", "module", "nodejs"),
        ("flatpak_involved", "flatpak", "firefox"),
    ],
)
def test_artifact_rules_read_the_facts(
    rules: Catalog, crafted: dict[str, MessageFacts], name: str, key: str, value: str
) -> None:
    assert check(rules, name, crafted[key], None, **{key: value})
    assert not check(rules, name, crafted[key], None, **{key: "other"})
    other_kind = "module" if key != "module" else "container"
    assert not check(rules, name, crafted[other_kind], None, **{key: value})


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        ("kalev", True),
        (None, True),
        ("packit", False),
        ("zodbot", False),
        ("dependabot[bot]", False),
        ("release-bot", False),
        ("abbot", True),
    ],
)
def test_not_from_bot(
    rules: Catalog, bodhi_comment: dict[str, Any], agent: str | None, expected: bool
) -> None:
    message = dataclasses.replace(changed(bodhi_comment), agent_name=agent)
    assert check(rules, "not_from_bot", message) is expected


def test_topic_contains(rules: Catalog, bodhi_comment: dict[str, Any]) -> None:
    assert check(rules, "topic_contains", changed(bodhi_comment), text=".update.comment")
    assert not check(rules, "topic_contains", changed(bodhi_comment), text="koji")


def test_package_owned_by_me_reads_the_ownership_cache(
    rules: Catalog, bodhi_comment: dict[str, Any]
) -> None:
    message = changed(bodhi_comment)
    mine = owner("jforbes", {"jforbes": ["kernel"], "@kernel-maint": ["kernel"]})
    assert check(rules, "package_owned_by_me", message, mine)
    assert check(rules, "package_owned_by_group", message, mine, group="kernel-maint")
    assert not check(rules, "package_owned_by_me", message, owner("jforbes"))


def test_app_is_matches_app_names_with_spaces(corpus: list[str]) -> None:
    from fmn_core.errors import MalformedMessage
    from fmn_core.messages import facts_of, parse_line
    from fmn_core.rules import RuleContext, default_catalog

    spec, args = default_catalog().validate("app_is", {"app": "the new hotness"})
    hits = []
    for line in corpus:
        try:
            facts = facts_of(parse_line(line))
        except MalformedMessage:
            continue
        if facts.app_name == "The New Hotness":
            hits.append(spec(facts, RuleContext(owner="alice"), args))
    assert hits and all(hits)
