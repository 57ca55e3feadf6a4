"""Account rules (fmn_core.catalog.people): group membership and badges."""

from __future__ import annotations

import json

from fmn_core.rules import Catalog

from .samples import changed, check, from_corpus, owner


def test_badge_awarded_to_me_reads_both_body_shapes(rules: Catalog, corpus: list[str]) -> None:
    awards = [
        changed(json.loads(line))
        for line in corpus
        if json.loads(line)["topic"].endswith(".fedbadges.badge.award")
    ]
    assert len(awards) >= 2
    for award in awards:
        assert check(rules, "badge_awarded_to_me", award, owner("ralph"))
        assert not check(rules, "badge_awarded_to_me", award, owner("threebean"))


def test_group_membership_rules(rules: Catalog, corpus: list[str]) -> None:
    data = from_corpus(
        corpus, lambda d: d["topic"].endswith(".fas.group.member.sponsor") and "msg" in d["body"]
    )
    message = changed(data)  # dudemcpants sponsored testuser into developers
    assert check(rules, "fas_group_membership_change", message, group="developers")
    assert not check(rules, "fas_group_membership_change", message, group="packager")
    assert check(rules, "my_group_membership_changed", message, owner("testuser"))
    assert not check(rules, "my_group_membership_changed", message, owner("dudemcpants"))
