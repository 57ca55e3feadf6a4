"""Pagure's and dist-git's rules (fmn_core.catalog.pagure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fmn_core.messages import MessageFacts
from fmn_core.rules import Catalog

from .samples import changed, check, from_corpus, owner


@pytest.fixture(scope="module")
def distgit_pr(corpus: list[str]) -> dict[str, Any]:
    return from_corpus(
        corpus,
        lambda d: (
            d["topic"] == "org.fedoraproject.prod.pagure.pull-request.new"
            and d["body"]["pullrequest"]["project"]["fullname"] == "rpms/optee_os"
        ),
    )


def test_pagure_pr_on_project_matches_the_full_name(
    rules: Catalog, corpus: list[str], distgit_pr: dict[str, Any]
) -> None:
    assert check(rules, "pagure_pr_on_project", changed(distgit_pr), project="rpms/optee_os")
    assert not check(rules, "pagure_pr_on_project", changed(distgit_pr), project="optee_os")
    assert not check(rules, "pagure_pr_on_project", changed(distgit_pr), project="rpms/kernel")
    kiwi = from_corpus(
        corpus,
        lambda d: (
            "fedora-kiwi-descriptions"
            in json.dumps(d["body"].get("pullrequest", {}).get("project", {}).get("fullname"))
        ),
    )
    assert check(rules, "pagure_pr_on_project", changed(kiwi), project="fedora-kiwi-descriptions")


def test_pagure_issue_on_project_reads_old_messages_too(rules: Catalog, corpus: list[str]) -> None:
    # A 2016 pagure.io message: the project has a name but no fullname yet.
    data = from_corpus(corpus, lambda d: d["topic"] == "io.pagure.prod.pagure.issue.new")
    assert check(rules, "pagure_issue_on_project", changed(data), project="pagure")
    assert not check(rules, "pagure_issue_on_project", changed(data), project="rpms/pagure")
    assert not check(rules, "pagure_pr_on_project", changed(data), project="pagure")


def test_pagure_comment_on_my_pr_is_for_the_author(rules: Catalog, corpus: list[str]) -> None:
    data = from_corpus(corpus, lambda d: d["id"] == "6a1973ae-a0ab-4e5a-8e90-34eea619a5d9")
    message = changed(data)  # mmassari commented on packit's pull request
    assert check(rules, "pagure_comment_on_my_pr", message, owner("packit"))
    assert not check(rules, "pagure_comment_on_my_pr", message, owner("mmassari"))


def test_pagure_assigned_to_me_reads_the_assignee(
    rules: Catalog, crafted: dict[str, MessageFacts]
) -> None:
    assert check(rules, "pagure_assigned_to_me", crafted["pr_assigned"], owner("jdoe"))
    assert not check(rules, "pagure_assigned_to_me", crafted["pr_assigned"], owner("jjames"))


def test_distgit_pr_on_my_packages_uses_ownership(
    rules: Catalog, corpus: list[str], distgit_pr: dict[str, Any]
) -> None:
    message = changed(distgit_pr)
    assert check(
        rules, "distgit_pr_on_my_packages", message, owner("eballetbo", {"eballetbo": ["optee_os"]})
    )
    assert not check(
        rules,
        "distgit_pr_on_my_packages",
        message,
        owner("eballetbo", {"eballetbo": ["kernel"], "pbrobinson": ["optee_os"]}),
    )
    # The same project name on pagure.io is not a Fedora package.
    pagure_io = changed(distgit_pr, "io.pagure.prod.pagure.pull-request.new")
    assert not check(
        rules,
        "distgit_pr_on_my_packages",
        pagure_io,
        owner("eballetbo", {"eballetbo": ["optee_os"]}),
    )
