"""Index hints shared by the catalog's families: ranks, topic sets, hint functions.

A hint tells the matcher which message key a rule can be found by (see
``fmn_core.rules.IndexHint``). Hints must be sound: whenever a rule is true, the
message's ``index_keys`` hold one of the hint's values. So a rule hinted by topic
checks ``message.topic`` against exactly the topics its hint lists, and a rule
hinted by package, username or group checks the facts (``message.packages`` ...),
never a body field, for that key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..rules import HintFunction, RuleContext

__all__ = [
    "FEDORA",
    "RANK_APP",
    "RANK_EVENTS",
    "RANK_GROUP",
    "RANK_PACKAGE",
    "RANK_TOPIC",
    "RANK_USER",
    "argument",
    "in_topics",
    "me",
    "owned_by_me",
    "owner",
    "topics",
]

# Ranks: lower is more selective (fewer messages carry that key value).
RANK_USER = 10
RANK_PACKAGE = 15
RANK_GROUP = 25
RANK_TOPIC = 30
#: A set of topics that names one kind of event; a little broader than a literal topic.
RANK_EVENTS = 35
RANK_APP = 40

#: Fedora's own environments. Staging is included so a staging deployment works.
FEDORA = ("org.fedoraproject.prod.", "org.fedoraproject.stg.")


def argument(name: str, *, lower: bool = False) -> HintFunction:
    """A hint function naming the value of one of the rule's arguments."""

    def values(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...]:
        value = str(arguments[name])
        return (value.lower() if lower else value,)

    return values


def owner(arguments: Mapping[str, Any], context: RuleContext) -> tuple[str, ...]:
    """A hint naming the filter's owner (for rules about "me")."""
    return (context.owner,)


def owned_by_me(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    """A hint naming the packages the filter's owner owns or co-maintains."""
    return context.ownership.packages_of(context.owner)


def me(arguments: Mapping[str, Any], context: RuleContext) -> str:
    """The filter's owner, whose packages ``owned_by_me`` names (``IndexHint.owner``)."""
    return context.owner


def topics(prefixes: tuple[str, ...], *suffixes: str) -> frozenset[str]:
    """Every full topic made of one of these prefixes and one of these suffixes."""
    return frozenset(prefix + suffix for prefix in prefixes for suffix in suffixes)


def in_topics(names: frozenset[str]) -> HintFunction:
    """A hint function naming a fixed set of topics."""

    def values(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
        return names

    return values
