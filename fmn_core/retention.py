"""Retention: how long fmn keeps the bus messages it stored and the notifications it is done with.

fmn stores every bus message it receives (the id turns a redelivery into a no-op;
``explain``, filter previews and the feeds read them) and keeps every notification
with its outcome. Left alone, both grow with the bus for ever: at a few dozen
messages a second, millions of rows a day. :class:`Pruning` deletes what is
older than ``retention.days``, in this order:

1. notifications fmn is done with — ``sent``, or ``dead`` (given up) — sent, or
   last due, before the cutoff;
2. bus messages received before the cutoff that no notification refers to any
   more. A message that a notification still waiting for delivery needs (held for
   a digest or a mute, failing and retried) stays as long as that notification;
3. dead messages (deliveries put aside after failing again and again) received
   before the cutoff.

   On SQLite, which gives a new row the highest id left plus one, the newest
   notification and the newest dead message are never pruned: the live feed's
   catch-up reads the notification ids past the last one a client saw, and the
   operator re-queues a dead message by its id;
4. preference changes (``change_events``) recorded before the cutoff, except the
   newest ``GAP_WINDOW`` ids: every matcher has long applied them (it reads those
   past its last one at every batch), but a matcher starting up takes ids missing
   that close below the newest for transactions still in flight and asks for them
   at every batch for minutes; and on SQLite the newest row holds the ids'
   sequence, which would otherwise start again from the highest row left and hide
   later changes from matchers already past those ids;
5. records of confirmation codes sent (``code_sends``) made before the cutoff and
   older than any code limit counts (``ConfirmationConfig.counted_for``), so that
   pruning never gives anyone a fresh allowance.

Nothing ``pending``, ``sending`` or ``failed`` is ever deleted, whatever its age:
pruning never costs a notification that has not been delivered or given up.

One step deletes at most ``retention.batch_rows`` rows, in the caller's transaction, so that a
first pass over years of rows holds no lock for long and can show progress; on
PostgreSQL a step takes its rows with ``SKIP LOCKED``, so that daemons pruning at
once share the work and never wait on a row another process holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, delete, exists, func, not_, or_, select
from sqlalchemy.orm import Session

from .db import is_sqlite
from .matcher import GAP_WINDOW
from .models import ChangeEvent, CodeSend, DeadMessage, Notification, StoredMessage, utcnow
from .outbox import FINISHED_STATES

__all__ = ["Pruned", "Pruning", "cutoff_for", "prunable"]

_NOTIFICATIONS: Table = Notification.__table__  # type: ignore[assignment]
_MESSAGES: Table = StoredMessage.__table__  # type: ignore[assignment]
_DEAD_MESSAGES: Table = DeadMessage.__table__  # type: ignore[assignment]
_CHANGE_EVENTS: Table = ChangeEvent.__table__  # type: ignore[assignment]
_CODE_SENDS: Table = CodeSend.__table__  # type: ignore[assignment]


@dataclasses.dataclass
class Pruned:
    """Rows deleted (or that would be), by table."""

    notifications: int = 0
    messages: int = 0
    dead_messages: int = 0
    change_events: int = 0
    code_sends: int = 0

    @property
    def total(self) -> int:
        return (
            self.notifications
            + self.messages
            + self.dead_messages
            + self.change_events
            + self.code_sends
        )

    def __bool__(self) -> bool:
        return self.total > 0

    def __iadd__(self, other: Pruned) -> Pruned:
        self.notifications += other.notifications
        self.messages += other.messages
        self.dead_messages += other.dead_messages
        self.change_events += other.change_events
        self.code_sends += other.code_sends
        return self

    def describe(self) -> str:
        """``"3 notifications, 2 bus messages, 0 dead messages, 4 preference changes
        and 1 code records"``."""
        return (
            f"{self.notifications:,} notifications, {self.messages:,} bus messages, "
            f"{self.dead_messages:,} dead messages, {self.change_events:,} preference "
            f"changes and {self.code_sends:,} code records"
        )


def cutoff_for(days: int, now: dt.datetime | None = None) -> dt.datetime:
    """The moment before which rows are pruned, ``days`` before ``now``."""
    if days < 1:
        raise ValueError(f"retention needs at least one day, got {days}")
    return (now or utcnow()) - dt.timedelta(days=days)


def _short_of_newest(table: Table) -> ColumnElement[bool]:
    return table.c.id < select(func.max(table.c.id)).scalar_subquery()


def _done_before(cutoff: dt.datetime, *, keep_newest: bool) -> ColumnElement[bool]:
    n = _NOTIFICATIONS.c
    # A dead row's ``next_attempt_at`` is when it died (``outbox.mark_dead``); a sent
    # row's, when it was last due. The range is read from the outbox's own index
    # (state, next_attempt_at); a row sent before it was due (a digest's) stays until
    # both moments are past the cutoff.
    done = and_(
        n.state.in_(FINISHED_STATES),
        n.next_attempt_at < cutoff,
        or_(n.sent_at.is_(None), n.sent_at < cutoff),
    )
    # The live feed's catch-up reads the ids past the last one a client saw.
    return and_(done, _short_of_newest(_NOTIFICATIONS)) if keep_newest else done


def _old_dead(cutoff: dt.datetime, *, keep_newest: bool) -> ColumnElement[bool]:
    old = _DEAD_MESSAGES.c.received_at < cutoff
    # The operator re-queues a dead message by the id ``messages dead`` showed.
    return and_(old, _short_of_newest(_DEAD_MESSAGES)) if keep_newest else old


