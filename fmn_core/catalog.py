"""fmn's built-in rules, registered through the ``fmn.rules`` entry point ``builtin``.

Their names and meanings are a public contract: preference files and the IRC bot
refer to them. Each rule reads the message through its facts (the schema
properties, computed once), never through raw bodies unless a schema has no
property for what the rule needs.

The first rules are generic (application, topic, user, package, group). The
application rules after them know one service's messages each: Koji, Bodhi,
Pagure and dist-git, Copr, Anitya, meetings (meetbot, fedocal), accounts and
badges, Discourse, Bugzilla, Koschei. Every rule must stay false, never raise,
on a body of any shape, and every index hint must be sound; ``tests/core/
test_catalog.py`` checks both over the shared corpus of real bus messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from .messages import SEVERITY_LEVELS, MessageFacts
from .rules import IndexHint, Parameter, RuleContext, rule

# Ranks: lower is more selective (fewer messages carry that key value).
_RANK_USER = 10
_RANK_PACKAGE = 15
_RANK_GROUP = 25
_RANK_TOPIC = 30
_RANK_APP = 40


def _arg(name: str, *, lower: bool = False) -> Any:
    def values(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...]:
        value = str(arguments[name])
        return (value.lower() if lower else value,)

    return values


def _owner(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...]:
    return (context.owner,)


def _literal_topic(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...] | None:
    pattern = str(arguments["pattern"])
    return None if any(c in pattern for c in "*?[") else (pattern,)


# Text, not a name: some schemas' app names have spaces ("The New Hotness").
APP = Parameter("app", "the application's name, e.g. koji, bodhi, pagure", kind="text")
USERNAME = Parameter("username", "a Fedora account name")
PACKAGE = Parameter("package", "a package name, e.g. kernel")
GROUP = Parameter("group", "a Fedora group name, e.g. python-sig")


@rule("Application is", APP, hint=IndexHint("app", _arg("app", lower=True), _RANK_APP))
def app_is(message: MessageFacts, context: RuleContext, app: str) -> bool:
    """Messages sent by this application (case-insensitive), such as koji or bodhi."""
    return message.app_name.lower() == app.lower()


@rule(
    "Topic matches",
    Parameter("pattern", "a glob on the full topic, e.g. *.koji.build.state.change", kind="glob"),
    hint=IndexHint("topic", _literal_topic, _RANK_TOPIC),
)
def topic_matches(message: MessageFacts, context: RuleContext, pattern: str) -> bool:
    """Messages whose full topic matches the glob (``*`` any text, ``?`` one character)."""
    return fnmatchcase(message.topic, pattern)


@rule(
    "Severity at least",
    Parameter(
        "level", "DEBUG, INFO, WARNING or ERROR", kind="choice", choices=tuple(SEVERITY_LEVELS)
    ),
)
def severity_at_least(message: MessageFacts, context: RuleContext, level: str) -> bool:
    """Messages at least this severe: DEBUG, INFO, WARNING or ERROR."""
    return message.severity >= SEVERITY_LEVELS[level]


@rule("Concerns me", hint=IndexHint("username", _owner, _RANK_USER))
def pertains_to_me(message: MessageFacts, context: RuleContext) -> bool:
    """Messages that name you among the users involved."""
    return context.owner in message.usernames


@rule("User involved", USERNAME, hint=IndexHint("username", _arg("username"), _RANK_USER))
def user_involved(message: MessageFacts, context: RuleContext, username: str) -> bool:
    """Messages that name this user among the users involved; to follow someone."""
    return username in message.usernames


@rule("Triggered by me", hint=IndexHint("agent", _owner, _RANK_USER))
def triggered_by_me(message: MessageFacts, context: RuleContext) -> bool:
    """Messages about something you did yourself; negate it to hear only about others."""
    return message.agent_name == context.owner


@rule("Triggered by", USERNAME, hint=IndexHint("agent", _arg("username"), _RANK_USER))
def triggered_by(message: MessageFacts, context: RuleContext, username: str) -> bool:
    """Messages about something this user did."""
    return message.agent_name == username


@rule("Package involved", PACKAGE, hint=IndexHint("package", _arg("package"), _RANK_PACKAGE))
def package_involved(message: MessageFacts, context: RuleContext, package: str) -> bool:
    """Messages about this package."""
    return package in message.packages


def _owned_by_me(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    return context.ownership.packages_of(context.owner)


def _owned_by(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    return context.ownership.packages_of(str(arguments["username"]))


def _owned_by_group(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    return context.ownership.packages_of("@" + str(arguments["group"]))


@rule("Package owned by me", hint=IndexHint("package", _owned_by_me, _RANK_PACKAGE))
def package_owned_by_me(message: MessageFacts, context: RuleContext) -> bool:
    """Messages about a package you own or co-maintain in dist-git."""
    owned = context.ownership.packages_of(context.owner)
    return not owned.isdisjoint(message.packages)


@rule("Package owned by", USERNAME, hint=IndexHint("package", _owned_by, _RANK_PACKAGE))
def package_owned_by(message: MessageFacts, context: RuleContext, username: str) -> bool:
    """Messages about a package this user owns or co-maintains in dist-git."""
    return not context.ownership.packages_of(username).isdisjoint(message.packages)


@rule("Package owned by group", GROUP, hint=IndexHint("package", _owned_by_group, _RANK_PACKAGE))
def package_owned_by_group(message: MessageFacts, context: RuleContext, group: str) -> bool:
    """Messages about a package this group maintains in dist-git."""
    return not context.ownership.packages_of("@" + group).isdisjoint(message.packages)


@rule("Group involved", GROUP, hint=IndexHint("group", _arg("group"), _RANK_GROUP))
def group_involved(message: MessageFacts, context: RuleContext, group: str) -> bool:
    """Messages that name this group."""
    return group in message.groups


@rule("Summary contains", Parameter("text", "words to look for", kind="text"))
def summary_contains(message: MessageFacts, context: RuleContext, text: str) -> bool:
    """Messages whose one-line summary contains this text (case-insensitive)."""
    return text.lower() in message.summary.lower()


# ---------------------------------------------------------------------------
# Application rules.
#
# The rules below know one application's messages. Each one first checks that
# the message is of a topic it knows, then reads what the schema properties do
# not offer from the body. Bodies are untrusted (legacy archives, fixtures,
# schema changes): every body read goes through ``_get`` and friends, so a
# missing key or a value of the wrong type makes the rule false, never raise.
#
# Index hints must be sound: whenever a rule is true, the message's
# ``index_keys`` hold one of the hint's values. So a rule hinted by topic
# checks ``message.topic`` against exactly the topics its hint lists, and a rule
# hinted by package, username or group checks the facts (``message.packages``
# ...), never a body field, for that key.
# ---------------------------------------------------------------------------

#: A set of topics that names one kind of event; a little broader than a literal topic.
_RANK_EVENTS = 35

#: Fedora's own environments. Staging is included so a staging deployment works.
_FEDORA = ("org.fedoraproject.prod.", "org.fedoraproject.stg.")
#: Koji instances publishing the koji-fedoramessaging schema (CentOS's too).
_KOJI = (*_FEDORA, "org.centos.prod.", "org.centos.stg.")
#: pagure.io, besides src.fedoraproject.org (dist-git), which publishes under _FEDORA.
_PAGURE = (*_FEDORA, "io.pagure.prod.", "io.pagure.stg.")
#: release-monitoring.org; before fedora-messaging it published under _FEDORA.
_ANITYA = ("org.release-monitoring.prod.", "org.release-monitoring.stg.", *_FEDORA)


def _topics(prefixes: tuple[str, ...], *suffixes: str) -> frozenset[str]:
    """Every full topic made of one of these prefixes and one of these suffixes."""
    return frozenset(prefix + suffix for prefix in prefixes for suffix in suffixes)


def _in_topics(topics: frozenset[str]) -> Any:
    """A hint function naming a fixed set of topics."""

    def values(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
        return topics

    return values


def _get(value: Any, *path: str | int) -> Any:
    """Walk a body along keys and list indexes; ``None`` as soon as anything doesn't fit."""
    for step in path:
        if isinstance(step, str):
            if not isinstance(value, Mapping):
                return None
            value = value.get(step)
        else:
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return None
            value = value[step]
    return value


