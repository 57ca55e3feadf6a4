"""Koschei's rule (fmn_core.catalog.koschei)."""

from __future__ import annotations

import dataclasses

from fmn_core.messages import MessageFacts
from fmn_core.rules import Catalog

from .samples import check


def test_koschei_package_failing_needs_the_failing_state(
    rules: Catalog, crafted: dict[str, MessageFacts]
) -> None:
    failing = crafted["koschei"]
    assert check(rules, "koschei_package_failing", failing)
    recovered = dataclasses.replace(failing, body={**failing.body, "new": "ok"})
    assert not check(rules, "koschei_package_failing", recovered)
