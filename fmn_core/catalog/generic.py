"""Generic rules: they read the facts every schema offers, whatever the application.

Application, topic, severity, the users, packages, groups, containers, modules and
Flatpaks a message names, who triggered it, package ownership, and whether a bot
did it. These are the contract rules the built-in templates and most filters use.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from ..messages import SEVERITY_LEVELS, MessageFacts
from ..rules import IndexHint, Parameter, RuleContext, rule
from .hints import (
    RANK_APP,
    RANK_GROUP,
    RANK_PACKAGE,
    RANK_TOPIC,
    RANK_USER,
    argument,
    me,
    owned_by_me,
    owner,
)

__all__ = [
    "APP",
    "BOT_ACCOUNTS",
    "GROUP",
    "PACKAGE",
    "USERNAME",
    "app_is",
    "container_involved",
    "flatpak_involved",
    "group_involved",
    "module_involved",
    "not_from_bot",
    "package_involved",
    "package_owned_by",
    "package_owned_by_group",
    "package_owned_by_me",
    "pertains_to_me",
    "severity_at_least",
    "summary_contains",
    "topic_contains",
    "topic_matches",
    "triggered_by",
    "triggered_by_me",
    "user_involved",
]


def _literal_topic(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...] | None:
    pattern = str(arguments["pattern"])
    return None if any(c in pattern for c in "*?[") else (pattern,)


# Text, not a name: some schemas' app names have spaces ("The New Hotness").
APP = Parameter("app", "the application's name, e.g. koji, bodhi, pagure", kind="text")
USERNAME = Parameter("username", "a Fedora account name")
PACKAGE = Parameter("package", "a package name, e.g. kernel")
GROUP = Parameter("group", "a Fedora group name, e.g. python-sig")


@rule(
    "Application is",
    APP,
    hint=IndexHint("app", argument("app", lower=True), RANK_APP, exact=True),
)
def app_is(message: MessageFacts, context: RuleContext, app: str) -> bool:
    """Messages sent by this application (case-insensitive), such as koji or bodhi."""
    return message.app_name.lower() == app.lower()


@rule(
    "Topic matches",
    Parameter(
        "pattern",
        "a glob on the full topic, e.g. *.buildsys.build.state.change (Koji builds)",
        kind="glob",
    ),
    hint=IndexHint("topic", _literal_topic, RANK_TOPIC, exact=True),
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


@rule("Concerns me", hint=IndexHint("username", owner, RANK_USER, names_owner=True))
def pertains_to_me(message: MessageFacts, context: RuleContext) -> bool:
    """Messages that name you among the users involved."""
    return context.owner in message.usernames


@rule(
    "User involved",
    USERNAME,
    hint=IndexHint("username", argument("username"), RANK_USER, exact=True),
)
def user_involved(message: MessageFacts, context: RuleContext, username: str) -> bool:
    """Messages that name this user among the users involved; to follow someone."""
    return username in message.usernames


@rule("Triggered by me", hint=IndexHint("agent", owner, RANK_USER, names_owner=True))
def triggered_by_me(message: MessageFacts, context: RuleContext) -> bool:
    """Messages about something you did yourself; negate it to hear only about others."""
    return message.agent_name == context.owner


@rule(
    "Triggered by",
    USERNAME,
    hint=IndexHint("agent", argument("username"), RANK_USER, exact=True),
)
def triggered_by(message: MessageFacts, context: RuleContext, username: str) -> bool:
    """Messages about something this user did."""
    return message.agent_name == username


@rule(
    "Package involved",
    PACKAGE,
    hint=IndexHint("package", argument("package"), RANK_PACKAGE, exact=True),
)
def package_involved(message: MessageFacts, context: RuleContext, package: str) -> bool:
    """Messages about this package."""
    return package in message.packages


def _owned_by(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    return context.ownership.packages_of(_user_named(arguments, context))


def _user_named(arguments: Mapping[str, Any], context: RuleContext) -> str:
    return str(arguments["username"])


def _owned_by_group(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    return context.ownership.packages_of(_group_named(arguments, context))


def _group_named(arguments: Mapping[str, Any], context: RuleContext) -> str:
    return "@" + str(arguments["group"])


@rule("Package owned by me", hint=IndexHint("package", owned_by_me, RANK_PACKAGE, owner=me))
def package_owned_by_me(message: MessageFacts, context: RuleContext) -> bool:
    """Messages about a package you own or co-maintain in dist-git."""
    owned = context.ownership.packages_of(context.owner)
    return not owned.isdisjoint(message.packages)


@rule(
    "Package owned by",
    USERNAME,
    hint=IndexHint("package", _owned_by, RANK_PACKAGE, owner=_user_named),
)
def package_owned_by(message: MessageFacts, context: RuleContext, username: str) -> bool:
    """Messages about a package this user owns or co-maintains in dist-git."""
    return not context.ownership.packages_of(username).isdisjoint(message.packages)


@rule(
    "Package owned by group",
    GROUP,
    hint=IndexHint("package", _owned_by_group, RANK_PACKAGE, owner=_group_named),
)
def package_owned_by_group(message: MessageFacts, context: RuleContext, group: str) -> bool:
    """Messages about a package this group maintains in dist-git."""
    return not context.ownership.packages_of("@" + group).isdisjoint(message.packages)


@rule(
    "Group involved",
    GROUP,
    hint=IndexHint("group", argument("group"), RANK_GROUP, exact=True),
)
def group_involved(message: MessageFacts, context: RuleContext, group: str) -> bool:
    """Messages that name this group."""
    return group in message.groups


@rule("Summary contains", Parameter("text", "words to look for", kind="text"))
def summary_contains(message: MessageFacts, context: RuleContext, text: str) -> bool:
    """Messages whose one-line summary contains this text (case-insensitive)."""
    return text.lower() in message.summary.lower()


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