def _text(value: Any, *path: str | int) -> str | None:
    found = _get(value, *path)
    return found if isinstance(found, str) else None


def _integer(value: Any, *path: str | int) -> int | None:
    found = _get(value, *path)
    # bool is an int to Python, but never a state or an id in a message.
    return found if isinstance(found, int) and not isinstance(found, bool) else None


def _app(message: MessageFacts, *names: str) -> bool:
    return message.app_name.lower() in names


def _owns_any(message: MessageFacts, context: RuleContext, owner: str) -> bool:
    return not context.ownership.packages_of(owner).isdisjoint(message.packages)


# --- Koji -------------------------------------------------------------------

_KOJI_BUILD = _topics(_KOJI, "buildsys.build.state.change")
_KOJI_TASK = _topics(_KOJI, "buildsys.task.state.change")
_KOJI_TAG = _topics(_KOJI, "buildsys.tag")

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
    return _integer(message.body, "new")


@rule("Koji build completed", hint=IndexHint("topic", _in_topics(_KOJI_BUILD), _RANK_TOPIC))
def koji_build_completed(message: MessageFacts, context: RuleContext) -> bool:
    """Koji finished a build successfully (the build state became COMPLETE)."""
    return _koji_build_state(message) == KOJI_BUILD_STATES["COMPLETE"]


