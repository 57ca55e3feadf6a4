"""Discourse's rule (fmn_core.catalog.discourse)."""

from __future__ import annotations

from fmn_core.rules import Catalog

from .samples import changed, check, from_corpus


def test_discourse_category_by_slug_or_number(rules: Catalog, corpus: list[str]) -> None:
    post = changed(from_corpus(corpus, lambda d: d["topic"].endswith("discourse.post.post_edited")))
    topic = changed(
        from_corpus(corpus, lambda d: d["topic"].endswith("discourse.topic.topic_created"))
    )
    assert check(rules, "discourse_category", post, category="english")
    assert not check(rules, "discourse_category", post, category="project")
    assert check(rules, "discourse_category", topic, category="97")
    assert not check(rules, "discourse_category", topic, category="98")
    assert not check(rules, "discourse_category", topic, category="english")
