"""Koschei: packages whose scratch rebuilds started failing."""

from __future__ import annotations

from ..messages import MessageFacts
from ..rules import IndexHint, RuleContext, rule
from .hints import FEDORA, RANK_TOPIC, in_topics, topics
from .reading import body_text

__all__ = [
    "koschei_package_failing",
]


_KOSCHEI_PACKAGE = topics(FEDORA, "koschei.package.state.change")


@rule("Koschei package failing", hint=IndexHint("topic", in_topics(_KOSCHEI_PACKAGE), RANK_TOPIC))
def koschei_package_failing(message: MessageFacts, context: RuleContext) -> bool:
    """Koschei's scratch rebuilds of a package started failing (its dependencies changed
    and it no longer builds); add "Package owned by me" to watch your own."""
    return message.topic in _KOSCHEI_PACKAGE and body_text(message.body, "new") == "failing"
