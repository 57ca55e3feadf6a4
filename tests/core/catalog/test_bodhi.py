"""Bodhi's rules (fmn_core.catalog.bodhi) over real update messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fmn_core.rules import Catalog

from .samples import changed, check, from_corpus, owner


@pytest.fixture(scope="module")
def bodhi_comment(corpus: list[str]) -> dict[str, Any]:
    return from_corpus(
        corpus,
        lambda d: (
            d["topic"].endswith(".bodhi.update.comment")
            and d["body"].get("comment", {}).get("user", {}).get("name") == "dudemcpants"
        ),
    )


def test_bodhi_update_for_package_uses_the_update_builds(
    rules: Catalog, bodhi_comment: dict[str, Any]
) -> None:
    message = changed(bodhi_comment)
    assert message.packages == {"kernel", "abrt-addon-python3"}
    assert check(rules, "bodhi_update_for_package", message, package="kernel")
    assert not check(rules, "bodhi_update_for_package", message, package="bash")


def test_bodhi_update_status_reads_the_update(
    rules: Catalog, corpus: list[str], bodhi_comment: dict[str, Any]
) -> None:
    assert check(rules, "bodhi_update_status", changed(bodhi_comment), status="pending")
    assert not check(rules, "bodhi_update_status", changed(bodhi_comment), status="stable")
    stable = from_corpus(corpus, lambda d: d["topic"].endswith(".bodhi.update.complete.stable"))
    assert check(rules, "bodhi_update_status", changed(stable), status="stable")


def test_bodhi_update_pushed_tells_testing_from_stable(rules: Catalog, corpus: list[str]) -> None:
    stable = changed(
        from_corpus(corpus, lambda d: d["topic"].endswith(".bodhi.update.complete.stable"))
    )
    testing = changed(
        from_corpus(corpus, lambda d: d["topic"].endswith(".bodhi.update.complete.testing"))
    )
    assert check(rules, "bodhi_update_pushed", stable, repository="stable")
    assert not check(rules, "bodhi_update_pushed", stable, repository="testing")
    assert check(rules, "bodhi_update_pushed", testing, repository="testing")
    spec, arguments = rules.validate("bodhi_update_pushed", {"repository": "stable"})
    assert spec.index_values(arguments, owner("x")) == frozenset(
        {
            "org.fedoraproject.prod.bodhi.update.complete.stable",
            "org.fedoraproject.stg.bodhi.update.complete.stable",
        }
    )


def test_bodhi_comment_on_my_update_is_for_the_submitter(
    rules: Catalog, bodhi_comment: dict[str, Any]
) -> None:
    message = changed(bodhi_comment)  # dudemcpants commented on ryanlerch's update
    assert check(rules, "bodhi_comment_on_my_update", message, owner("ryanlerch"))
    assert not check(rules, "bodhi_comment_on_my_update", message, owner("dudemcpants"))
    assert not check(rules, "bodhi_comment_on_my_update", message, owner("kalev"))
    own = json.loads(json.dumps(bodhi_comment["body"]))
    own["comment"]["user"]["name"] = "ryanlerch"
    assert not check(
        rules, "bodhi_comment_on_my_update", changed(bodhi_comment, **own), owner("ryanlerch")
    )


def test_bodhi_negative_karma_needs_karma_below_zero(
    rules: Catalog, bodhi_comment: dict[str, Any]
) -> None:
    assert check(rules, "bodhi_negative_karma", changed(bodhi_comment))  # karma -1
    neutral = json.loads(json.dumps(bodhi_comment["body"]))
    neutral["comment"]["karma"] = 0
    assert not check(rules, "bodhi_negative_karma", changed(bodhi_comment, **neutral))
