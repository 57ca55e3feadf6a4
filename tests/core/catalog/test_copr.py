"""Copr's rules (fmn_core.catalog.copr)."""

from __future__ import annotations

from fmn_core.messages import MessageFacts
from fmn_core.rules import Catalog

from .samples import changed, check, from_corpus, owner


def test_copr_build_in_project_matches_owner_and_name(rules: Catalog, corpus: list[str]) -> None:
    group_build = changed(
        from_corpus(corpus, lambda d: d["id"] == "2016-31e1e282-c176-4a9e-94bc-e4ae34536d47")
    )
    assert check(rules, "copr_build_in_project", group_build, project="@python/python26")
    assert check(rules, "copr_build_in_project", group_build, project="@python/*")
    assert not check(rules, "copr_build_in_project", group_build, project="python/python26")
    assert not check(rules, "copr_build_in_project", group_build, project="@python/python3")


def test_copr_build_in_my_project_is_for_the_owner(rules: Catalog, corpus: list[str]) -> None:
    data = from_corpus(corpus, lambda d: d["id"] == "c5d0b305-b3ca-585d-a4c1-2342244ec62f")
    assert check(rules, "copr_build_in_my_project", changed(data), owner("packit"))
    assert not check(rules, "copr_build_in_my_project", changed(data), owner("praiskup"))


def test_copr_build_failed_needs_the_failed_status(
    rules: Catalog, corpus: list[str], crafted: dict[str, MessageFacts]
) -> None:
    succeeded = from_corpus(corpus, lambda d: d["id"] == "3e2dfbb5-3dbf-504d-a032-baeb200272c6")
    assert not check(rules, "copr_build_failed", changed(succeeded))
    assert check(rules, "copr_build_failed", changed(succeeded, status=0))
    assert check(rules, "copr_build_failed", crafted["copr_failed"])
    start = from_corpus(corpus, lambda d: d["id"] == "c5d0b305-b3ca-585d-a4c1-2342244ec62f")
    assert not check(rules, "copr_build_failed", changed(start, status=0))
