"""Defaults for new users: the operator's templates, given once, on first contact.

FMN 3.x never gave new accounts anything, so a new user heard nothing until they
found the filter editor. Here the operator names templates (``defaults.templates``,
``"template:context"`` pairs) and every new account gets their filters on first
contact: the first TUI start, the first bot command, the first import. They are
ordinary filters, visible and editable like any other. ``users.defaults_applied``
records that an account had its first contact, so nobody gets them twice, and
accounts that existed before (revision 0008 marks them) never get them.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from sqlalchemy.orm import Session

from .access import Actor, target_account
from .db import config_of
from .editing import use_template
from .errors import AlreadyExists, InvalidArgument, NotFound, UnknownContext
from .models import User
from .store import find_user, lock_account, user_for_write

__all__ = ["first_contact", "give_defaults"]

log = logging.getLogger(__name__)


def give_defaults(session: Session, user: User, skip: Collection[str] = ()) -> list[str]:
    """Copy the configured templates into a new account (not into ``skip`` contexts).

    Returns one sentence per template given. A template that cannot be given
    (unknown, a name clash) costs only itself and is logged for the operator.
    """
    given: list[str] = []
    actor = Actor(user.name)
    for pair in config_of(session).defaults.templates:
        name, _, context = (part.strip() for part in pair.partition(":"))
        if context in skip:
            continue
        try:
            views = use_template(session, actor, name, context)
        except (AlreadyExists, NotFound, InvalidArgument, UnknownContext) as exc:
            log.warning(
                "default template %r for %s not given to %s: %s", name, context, user.name, exc
            )
            continue
        names = ", ".join(repr(v.name) for v in views)
        given.append(f"{context} starts with the filters of the template {name!r}: {names}")
    user.defaults_applied = True
    session.flush()
    return given


def first_contact(session: Session, actor: Actor) -> list[str]:
    """On an account's first contact, give it the default templates; what was given.

    Only the actor's own account (an admin working on another account is not that
    account's first contact). Without configured defaults, nothing is created for a
    name fmn never stored.
    """
    target = target_account(actor, None)
    # Two front ends starting at once (the TUI and a bot command) must not both
    # create the user row, nor both copy the templates.
    lock_account(session, target)
    row = find_user(session, target)
    if row is not None and row.defaults_applied:
        return []
    if row is None:
        if not config_of(session).defaults.templates:
            return []
        row = user_for_write(session, target)
    return give_defaults(session, row)
