"""Reading a message inside a rule without ever raising.

Bodies are untrusted (legacy archives, fixtures, schema changes): every body read
in an application rule goes through these functions, so a missing key or a value
of the wrong type makes the rule false, never raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..messages import MessageFacts
from ..rules import RuleContext

__all__ = ["app_named", "body_get", "body_integer", "body_text", "owns_any"]


def body_get(value: Any, *path: str | int) -> Any:
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


def body_text(value: Any, *path: str | int) -> str | None:
    """The text at this path of a body, or ``None``."""
    found = body_get(value, *path)
    return found if isinstance(found, str) else None


def body_integer(value: Any, *path: str | int) -> int | None:
    """The whole number at this path of a body, or ``None``."""
    found = body_get(value, *path)
    # bool is an int to Python, but never a state or an id in a message.
    return found if isinstance(found, int) and not isinstance(found, bool) else None


def app_named(message: MessageFacts, *names: str) -> bool:
    """Whether the message comes from one of these applications (lower-case names)."""
    return message.app_name.lower() in names


def owns_any(message: MessageFacts, context: RuleContext, owner: str) -> bool:
    """Whether ``owner`` owns or co-maintains any of the message's packages."""
    return not context.ownership.packages_of(owner).isdisjoint(message.packages)