@rule("Koji build failed", hint=IndexHint("topic", _in_topics(_KOJI_BUILD), _RANK_TOPIC))
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
    hint=IndexHint("topic", _in_topics(_KOJI_BUILD), _RANK_TOPIC),
)
def koji_build_state(message: MessageFacts, context: RuleContext, state: str) -> bool:
    """A koji build entered this state: BUILDING, COMPLETE, DELETED, FAILED or CANCELED."""
    return _koji_build_state(message) == KOJI_BUILD_STATES.get(state)


def _scratch_requested(request: Any) -> bool:
    # A build task's request is [source, target, options]; scratch is an option.
    if not isinstance(request, list):
        return False
    return any(isinstance(part, Mapping) and part.get("scratch") is True for part in request)


@rule("Koji scratch build finished", hint=IndexHint("topic", _in_topics(_KOJI_TASK), _RANK_TOPIC))
def koji_scratch_build(message: MessageFacts, context: RuleContext) -> bool:
    """A koji scratch build task ended (closed, failed or canceled); add "Concerns me" to
    hear only about your own."""
    if message.topic not in _KOJI_TASK:
        return False
    body = message.body
    method = _text(body, "method") or _text(body, "info", "method")
    return (
        method == "build"
        and _text(body, "new") in _KOJI_TASK_DONE
        and _scratch_requested(_get(body, "info", "request"))
    )


@rule(
    "Koji build tagged into",
    Parameter("tag", "a koji tag, e.g. f41-updates-candidate"),
    hint=IndexHint("topic", _in_topics(_KOJI_TAG), _RANK_TOPIC),
)
def koji_build_tagged(message: MessageFacts, context: RuleContext, tag: str) -> bool:
    """A build was tagged into this koji tag (for example f41-updates-candidate)."""
    return message.topic in _KOJI_TAG and _text(message.body, "tag") == tag


# --- Bodhi ------------------------------------------------------------------

