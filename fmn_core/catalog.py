"""fmn's built-in rules, registered through the ``fmn.rules`` entry point ``builtin``.

Their names and meanings are a public contract: preference files and the IRC bot
refer to them. Each rule reads the message through its facts (the schema
properties, computed once), never through raw bodies unless a schema has no
property for what the rule needs.
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


APP = Parameter("app", "the application's name, e.g. koji, bodhi, pagure")
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
    Parameter("level", "DEBUG, INFO, WARNING or ERROR", kind="choice",
              choices=tuple(SEVERITY_LEVELS)),
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
