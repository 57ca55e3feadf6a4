"""Whose preferences the TUI edits, and the units of work it runs against them.

An :class:`Account` binds the database, the acting person and (for an admin) the
account being edited. It only frames transactions and passes ``user=`` along;
every read and every change is a call into ``fmn_core.preferences``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.orm import Session

from fmn_core.db import Database
from fmn_core.preferences import Actor

__all__ = ["Account"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Account:
    """The account a TUI session works on."""

    database: Database
    actor: Actor
    #: Set only when an admin edits somebody else's account (``--user``).
    user: str | None = None

    @property
    def name(self) -> str:
        """The account name whose preferences are shown."""
        return self.user or self.actor.name

    @property
    def is_own(self) -> bool:
        """Whether the person at the keyboard owns the account (and so sees full addresses)."""
        return self.user is None or self.user == self.actor.name

    def call(
        self,
        session: Session,
        function: Callable[Concatenate[Session, Actor, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Call a preference function as this account's actor (adding ``user=`` for admins)."""
        if self.user is not None:
            kwargs["user"] = self.user
        return function(session, self.actor, *args, **kwargs)

    @contextmanager
    def unit(self) -> Iterator[Session]:
        """One unit of work, committed when the block ends without an error."""
        with self.database.sessionmaker.begin() as session:
            yield session

    @contextmanager
    def trial(self) -> Iterator[Session]:
        """A transaction that is always rolled back: for trying changes before saving."""
        with self.database.sessionmaker() as session:
            session.begin()
            try:
                yield session
            finally:
                session.rollback()
