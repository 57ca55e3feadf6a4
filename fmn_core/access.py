"""What every preference call checks before it touches a row: who acts, on which account.

An :class:`Actor` is who the front end authenticated. :func:`target_account` is the
ownership check (only administrators act on another account);
:func:`offered_context` and the small argument checks refuse bad input with the
sentence the user sees, before anything is read or written.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from .accounts import check_account_name
from .db import config_of
from .errors import InvalidArgument, PermissionDenied, UnknownContext

__all__ = ["Actor", "check_bool", "check_whole", "offered_context", "target_account"]


@dataclass(frozen=True)
class Actor:
    """Who is acting: the account the front end authenticated, and whether it is an admin.

    ``irc_account`` is the IRC services account the bot saw the actor identified
    as in this command (mapped to ``name`` through the directory): an IRC
    destination equal to it is proven without a code.
    """

    name: str
    is_admin: bool = False
    irc_account: str | None = None


def target_account(actor: Actor, user: str | None) -> str:
    """The account a call acts on, after the ownership check."""
    own = check_account_name(actor.name)
    if user is None:
        return own
    if not isinstance(user, str) or user.strip() != own:
        if not actor.is_admin:
            raise PermissionDenied(
                "You can only see and change your own preferences; ask an fmn administrator "
                "to act on another account."
            )
        return check_account_name(user)
    return own


def offered_context(session: Session, context: str) -> str:
    """The context, normalized, if this deployment offers it; ``UnknownContext`` otherwise."""
    offered = config_of(session).contexts
    name = context.strip().lower() if isinstance(context, str) else ""
    if name not in offered:
        raise UnknownContext(str(context)[:40], offered)
    return name


def check_bool(value: object, what: str) -> bool:
    """``value`` if it is a bool; ``InvalidArgument`` naming ``what`` otherwise."""
    if not isinstance(value, bool):
        raise InvalidArgument(f"{what} must be true or false.", argument=what)
    return value


def check_whole(value: object, what: str, low: int, high: int) -> int:
    """``value`` if it is an int from ``low`` to ``high``; ``InvalidArgument`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(
            f"{what} must be a whole number from {low} to {high}, not {str(value)[:20]!r}.",
            argument=what,
        )
    return value
