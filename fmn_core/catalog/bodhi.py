"""Bodhi: updates, their status, pushes to testing and stable, comments and karma."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..messages import MessageFacts
from ..rules import IndexHint, Parameter, RuleContext, rule
from .generic import PACKAGE
from .hints import (
    FEDORA,
    RANK_EVENTS,
    RANK_PACKAGE,
    RANK_TOPIC,
    RANK_USER,
    argument,
    in_topics,
    owner,
    topics,
)
from .reading import body_get, body_integer, body_text

__all__ = [
    "BODHI_STATUSES",
    "bodhi_comment_on_my_update",
    "bodhi_negative_karma",
    "bodhi_update_for_package",
    "bodhi_update_pushed",
    "bodhi_update_status",
]


_BODHI_UPDATE = topics(
    FEDORA,
    "bodhi.update.comment",
    "bodhi.update.complete.stable",
    "bodhi.update.complete.testing",
    "bodhi.update.edit",
    "bodhi.update.eject",
    "bodhi.update.karma.threshold.reach",
    "bodhi.update.request.obsolete",
    "bodhi.update.request.revoke",
    "bodhi.update.request.stable",
    "bodhi.update.request.testing",
    "bodhi.update.request.unpush",
    "bodhi.update.requirements_met.stable",
    "bodhi.update.status.testing.koji-build-group.build.complete",
)
_BODHI_COMMENT = topics(FEDORA, "bodhi.update.comment")
BODHI_STATUSES = (
    "pending",
    "testing",
    "stable",
    "unpushed",
    "obsolete",
    "side_tag_active",
    "side_tag_expired",
)


def _bodhi_update(body: Any) -> Any:
    # Comments nest the update inside the comment; every other message has it on top.
    update = body_get(body, "update")
    return update if isinstance(update, Mapping) else body_get(body, "comment", "update")


@rule(
    "Bodhi update for package",
    PACKAGE,
    hint=IndexHint("package", argument("package"), RANK_PACKAGE),
)
def bodhi_update_for_package(message: MessageFacts, context: RuleContext, package: str) -> bool:
    """Anything happening to a Bodhi update that contains a build of this package."""
    return message.topic in _BODHI_UPDATE and package in message.packages


@rule(
    "Bodhi update status",
    Parameter("status", ", ".join(BODHI_STATUSES), kind="choice", choices=BODHI_STATUSES),
    hint=IndexHint("topic", in_topics(_BODHI_UPDATE), RANK_EVENTS),
)
def bodhi_update_status(message: MessageFacts, context: RuleContext, status: str) -> bool:
    """Bodhi messages about an update whose status is this one (testing, stable, ...)."""
    if message.topic not in _BODHI_UPDATE:
        return False
    return body_text(_bodhi_update(message.body), "status") == status


def _bodhi_pushed_topics(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    return topics(FEDORA, f"bodhi.update.complete.{arguments['repository']}")


@rule(
    "Bodhi update pushed",
    Parameter("repository", "testing or stable", kind="choice", choices=("testing", "stable")),
    hint=IndexHint("topic", _bodhi_pushed_topics, RANK_TOPIC),
)
def bodhi_update_pushed(message: MessageFacts, context: RuleContext, repository: str) -> bool:
    """A Bodhi update reached the testing or the stable repository."""
    return message.topic in topics(FEDORA, f"bodhi.update.complete.{repository}")


@rule("Comment on my Bodhi update", hint=IndexHint("username", owner, RANK_USER, names_owner=True))
def bodhi_comment_on_my_update(message: MessageFacts, context: RuleContext) -> bool:
    """Someone else commented on a Bodhi update you submitted."""
    if message.topic not in _BODHI_COMMENT or context.owner not in message.usernames:
        return False
    comment = body_get(message.body, "comment")
    commenter = body_text(comment, "user", "name") or body_text(comment, "author")
    submitter = body_text(_bodhi_update(message.body), "user", "name")
    return submitter == context.owner and commenter is not None and commenter != context.owner


@rule("Negative karma on Bodhi", hint=IndexHint("topic", in_topics(_BODHI_COMMENT), RANK_TOPIC))
def bodhi_negative_karma(message: MessageFacts, context: RuleContext) -> bool:
    """A Bodhi comment that gives an update negative karma (-1)."""
    if message.topic not in _BODHI_COMMENT:
        return False
    karma = body_integer(message.body, "comment", "karma")
    return karma is not None and karma < 0
