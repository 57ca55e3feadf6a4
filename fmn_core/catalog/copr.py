"""Copr: builds in a project, in your own projects, and failed builds."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from ..messages import MessageFacts
from ..rules import IndexHint, Parameter, RuleContext, rule
from .hints import FEDORA, RANK_EVENTS, RANK_TOPIC, RANK_USER, in_topics, owner, topics
from .reading import body_integer, body_text

__all__ = [
    "copr_build_failed",
    "copr_build_in_my_project",
    "copr_build_in_project",
]


_COPR_BUILD = topics(FEDORA, "copr.build.start", "copr.build.end", "copr.chroot.start")
_COPR_BUILD_END = topics(FEDORA, "copr.build.end")
#: Copr's StatusEnum value for a failed build.
_COPR_FAILED = 0


def _copr_status(body: Any) -> int | None:
    status = body_integer(body, "status")
    return status if status is not None else body_integer(body, "status_int")


@rule(
    "Copr build in project",
    Parameter(
        "project",
        "a Copr project as owner/name, e.g. @python/python3.14; * and ? match any text",
        kind="glob",
    ),
    hint=IndexHint("topic", in_topics(_COPR_BUILD), RANK_EVENTS),
)
def copr_build_in_project(message: MessageFacts, context: RuleContext, project: str) -> bool:
    """Builds starting and ending in this Copr project (owner/name; groups start with @)."""
    if message.topic not in _COPR_BUILD:
        return False
    owner = body_text(message.body, "owner")
    name = body_text(message.body, "copr")
    return owner is not None and name is not None and fnmatchcase(f"{owner}/{name}", project)


@rule("Build in my Copr project", hint=IndexHint("username", owner, RANK_USER, names_owner=True))
def copr_build_in_my_project(message: MessageFacts, context: RuleContext) -> bool:
    """Builds starting and ending in any of your own Copr projects."""
    if message.topic not in _COPR_BUILD or context.owner not in message.usernames:
        return False
    return body_text(message.body, "owner") == context.owner


@rule("Copr build failed", hint=IndexHint("topic", in_topics(_COPR_BUILD_END), RANK_TOPIC))
def copr_build_failed(message: MessageFacts, context: RuleContext) -> bool:
    """A Copr build ended in failure (in one chroot)."""
    return message.topic in _COPR_BUILD_END and _copr_status(message.body) == _COPR_FAILED
