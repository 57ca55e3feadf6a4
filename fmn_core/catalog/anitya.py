"""Anitya (release-monitoring.org): new upstream releases."""

from __future__ import annotations

from ..messages import MessageFacts
from ..rules import IndexHint, Parameter, RuleContext, rule
from .hints import FEDORA, RANK_PACKAGE, RANK_TOPIC, in_topics, me, owned_by_me, topics
from .reading import body_text, owns_any

__all__ = [
    "anitya_new_release",
    "anitya_new_release_for_my_packages",
]

#: release-monitoring.org; before fedora-messaging it published under FEDORA.
_ANITYA = ("org.release-monitoring.prod.", "org.release-monitoring.stg.", *FEDORA)


_ANITYA_RELEASE = topics(
    _ANITYA, "anitya.project.version.update", "anitya.project.version.update.v2"
)


@rule(
    "New upstream release",
    Parameter(
        "project",
        "an upstream project on release-monitoring.org, or the Fedora package it maps to",
        kind="text",
    ),
    hint=IndexHint("topic", in_topics(_ANITYA_RELEASE), RANK_TOPIC),
)
def anitya_new_release(message: MessageFacts, context: RuleContext, project: str) -> bool:
    """release-monitoring.org found a new upstream version of this project (by its name
    there, or by the Fedora package it is mapped to)."""
    if message.topic not in _ANITYA_RELEASE:
        return False
    if project in message.packages:
        return True
    name = body_text(message.body, "project", "name")
    return name is not None and name.lower() == project.lower()


@rule(
    "New upstream release of my packages",
    hint=IndexHint("package", owned_by_me, RANK_PACKAGE, owner=me),
)
def anitya_new_release_for_my_packages(message: MessageFacts, context: RuleContext) -> bool:
    """release-monitoring.org found a new upstream version of a package you maintain."""
    return message.topic in _ANITYA_RELEASE and owns_any(message, context, context.owner)