_BODHI_UPDATE = _topics(
    _FEDORA,
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
_BODHI_COMMENT = _topics(_FEDORA, "bodhi.update.comment")
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
    update = _get(body, "update")
    return update if isinstance(update, Mapping) else _get(body, "comment", "update")


@rule(
    "Bodhi update for package",
    PACKAGE,
    hint=IndexHint("package", _arg("package"), _RANK_PACKAGE),
)
def bodhi_update_for_package(message: MessageFacts, context: RuleContext, package: str) -> bool:
    """Anything happening to a Bodhi update that contains a build of this package."""
    return message.topic in _BODHI_UPDATE and package in message.packages


@rule(
    "Bodhi update status",
    Parameter("status", ", ".join(BODHI_STATUSES), kind="choice", choices=BODHI_STATUSES),
    hint=IndexHint("topic", _in_topics(_BODHI_UPDATE), _RANK_EVENTS),
)
def bodhi_update_status(message: MessageFacts, context: RuleContext, status: str) -> bool:
    """Bodhi messages about an update whose status is this one (testing, stable, ...)."""
    if message.topic not in _BODHI_UPDATE:
        return False
    return _text(_bodhi_update(message.body), "status") == status


def _bodhi_pushed_topics(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    return _topics(_FEDORA, f"bodhi.update.complete.{arguments['repository']}")


@rule(
    "Bodhi update pushed",
    Parameter("repository", "testing or stable", kind="choice", choices=("testing", "stable")),
    hint=IndexHint("topic", _bodhi_pushed_topics, _RANK_TOPIC),
)
def bodhi_update_pushed(message: MessageFacts, context: RuleContext, repository: str) -> bool:
    """A Bodhi update reached the testing or the stable repository."""
    return message.topic in _topics(_FEDORA, f"bodhi.update.complete.{repository}")


@rule("Comment on my Bodhi update", hint=IndexHint("username", _owner, _RANK_USER))
def bodhi_comment_on_my_update(message: MessageFacts, context: RuleContext) -> bool:
    """Someone else commented on a Bodhi update you submitted."""
    if message.topic not in _BODHI_COMMENT or context.owner not in message.usernames:
        return False
    comment = _get(message.body, "comment")
    commenter = _text(comment, "user", "name") or _text(comment, "author")
    submitter = _text(_bodhi_update(message.body), "user", "name")
    return submitter == context.owner and commenter is not None and commenter != context.owner


@rule("Negative karma on Bodhi", hint=IndexHint("topic", _in_topics(_BODHI_COMMENT), _RANK_TOPIC))
def bodhi_negative_karma(message: MessageFacts, context: RuleContext) -> bool:
    """A Bodhi comment that gives an update negative karma (-1)."""
    if message.topic not in _BODHI_COMMENT:
        return False
    karma = _integer(message.body, "comment", "karma")
    return karma is not None and karma < 0


# --- Pagure (pagure.io and dist-git) -----------------------------------------

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
_PAGURE_PR = _topics(_PAGURE, *(f"pagure.{event}" for event in _PR_EVENTS))
_PAGURE_ISSUE = _topics(_PAGURE, *(f"pagure.{event}" for event in _ISSUE_EVENTS))
_PAGURE_PR_COMMENT = _topics(_PAGURE, "pagure.pull-request.comment.added")
_PAGURE_ASSIGNED = {
    **dict.fromkeys(_topics(_PAGURE, "pagure.issue.assigned.added"), "issue"),
    **dict.fromkeys(_topics(_PAGURE, "pagure.pull-request.assigned.added"), "pullrequest"),
}
#: dist-git is the pagure instance publishing under Fedora's own prefixes.
_DISTGIT_PR = _topics(_FEDORA, *(f"pagure.{event}" for event in _PR_EVENTS))


def _project_name(project: Any) -> str | None:
    """A pagure project's full name (``rpms/kernel``); old messages lack ``fullname``."""
    fullname = _text(project, "fullname")
    if fullname:
        return fullname
    name = _text(project, "name")
    namespace = _text(project, "namespace")
    if name and namespace:
        return f"{namespace}/{name}"
    return name


PROJECT = Parameter("project", "a project's full name, e.g. rpms/kernel or fedora-infra/ansible")


@rule(
    "Pagure pull request on project",
    PROJECT,
    hint=IndexHint("topic", _in_topics(_PAGURE_PR), _RANK_EVENTS),
)
def pagure_pr_on_project(message: MessageFacts, context: RuleContext, project: str) -> bool:
    """Pull-request activity on this pagure.io or dist-git project (rpms/kernel, ...)."""
    if message.topic not in _PAGURE_PR:
        return False
    return _project_name(_get(message.body, "pullrequest", "project")) == project


@rule(
    "Pagure issue on project",
    PROJECT,
    hint=IndexHint("topic", _in_topics(_PAGURE_ISSUE), _RANK_EVENTS),
)
def pagure_issue_on_project(message: MessageFacts, context: RuleContext, project: str) -> bool:
    """Issue activity on this pagure.io or dist-git project."""
    if message.topic not in _PAGURE_ISSUE:
        return False
    return _project_name(_get(message.body, "project")) == project


@rule("Comment on my pull request", hint=IndexHint("username", _owner, _RANK_USER))
def pagure_comment_on_my_pr(message: MessageFacts, context: RuleContext) -> bool:
    """Someone else commented on a pull request you opened on pagure.io or dist-git."""
    if message.topic not in _PAGURE_PR_COMMENT or context.owner not in message.usernames:
        return False
    author = _text(message.body, "pullrequest", "user", "name")
    return author == context.owner and message.agent_name != context.owner


@rule("Assigned to me on Pagure", hint=IndexHint("username", _owner, _RANK_USER))
def pagure_assigned_to_me(message: MessageFacts, context: RuleContext) -> bool:
    """An issue or a pull request on pagure.io or dist-git was assigned to you."""
    kind = _PAGURE_ASSIGNED.get(message.topic)
    if kind is None or context.owner not in message.usernames:
        return False
    return _text(message.body, kind, "assignee", "name") == context.owner


@rule("Pull request on my packages", hint=IndexHint("package", _owned_by_me, _RANK_PACKAGE))
def distgit_pr_on_my_packages(message: MessageFacts, context: RuleContext) -> bool:
    """Pull-request activity in dist-git on a package you own or co-maintain."""
    return message.topic in _DISTGIT_PR and _owns_any(message, context, context.owner)


# --- Copr -------------------------------------------------------------------

_COPR_BUILD = _topics(_FEDORA, "copr.build.start", "copr.build.end", "copr.chroot.start")
_COPR_BUILD_END = _topics(_FEDORA, "copr.build.end")
#: Copr's StatusEnum value for a failed build.
_COPR_FAILED = 0


def _copr_status(body: Any) -> int | None:
    status = _integer(body, "status")
    return status if status is not None else _integer(body, "status_int")


@rule(
    "Copr build in project",
    Parameter(
        "project",
        "a Copr project as owner/name, e.g. @python/python3.14; * and ? match any text",
        kind="glob",
    ),
    hint=IndexHint("topic", _in_topics(_COPR_BUILD), _RANK_EVENTS),
)
def copr_build_in_project(message: MessageFacts, context: RuleContext, project: str) -> bool:
    """Builds starting and ending in this Copr project (owner/name; groups start with @)."""
    if message.topic not in _COPR_BUILD:
        return False
    owner = _text(message.body, "owner")
    name = _text(message.body, "copr")
    return owner is not None and name is not None and fnmatchcase(f"{owner}/{name}", project)


@rule("Build in my Copr project", hint=IndexHint("username", _owner, _RANK_USER))
def copr_build_in_my_project(message: MessageFacts, context: RuleContext) -> bool:
    """Builds starting and ending in any of your own Copr projects."""
    if message.topic not in _COPR_BUILD or context.owner not in message.usernames:
        return False
    return _text(message.body, "owner") == context.owner


@rule("Copr build failed", hint=IndexHint("topic", _in_topics(_COPR_BUILD_END), _RANK_TOPIC))
def copr_build_failed(message: MessageFacts, context: RuleContext) -> bool:
    """A Copr build ended in failure (in one chroot)."""
    return message.topic in _COPR_BUILD_END and _copr_status(message.body) == _COPR_FAILED


# --- Anitya (release-monitoring.org) ------------------------------------------

_ANITYA_RELEASE = _topics(
    _ANITYA, "anitya.project.version.update", "anitya.project.version.update.v2"
)


@rule(
    "New upstream release",
    Parameter(
        "project",
        "an upstream project on release-monitoring.org, or the Fedora package it maps to",
        kind="text",
    ),
    hint=IndexHint("topic", _in_topics(_ANITYA_RELEASE), _RANK_TOPIC),
)
def anitya_new_release(message: MessageFacts, context: RuleContext, project: str) -> bool:
    """release-monitoring.org found a new upstream version of this project (by its name
    there, or by the Fedora package it is mapped to)."""
    if message.topic not in _ANITYA_RELEASE:
        return False
    if project in message.packages:
        return True
    name = _text(message.body, "project", "name")
    return name is not None and name.lower() == project.lower()


@rule("New upstream release of my packages", hint=IndexHint("package", _owned_by_me, _RANK_PACKAGE))
def anitya_new_release_for_my_packages(message: MessageFacts, context: RuleContext) -> bool:
    """release-monitoring.org found a new upstream version of a package you maintain."""
    return message.topic in _ANITYA_RELEASE and _owns_any(message, context, context.owner)


# --- Containers, modules, flatpaks ----------------------------------------------


@rule(
    "Container involved",
    Parameter("container", "a container name in dist-git, e.g. fedora-toolbox"),
)
def container_involved(message: MessageFacts, context: RuleContext, container: str) -> bool:
    """Messages about this container (dist-git container/ repositories, Bodhi, ...)."""
    return container in message.containers


@rule("Module involved", Parameter("module", "a module name, e.g. nodejs"))
def module_involved(message: MessageFacts, context: RuleContext, module: str) -> bool:
    """Messages about this module."""
    return module in message.modules


@rule("Flatpak involved", Parameter("flatpak", "a Flatpak name in dist-git, e.g. firefox"))
def flatpak_involved(message: MessageFacts, context: RuleContext, flatpak: str) -> bool:
    """Messages about this Flatpak."""
    return flatpak in message.flatpaks


# --- Meetings ---------------------------------------------------------------

_MEETBOT = _topics(_FEDORA, "meetbot.meeting.start", "meetbot.meeting.complete")
_FEDOCAL_MEETING = _topics(
    _FEDORA,
    "fedocal.meeting.new",
    "fedocal.meeting.update",
    "fedocal.meeting.delete",
    "fedocal.meeting.reminder",
)


def _channel(value: str) -> str:
    return value.strip().lstrip("#").lower()


@rule(
    "Meeting in channel",
    Parameter(
        "channel",
        "an IRC channel or Matrix room, e.g. #fedora-meeting; * and ? match any text",
        kind="glob",
    ),
    hint=IndexHint("topic", _in_topics(_MEETBOT), _RANK_TOPIC),
)
def meetbot_meeting_on_channel(message: MessageFacts, context: RuleContext, channel: str) -> bool:
    """A meeting started or ended in this channel (the leading # is optional)."""
    if message.topic not in _MEETBOT:
        return False
    # meetbot-messages calls it "location"; the fedmsg-era bot sent "channel".
    where = _text(message.body, "location") or _text(message.body, "channel")
    return where is not None and fnmatchcase(_channel(where), _channel(channel))


@rule(
    "Fedocal meeting",
    Parameter("calendar", "a Fedora calendar's name, e.g. infrastructure", kind="text"),
    hint=IndexHint("topic", _in_topics(_FEDOCAL_MEETING), _RANK_TOPIC),
)
def fedocal_meeting(message: MessageFacts, context: RuleContext, calendar: str) -> bool:
    """Meetings of this Fedora calendar created, changed, deleted or about to start."""
    if message.topic not in _FEDOCAL_MEETING:
        return False
    wanted = calendar.strip().casefold()
    names = (
        _text(message.body, "calendar", "calendar_name"),
        _text(message.body, "meeting", "calendar_name"),
    )
    return any(name is not None and name.strip().casefold() == wanted for name in names)


# --- Accounts, groups and badges -----------------------------------------------

_BADGE_AWARD = _topics(_FEDORA, "fedbadges.badge.award")
_GROUP_MEMBERSHIP = _topics(
    _FEDORA,
    "fas.group.member.apply",
    "fas.group.member.sponsor",
    "fas.group.member.remove",
    "fas.group.member.removed",
)


@rule("Badge awarded to me", hint=IndexHint("topic", _in_topics(_BADGE_AWARD), _RANK_TOPIC))
def badge_awarded_to_me(message: MessageFacts, context: RuleContext) -> bool:
    """You were awarded a Fedora Badge."""
    if message.topic not in _BADGE_AWARD:
        return False
    # Two body shapes are on the bus: {"user": {"username"}} and a flat "username".
    winner = _text(message.body, "user", "username") or _text(message.body, "username")
    return winner == context.owner


@rule("Group membership changed", GROUP, hint=IndexHint("group", _arg("group"), _RANK_GROUP))
def fas_group_membership_change(message: MessageFacts, context: RuleContext, group: str) -> bool:
    """Someone applied to, was sponsored into or was removed from this Fedora group."""
    return message.topic in _GROUP_MEMBERSHIP and group in message.groups


@rule("My group membership changed", hint=IndexHint("username", _owner, _RANK_USER))
def my_group_membership_changed(message: MessageFacts, context: RuleContext) -> bool:
    """You were sponsored into or removed from a Fedora group (or applied to one)."""
    if message.topic not in _GROUP_MEMBERSHIP or context.owner not in message.usernames:
        return False
    member = _text(message.body, "msg", "user") or _text(message.body, "user", "username")
    return member == context.owner


# --- Discourse, Bugzilla, Koschei -------------------------------------------------


@rule(
    "Discourse category",
    Parameter(
        "category",
        "a discussion.fedoraproject.org category: its slug as in the "
        "address (e.g. project), or its number",
    ),
    hint=IndexHint("app", lambda arguments, context: ("discourse",), _RANK_APP),
)
def discourse_category(message: MessageFacts, context: RuleContext, category: str) -> bool:
    """New and changed topics and posts in this Discourse category."""
    if not _app(message, "discourse"):
        return False
    event = _get(message.body, "webhook_body")
    post = _get(event, "post")
    if _text(post, "category_slug") == category:
        return True
    if not category.isdigit():
        return False
    number = _integer(post, "category_id")
    if number is None:
        number = _integer(event, "topic", "category_id")
    return number == int(category)


@rule(
    "Bugzilla bug on package",
    PACKAGE,
    hint=IndexHint("package", _arg("package"), _RANK_PACKAGE),
)
def bugzilla_bug_on_package(message: MessageFacts, context: RuleContext, package: str) -> bool:
    """New bugs and bug changes in Red Hat Bugzilla filed against this Fedora package."""
    return _app(message, "bugzilla") and package in message.packages


_KOSCHEI_PACKAGE = _topics(_FEDORA, "koschei.package.state.change")


@rule("Koschei package failing", hint=IndexHint("topic", _in_topics(_KOSCHEI_PACKAGE), _RANK_TOPIC))
def koschei_package_failing(message: MessageFacts, context: RuleContext) -> bool:
    """Koschei's scratch rebuilds of a package started failing (its dependencies changed
    and it no longer builds); add "Package owned by me" to watch your own."""
    return message.topic in _KOSCHEI_PACKAGE and _text(message.body, "new") == "failing"


# --- Generic ----------------------------------------------------------------

#: Accounts of Fedora's automation; people rarely want a notification of what they do.
BOT_ACCOUNTS = frozenset(
    (
        "anitya",
        "bodhi",
        "fedora-ci",
        "koschei",
        "mbs",
        "osbs",
        "packit",
        "packit-stg",
        "pagure",
        "releng-bot",
        "the-new-hotness",
        "zodbot",
        "zuul",
    )
)


@rule("Not from a bot")
def not_from_bot(message: MessageFacts, context: RuleContext) -> bool:
    """Messages not triggered by Fedora's automation (packit, bodhi, zuul, koschei, ...).
    Messages that name nobody as their agent count as not from a bot."""
    agent = message.agent_name
    if agent is None:
        return True
    return agent not in BOT_ACCOUNTS and not agent.endswith(("-bot", "[bot]"))


@rule(
    "Topic contains", Parameter("text", "a piece of the topic, e.g. .update.comment", kind="text")
)
def topic_contains(message: MessageFacts, context: RuleContext, text: str) -> bool:
    """Messages whose topic contains this text (case-sensitive, like topics)."""
    return text in message.topic


# =============================================================================
# Group membership rules (identity). One block, to be moved into the catalog
# package as it is: the rules read the account directory through
# ``RuleContext.membership`` (the groups the filter's owner is in), which the
# daemon refreshes from Fedora Accounts' bus messages.
# =============================================================================


def _my_groups(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    return context.membership.groups_of(context.owner)


def _my_groups_packages(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    packages: set[str] = set()
    for group in context.membership.groups_of(context.owner):
        packages |= context.ownership.packages_of("@" + group)
    return frozenset(packages)


@rule(
    "Package owned by my groups",
    hint=IndexHint("package", _my_groups_packages, _RANK_PACKAGE),
)
def package_owned_by_my_groups(message: MessageFacts, context: RuleContext) -> bool:
    """Messages about a package that a Fedora group you are a member of maintains in
    dist-git; it follows your memberships as Fedora Accounts announces them."""
    if not message.packages:
        return False
    groups = {"@" + g for g in context.membership.groups_of(context.owner)}
    return any(not groups.isdisjoint(context.ownership.owners_of(p)) for p in message.packages)


@rule("Group I am in involved", hint=IndexHint("group", _my_groups, _RANK_GROUP))
def member_of_group_involved(message: MessageFacts, context: RuleContext) -> bool:
    """Messages that name a Fedora group you are a member of."""
    if not message.groups:
        return False
    return not context.membership.groups_of(context.owner).isdisjoint(message.groups)
