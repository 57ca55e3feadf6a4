"""Red Hat Bugzilla: bugs filed against a Fedora package."""

from __future__ import annotations

from ..messages import MessageFacts
from ..rules import IndexHint, RuleContext, rule
from .generic import PACKAGE
from .hints import RANK_PACKAGE, argument
from .reading import app_named

__all__ = [
    "bugzilla_bug_on_package",
]


@rule(
    "Bugzilla bug on package",
    PACKAGE,
    hint=IndexHint("package", argument("package"), RANK_PACKAGE),
)
def bugzilla_bug_on_package(message: MessageFacts, context: RuleContext, package: str) -> bool:
    """New bugs and bug changes in Red Hat Bugzilla filed against this Fedora package."""
    return app_named(message, "bugzilla") and package in message.packages
