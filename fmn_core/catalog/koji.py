"""Koji (buildsys): builds, scratch builds and tags, from Fedora's and CentOS's Koji."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..messages import MessageFacts
from ..rules import IndexHint, Parameter, RuleContext, rule
from .hints import FEDORA, RANK_TOPIC, in_topics, topics
from .reading import body_get, body_integer, body_text

__all__ = [
    "KOJI_BUILD_STATES",
    "koji_build_completed",
    "koji_build_failed",
    "koji_build_state",
    "koji_build_tagged",
    "koji_scratch_build",
]

#: Koji instances publishing the koji-fedoramessaging schema (CentOS's too).
_KOJI = (*FEDORA, "org.centos.prod.", "org.centos.stg.")


_KOJI_BUILD = topics(_KOJI, "buildsys.build.state.change")
_KOJI_TASK = topics(_KOJI, "buildsys.task.state.change")
_KOJI_TAG = topics(_KOJI, "buildsys.tag")

#: koji's build states, as ``buildsys.build.state.change`` carries them in ``new``.
KOJI_BUILD_STATES: dict[str, int] = {
    "BUILDING": 0,
    "COMPLETE": 1,
    "DELETED": 2,
    "FAILED": 3,
    "CANCELED": 4,
}
#: Task states that end a task.
_KOJI_TASK_DONE = frozenset(("CLOSED", "FAILED", "CANCELED"))


def _koji_build_state(message: MessageFacts) -> int | None:
    if message.topic not in _KOJI_BUILD:
        return None
    return body_integer(message.body, "new")


@rule("Koji build completed", hint=IndexHint("topic", in_topics(_KOJI_BUILD), RANK_TOPIC))
def koji_build_completed(message: MessageFacts, context: RuleContext) -> bool:
    """Koji finished a build successfully (the build state became COMPLETE)."""
    return _koji_build_state(message) == KOJI_BUILD_STATES["COMPLETE"]


@rule("Koji build failed", hint=IndexHint("topic", in_topics(_KOJI_BUILD), RANK_TOPIC))
def koji_build_failed(message: MessageFacts, context: RuleContext) -> bool:
    """A koji build failed (the build state became FAILED)."""
    return _koji_build_state(message) == KOJI_BUILD_STATES["FAILED"]


@rule(
    "Koji build state",
    Parameter(
        "state",
        "BUILDING, COMPLETE, DELETED, FAILED or CANCELED",
        kind="choice",
        choices=tuple(KOJI_BUILD_STATES),
    ),
    hint=IndexHint("topic", in_topics(_KOJI_BUILD), RANK_TOPIC),
)
def koji_build_state(message: MessageFacts, context: RuleContext, state: str) -> bool:
    """A koji build entered this state: BUILDING, COMPLETE, DELETED, FAILED or CANCELED."""
    return _koji_build_state(message) == KOJI_BUILD_STATES.get(state)


def _scratch_requested(request: Any) -> bool:
    # A build task's request is [source, target, options]; scratch is an option.
    if not isinstance(request, list):
        return False
    return any(isinstance(part, Mapping) and part.get("scratch") is True for part in request)


@rule("Koji scratch build finished", hint=IndexHint("topic", in_topics(_KOJI_TASK), RANK_TOPIC))
def koji_scratch_build(message: MessageFacts, context: RuleContext) -> bool:
    """A koji scratch build task ended (closed, failed or canceled); add "Concerns me" to
    hear only about your own."""
    if message.topic not in _KOJI_TASK:
        return False
    body = message.body
    method = body_text(body, "method") or body_text(body, "info", "method")
    return (
        method == "build"
        and body_text(body, "new") in _KOJI_TASK_DONE
        and _scratch_requested(body_get(body, "info", "request"))
    )


@rule(
    "Koji build tagged into",
    Parameter("tag", "a koji tag, e.g. f41-updates-candidate"),
    hint=IndexHint("topic", in_topics(_KOJI_TAG), RANK_TOPIC),
)
def koji_build_tagged(message: MessageFacts, context: RuleContext, tag: str) -> bool:
    """A build was tagged into this koji tag (for example f41-updates-candidate)."""
    return message.topic in _KOJI_TAG and body_text(message.body, "tag") == tag
