"""Bugzilla's rule (fmn_core.catalog.bugzilla)."""

from __future__ import annotations

from fmn_core.messages import MessageFacts
from fmn_core.rules import Catalog

from .samples import check


def test_bugzilla_bug_on_package_uses_the_component(
    rules: Catalog, crafted: dict[str, MessageFacts]
) -> None:
    bug = crafted["bugzilla"]
    assert bug.schema == "bugzilla2fedmsg.messageV1"
    assert check(rules, "bugzilla_bug_on_package", bug, package="selinux-policy")
    assert not check(rules, "bugzilla_bug_on_package", bug, package="kernel")
