"""Fedora accounts: group membership (FAS) and badges (fedbadges).

The "my groups" rules read the account directory through ``RuleContext.membership``
(the groups the filter's owner is in), which the daemon refreshes from Fedora
Accounts' bus messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..messages import MessageFacts
from ..rules import IndexHint, RuleContext, rule
from .generic import GROUP
from .hints import (
    FEDORA,
    RANK_GROUP,
    RANK_PACKAGE,
    RANK_TOPIC,
    RANK_USER,
    argument,
    in_topics,
    owner,
    topics,
)
from .reading import body_text

__all__ = [
    "badge_awarded_to_me",
    "fas_group_membership_change",
    "member_of_group_involved",
    "my_group_membership_changed",
    "package_owned_by_my_groups",
]


_BADGE_AWARD = topics(FEDORA, "fedbadges.badge.award")
_GROUP_MEMBERSHIP = topics(
    FEDORA,
    "fas.group.member.apply",
    "fas.group.member.sponsor",
    "fas.group.member.remove",
    "fas.group.member.removed",
)


@rule("Badge awarded to me", hint=IndexHint("topic", in_topics(_BADGE_AWARD), RANK_TOPIC))
def badge_awarded_to_me(message: MessageFacts, context: RuleContext) -> bool:
    """You were awarded a Fedora Badge."""
    if message.topic not in _BADGE_AWARD:
        return False
    # Two body shapes are on the bus: {"user": {"username"}} and a flat "username".
    winner = body_text(message.body, "user", "username") or body_text(message.body, "username")
    return winner == context.owner


@rule("Group membership changed", GROUP, hint=IndexHint("group", argument("group"), RANK_GROUP))
def fas_group_membership_change(message: MessageFacts, context: RuleContext, group: str) -> bool:
    """Someone applied to, was sponsored into or was removed from this Fedora group."""
    return message.topic in _GROUP_MEMBERSHIP and group in message.groups


@rule("My group membership changed", hint=IndexHint("username", owner, RANK_USER, names_owner=True))
def my_group_membership_changed(message: MessageFacts, context: RuleContext) -> bool:
    """You were sponsored into or removed from a Fedora group (or applied to one)."""
    if message.topic not in _GROUP_MEMBERSHIP or context.owner not in message.usernames:
        return False
    member = body_text(message.body, "msg", "user") or body_text(message.body, "user", "username")
    return member == context.owner


def _my_groups(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    return context.membership.groups_of(context.owner)


def _my_groups_packages(arguments: Mapping[str, Any], context: RuleContext) -> frozenset[str]:
    packages: set[str] = set()
    for group in context.membership.groups_of(context.owner):
        packages |= context.ownership.packages_of("@" + group)
    return frozenset(packages)


@rule(
    "Package owned by my groups",
    hint=IndexHint("package", _my_groups_packages, RANK_PACKAGE),
)
def package_owned_by_my_groups(message: MessageFacts, context: RuleContext) -> bool:
    """Messages about a package that a Fedora group you are a member of maintains in
    dist-git; it follows your memberships as Fedora Accounts announces them."""
    if not message.packages:
        return False
    groups = {"@" + g for g in context.membership.groups_of(context.owner)}
    return any(not groups.isdisjoint(context.ownership.owners_of(p)) for p in message.packages)


@rule("Group I am in involved", hint=IndexHint("group", _my_groups, RANK_GROUP))
def member_of_group_involved(message: MessageFacts, context: RuleContext) -> bool:
    """Messages that name a Fedora group you are a member of."""
    if not message.groups:
        return False
    return not context.membership.groups_of(context.owner).isdisjoint(message.groups)
