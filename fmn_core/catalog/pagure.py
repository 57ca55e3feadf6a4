"""Pagure: pull requests and issues on pagure.io and on dist-git (src.fedoraproject.org)."""

from __future__ import annotations

from typing import Any

from ..messages import MessageFacts
from ..rules import IndexHint, Parameter, RuleContext, rule
from .hints import (
    FEDORA,
    RANK_EVENTS,
    RANK_PACKAGE,
    RANK_USER,
    in_topics,
    me,
    owned_by_me,
    owner,
    topics,
)
from .reading import body_get, body_text, owns_any

__all__ = [
    "PROJECT",
    "distgit_pr_on_my_packages",
    "pagure_assigned_to_me",
    "pagure_comment_on_my_pr",
    "pagure_issue_on_project",
    "pagure_pr_on_project",
]

#: pagure.io, besides src.fedoraproject.org (dist-git), which publishes under FEDORA.
_PAGURE = (*FEDORA, "io.pagure.prod.", "io.pagure.stg.")


_PR_EVENTS = (
    "pull-request.new",
    "pull-request.updated",
    "pull-request.rebased",
    "pull-request.closed",
    "pull-request.reopened",
    "pull-request.comment.added",
    "pull-request.comment.edited",
    "pull-request.initial_comment.edited",
    "pull-request.flag.added",
    "pull-request.flag.updated",
    "pull-request.tag.added",
    "pull-request.tag.removed",
    "pull-request.assigned.added",
    "pull-request.assigned.reset",
)
_ISSUE_EVENTS = (
    "issue.new",
    "issue.edit",
    "issue.drop",
    "issue.comment.added",
    "issue.comment.edited",
    "issue.assigned.added",
    "issue.assigned.reset",
    "issue.dependency.added",
    "issue.dependency.removed",
    "issue.tag.added",
    "issue.tag.removed",
)
_PAGURE_PR = topics(_PAGURE, *(f"pagure.{event}" for event in _PR_EVENTS))
_PAGURE_ISSUE = topics(_PAGURE, *(f"pagure.{event}" for event in _ISSUE_EVENTS))
_PAGURE_PR_COMMENT = topics(_PAGURE, "pagure.pull-request.comment.added")
_PAGURE_ASSIGNED = {
    **dict.fromkeys(topics(_PAGURE, "pagure.issue.assigned.added"), "issue"),
    **dict.fromkeys(topics(_PAGURE, "pagure.pull-request.assigned.added"), "pullrequest"),
}
#: dist-git is the pagure instance publishing under Fedora's own prefixes.
_DISTGIT_PR = topics(FEDORA, *(f"pagure.{event}" for event in _PR_EVENTS))


def _project_name(project: Any) -> str | None:
    """A pagure project's full name (``rpms/kernel``); old messages lack ``fullname``."""
    fullname = body_text(project, "fullname")
    if fullname:
        return fullname
    name = body_text(project, "name")
    namespace = body_text(project, "namespace")
    if name and namespace:
        return f"{namespace}/{name}"
    return name


PROJECT = Parameter("project", "a project's full name, e.g. rpms/kernel or fedora-infra/ansible")


@rule(
    "Pagure pull request on project",
    PROJECT,
    hint=IndexHint("topic", in_topics(_PAGURE_PR), RANK_EVENTS),
)
def pagure_pr_on_project(message: MessageFacts, context: RuleContext, project: str) -> bool:
    """Pull-request activity on this pagure.io or dist-git project (rpms/kernel, ...)."""
    if message.topic not in _PAGURE_PR:
        return False
    return _project_name(body_get(message.body, "pullrequest", "project")) == project


@rule(
    "Pagure issue on project",
    PROJECT,
    hint=IndexHint("topic", in_topics(_PAGURE_ISSUE), RANK_EVENTS),
)
def pagure_issue_on_project(message: MessageFacts, context: RuleContext, project: str) -> bool:
    """Issue activity on this pagure.io or dist-git project."""
    if message.topic not in _PAGURE_ISSUE:
        return False
    return _project_name(body_get(message.body, "project")) == project


@rule("Comment on my pull request", hint=IndexHint("username", owner, RANK_USER, names_owner=True))
def pagure_comment_on_my_pr(message: MessageFacts, context: RuleContext) -> bool:
    """Someone else commented on a pull request you opened on pagure.io or dist-git."""
    if message.topic not in _PAGURE_PR_COMMENT or context.owner not in message.usernames:
        return False
    author = body_text(message.body, "pullrequest", "user", "name")
    return author == context.owner and message.agent_name != context.owner


@rule("Assigned to me on Pagure", hint=IndexHint("username", owner, RANK_USER, names_owner=True))
def pagure_assigned_to_me(message: MessageFacts, context: RuleContext) -> bool:
    """An issue or a pull request on pagure.io or dist-git was assigned to you."""
    kind = _PAGURE_ASSIGNED.get(message.topic)
    if kind is None or context.owner not in message.usernames:
        return False
    return body_text(message.body, kind, "assignee", "name") == context.owner


@rule("Pull request on my packages", hint=IndexHint("package", owned_by_me, RANK_PACKAGE, owner=me))
def distgit_pr_on_my_packages(message: MessageFacts, context: RuleContext) -> bool:
    """Pull-request activity in dist-git on a package you own or co-maintain."""
    return message.topic in _DISTGIT_PR and owns_any(message, context, context.owner)