def _unneeded_message(
    cutoff: dt.datetime, *, after_notifications: bool, keep_newest: bool = False
) -> ColumnElement[bool]:
    """A stored message received before ``cutoff`` that no notification keeps.

    With ``after_notifications`` (a dry run), a notification that step 1 would
    delete does not keep its message either.
    """
    m, n = _MESSAGES.c, _NOTIFICATIONS.c
    keeps = [n.message_id == m.id]
    if after_notifications:
        keeps.append(not_(_done_before(cutoff, keep_newest=keep_newest)))
    return and_(m.received_at < cutoff, not_(exists(select(n.id).where(*keeps))))


def _old_change(cutoff: dt.datetime) -> ColumnElement[bool]:
    c = _CHANGE_EVENTS.c
    newest = select(func.max(c.id)).scalar_subquery()
    return and_(c.created_at < cutoff, c.id < newest - GAP_WINDOW)


def _codes_before(cutoff: dt.datetime, counted_for: dt.timedelta) -> dt.datetime:
    """Code records go once past ``cutoff`` and no longer counted by a code limit."""
    return min(cutoff, utcnow() - counted_for)


def _chosen(
    session: Session, table: Table, condition: ColumnElement[bool], limit: int
) -> Select[Any]:
    chosen = select(table.c.id).where(condition).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    return chosen


class Pruning:
    """One pass over everything older than ``cutoff``, a transaction per :meth:`step`."""

    def __init__(
        self, cutoff: dt.datetime, batch_rows: int, *, codes_counted_for: dt.timedelta
    ) -> None:
        self.cutoff = cutoff
        self.batch_rows = batch_rows
        #: Before when code records go: the code limits still count younger ones.
        self.codes_before = _codes_before(cutoff, codes_counted_for)
        #: What the steps so far deleted.
        self.done = Pruned()
        #: Where the next step starts reading messages (``received_at``): where the last
        #: one stopped, rather than past every old message a waiting notification keeps,
        #: again in each step (at 1M messages, steps went from 75 to 200 ms).
        self._messages_from: dt.datetime | None = None

    def step(self, session: Session) -> Pruned:
        """Delete up to ``batch_rows`` rows: notifications first, then messages, dead
        messages, preference changes and code records (see the module docstring).
        Nothing deleted: the pass is over."""
        pruned = Pruned()
        limit = self.batch_rows
        # SQLite (no ``AUTOINCREMENT``) gives a new row the highest id left plus one:
        # pruning the newest row would hand its id, and those below it, out again.
        keep = is_sqlite(session)
        done = _done_before(self.cutoff, keep_newest=keep)
        pruned.notifications = _delete(session, _NOTIFICATIONS, done, limit)
        if not pruned:
            pruned.messages = self._messages(session, limit)
        if not pruned:
            old = _old_dead(self.cutoff, keep_newest=keep)
            pruned.dead_messages = _delete(session, _DEAD_MESSAGES, old, limit)
        if not pruned:
            pruned.change_events = _delete(session, _CHANGE_EVENTS, _old_change(self.cutoff), limit)
        if not pruned:
            old = _CODE_SENDS.c.created_at < self.codes_before
            pruned.code_sends = _delete(session, _CODE_SENDS, old, limit)
        self.done += pruned
        return pruned

    def _messages(self, session: Session, limit: int) -> int:
        m = _MESSAGES.c
        unneeded = _unneeded_message(self.cutoff, after_notifications=False)
        if self._messages_from is not None:
            unneeded = and_(unneeded, m.received_at >= self._messages_from)
        # Oldest first, along ``received_at``'s index: in the primary key's order
        # PostgreSQL walked past every message already deleted and every recent one.
        chosen = _chosen(session, _MESSAGES, unneeded, limit).order_by(m.received_at)
        deleted = session.scalars(
            delete(_MESSAGES).where(m.id.in_(chosen.scalar_subquery())).returning(m.received_at)
        ).all()
        if deleted:
            self._messages_from = max(deleted)
        return len(deleted)


def _delete(session: Session, table: Table, condition: ColumnElement[bool], limit: int) -> int:
    chosen = _chosen(session, table, condition, limit)
    result: Any = session.execute(delete(table).where(table.c.id.in_(chosen.scalar_subquery())))
    return int(result.rowcount or 0)


def prunable(session: Session, cutoff: dt.datetime, *, codes_counted_for: dt.timedelta) -> Pruned:
    """How many rows pruning at ``cutoff`` would delete now (nothing is deleted)."""
    codes_before = _codes_before(cutoff, codes_counted_for)

    def count(table: Table, condition: ColumnElement[bool]) -> int:
        return int(session.scalar(select(func.count()).select_from(table).where(condition)) or 0)

    keep = is_sqlite(session)
    unneeded = _unneeded_message(cutoff, after_notifications=True, keep_newest=keep)
    return Pruned(
        notifications=count(_NOTIFICATIONS, _done_before(cutoff, keep_newest=keep)),
        messages=count(_MESSAGES, unneeded),
        dead_messages=count(_DEAD_MESSAGES, _old_dead(cutoff, keep_newest=keep)),
        change_events=count(_CHANGE_EVENTS, _old_change(cutoff)),
        code_sends=count(_CODE_SENDS, _CODE_SENDS.c.created_at < codes_before),
    )
