"""Fixtures of the rule tests: the built-in catalog, hand-built messages, common picks."""

from __future__ import annotations

from typing import Any

import pytest

from fmn_core import catalog
from fmn_core.messages import MessageFacts
from fmn_core.rules import Catalog

from .samples import build_crafted, from_corpus


@pytest.fixture(scope="module")
def rules() -> Catalog:
    built = Catalog()
    built.add_module(catalog)
    return built


@pytest.fixture(scope="module")
def crafted(corpus: list[str]) -> dict[str, MessageFacts]:
    return build_crafted(corpus)


@pytest.fixture(scope="module")
def bodhi_comment(corpus: list[str]) -> dict[str, Any]:
    return from_corpus(
        corpus,
        lambda d: (
            d["topic"].endswith(".bodhi.update.comment")
            and d["body"].get("comment", {}).get("user", {}).get("name") == "dudemcpants"
        ),
    )
