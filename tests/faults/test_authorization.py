"""Authorization under attack: every preference operation, with every way of spelling
somebody else's account.

``tests/core/test_authorization.py`` runs each operation of the preference
service on bob's data as alice (``user="bob"``) and checks the refusal. This
file reuses its operations, bob's data and its database snapshot, and adds:

- a completeness guard: every public function of ``fmn_core.preferences`` that
  takes an actor is in that table (or is listed below with the reason it isn't),
  so a new operation without an authorization test fails here;
- sneaky spellings of ``user=`` — case, blanks, zero-width and bidi characters,
  homoglyphs, NUL, other types — each refused for a non-admin, with nothing
  written and nothing of bob's returned.

Every bot command is checked in ``test_bot.py``.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from core.test_authorization import ALICE, OPERATIONS, bob, snapshot  # noqa: F401 - bob: fixture

from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.errors import UserError

#: Functions of the service that take an actor but no ``user=``, and why.
NO_USER_ARGUMENT = {
    "confirm": "acts on the actor's own codes only (tests/core: another user's code is refused)",
    "first_contact": "the actor's own first contact only (tests/core/test_defaults.py)",
}
#: Service functions that take no actor at all (public data, or the daemon's and bot's side).
NO_ACTOR = {"list_templates", "pending_confirmation_codes", "mark_code_sent"}

SNEAKY_USERS: list[Any] = [
    "bob ",
    " bob",
    "\tbob\n",
    "BOB",
    "Bob",
    "b\u200bob",
    "bob\u200b",
    "\u202ebob",
    "b\u043eb",
    "\uff42\uff4f\uff42",
    "bob\x00",
    "bob\x00alice",
    "bob/../alice",
    "bob%00",
    "bob;alice",
    "*",
    "%",
    "_ob",
    "b_b",
    "",
    "alice,bob",
    ["bob"],
    ("bob",),
    {"bob"},
    b"bob",
    0,
    None.__class__,
]


def test_authorization_table_covers_every_operation(figures: Any) -> None:
    actor_functions = {
        name
        for name in preferences.__all__
        if inspect.isfunction(getattr(preferences, name))
        and "actor" in inspect.signature(getattr(preferences, name)).parameters
    }
    without_actor = {
        name for name in preferences.__all__ if inspect.isfunction(getattr(preferences, name))
    } - actor_functions
    missing = actor_functions - set(OPERATIONS) - set(NO_USER_ARGUMENT)
    assert not missing, f"no authorization test for {sorted(missing)}"
    assert without_actor == NO_ACTOR, without_actor ^ NO_ACTOR
    for name in OPERATIONS:
        assert "user" in inspect.signature(getattr(preferences, name)).parameters, name
    figures(
        operations_with_user=len(OPERATIONS), actor_only=len(NO_USER_ARGUMENT), public=len(NO_ACTOR)
    )


def test_authorization_sneaky_user_names_are_refused(
    db: Database,
    bob: dict[str, Any],  # noqa: F811 - bob is the fixture
    figures: Any,
) -> None:
    before = snapshot(db)
    refusals: dict[str, int] = {}
    for operation in sorted(OPERATIONS):
        for user in SNEAKY_USERS:
            with pytest.raises(UserError) as caught, db.begin() as session:
                OPERATIONS[operation](session, ALICE, user, bob)
            kind = type(caught.value).__name__
            refusals[kind] = refusals.get(kind, 0) + 1
            assert snapshot(db) == before, (operation, user)
    figures(
        backend=db.engine.dialect.name,
        operations=len(OPERATIONS),
        spellings=len(SNEAKY_USERS),
        refused=sum(refusals.values()),
        refusals=refusals,
    )
