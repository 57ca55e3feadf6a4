"""Recording what became of each send, many sends to one transaction.

A send's outcome (delivered, failed, refused) is written to the outbox before its
slot counts as done. One transaction per mail cost as much CPU as the mail's
SMTP transaction, so outcomes are committed in groups: the first outcome starts a
flush at once (no waiting at low rates), and outcomes that come while a flush is
running go together in the next one (a group commit). A send's task resumes only
once its own outcome is committed, so nothing is reported done before it is.

Outcomes of mails that every destination took (the usual case) are one
``UPDATE``; on PostgreSQL it runs on a connection that commits it as it runs
(``Database.autocommit``), one round trip instead of three with ``BEGIN`` and
``COMMIT``. That connection is kept between such commits rather than taken from
the pool and given back each time (which cost more CPU than the statement), and
given back once unused for ``PING_AFTER_IDLE_SECONDS``, so that a connection
idle long enough to have been dropped is pinged by the pool before its next use.

Sends that run in worker threads (e-mail) record their outcomes there, in a
group commit among those threads (:meth:`OutcomeRecorder.record_blocking`): the
first thread to finish a send commits its outcome and every outcome that came
meanwhile, the threads whose outcomes it took wait for that commit, and the next
thread to find no commit running starts the next one. A mail's outcome thus
costs no hand-off to the event loop and back (a future, a task and a trip through
the loop's shared threads per group), and the thread that sent a mail still
takes no other before its outcome is committed.

One outcome can only cost itself: should a group's transaction fail on its data
(not on the database going away), its outcomes are recorded again one per
transaction, and only the one that fails again reports the error.

What was sent is logged as one line a minute (:class:`SentTally`), each mail's
own line at ``DEBUG``: at 500 mails a second a line per mail is 15,000 lines in
30 s, past journald's default limit for a service (10,000 in 30 s), which then
drops every line of the daemon's for the rest of the interval, its errors
included. Failures and partial deliveries keep a line each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fmn_core import outbox
from fmn_core.config import DeliveryConfig
from fmn_core.db import PING_AFTER_IDLE_SECONDS, Database
from fmn_core.outbox import ClaimedNotification
from fmn_core.text import for_log

from .concurrency import in_thread
from .failures import is_transient
from .metrics import Metrics

__all__ = ["SUMMARY_SECONDS", "CarriesRows", "Outcome", "OutcomeRecorder", "SentTally"]

log = logging.getLogger(__name__)

#: How often what was sent is logged, as one line (``SentTally``).
SUMMARY_SECONDS = 60.0


class CarriesRows:
    """Something made of claimed outbox rows (a job to send, its outcome)."""

    rows: tuple[ClaimedNotification, ...]

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.rows]

    @property
    def head(self) -> ClaimedNotification:
        return self.rows[0]


@dataclass(frozen=True)
class Outcome(CarriesRows):
    """What became of one message: the rows it carried and what each destination said."""

    rows: tuple[ClaimedNotification, ...]
    digest: bool
    accepted: int
    errors: tuple[str, ...]
    refused: tuple[str, ...]

    @property
    def note(self) -> str | None:
        """For a message some destinations took: which ones did not, and why."""
        problems = [*self.errors, *self.refused]
        if not self.accepted or not problems:
            return None
        return f"delivered to {self.accepted} of {self.accepted + len(problems)} destinations; " + (
            "; ".join(problems)
        )

    @property
    def error(self) -> str:
        """For a message no destination took: every reason."""
        return "; ".join([*self.errors, *self.refused]) or "no destination took the message"


class _Pending:
    """An outcome handed to the worker threads' group commit, and what became of it."""

    __slots__ = ("error", "lead", "outcome", "settled", "wake")

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.settled = False
        #: Set when the thread is woken to commit the next group rather than because
        #: its outcome is settled.
        self.lead = False
        self.error: BaseException | None = None
        #: Held until the thread that waits on it may go on: a lock, not a
        #: ``Condition``, so that a commit wakes only the threads it concerns.
        self.wake = threading.Lock()
        self.wake.acquire()


class SentTally:
    """Notifications sent since the last summary line, by context; thread-safe.

    Outcomes are reported from the event loop and from the send threads' group
    commits at once, hence the lock.
    """

    def __init__(self, every: float = SUMMARY_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.every = every
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._digests = 0
        self._since = clock()

    def add(self, context: str, rows: int, *, digest: bool) -> None:
        """Count one message sent (``rows`` notifications); log the summary once it is due."""
        with self._lock:
            self._counts[context] += rows
            self._digests += digest
            line = self._take() if self.clock() - self._since >= self.every else None
        if line is not None:
            log.info("%s", line)

    def flush(self, *, due_only: bool = False) -> None:
        """Log what is counted now (with ``due_only``, only once the interval is over)."""
        with self._lock:
            if not self._counts or (due_only and self.clock() - self._since < self.every):
                return
            line = self._take()
        log.info("%s", line)

    def _take(self) -> str:
        now = self.clock()
        counts, digests, seconds = self._counts, self._digests, now - self._since
        self._counts, self._digests, self._since = Counter(), 0, now
        by_context = ", ".join(f"{c} {n:,}" for c, n in sorted(counts.items()))
        with_digests = f"; {digests:,} of them digests" if digests else ""
        return (
            f"delivery: sent {counts.total():,} notifications in the last {seconds:.0f} s "
            f"({by_context}{with_digests})"
        )


class OutcomeRecorder:
    """Writes outcomes to the outbox in group commits; see the module docstring."""

    def __init__(
        self, db: Database, delivery: DeliveryConfig, metrics: Metrics, *, worker: str | None = None
    ) -> None:
        self.db = db
        #: The sender whose claims these outcomes settle: a failure is recorded only
        #: on a row it still holds (``outbox.mark_failed``). A success is recorded
        #: whoever holds the row: the message went out, and no one should send it again.
        self.worker = worker
        self.delivery = delivery
        self.metrics = metrics
        self._waiting: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: The worker threads' group commit (``record_blocking``).
        self._lock = threading.Lock()
        self._queued: list[_Pending] = []
        self._committing = False
        #: The autocommit connection sent outcomes are written on (PostgreSQL), kept
        #: between commits; when it was last used; held while a commit uses it.
        self._kept: Connection | None = None
        self._kept_used = 0.0
        self._kept_lock = threading.Lock()
        self.tally = SentTally()

    async def record(self, outcome: Outcome) -> None:
        """Commit ``outcome``; returns once it is, raises if it could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((outcome, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="delivery-record")
        # Shielded: a send cancelled while it waits (a forced stop) still has its
        # outcome written by the flush, which ``settle`` waits for.
        await asyncio.shield(future)

    def record_blocking(self, outcome: Outcome) -> None:
        """Commit ``outcome`` from a worker thread, with those that come meanwhile.

        Returns once it is committed; raises if it could not be. A thread that
        finds no commit running commits its outcome at once; outcomes that come
        while one runs wait, and when it ends the first of them commits them all
        (its own among them), so each thread waits for at most two commits.
        """
        pending = _Pending(outcome)
        with self._lock:
            if self._committing:
                self._queued.append(pending)
                batch = None
            else:
                self._committing = True
                batch = [pending]
        if batch is None:
            pending.wake.acquire()
            if pending.lead:
                with self._lock:
                    batch, self._queued = self._queued, []
        if batch is not None:
            self._lead(batch)
        if pending.error is not None:
            raise pending.error

    def _lead(self, batch: list[_Pending]) -> None:
        """Commit ``batch``, wake its threads, and hand the next group to its first thread."""
        try:
            self._commit_group(batch)
        finally:
            for pending in batch[1:]:
                pending.wake.release()
            with self._lock:
                if self._queued:
                    following = self._queued[0]
                    following.lead = True
                    following.wake.release()
                else:
                    self._committing = False

    def _commit_group(self, batch: list[_Pending]) -> None:
        """Commit ``batch`` in one transaction, or one by one should that fail on its data."""
        try:
            try:
                states = self._commit([p.outcome for p in batch])
            except Exception as exc:
                if len(batch) == 1 or is_transient(exc):
                    for pending in batch:
                        pending.error = exc
                    return
                for pending in batch:
                    try:
                        (outcome_states,) = self._commit([pending.outcome])
                    except Exception as error:
                        pending.error = error
                    else:
                        self._report(pending.outcome, outcome_states)
                return
            for pending, outcome_states in zip(batch, states, strict=True):
                self._report(pending.outcome, outcome_states)
        except BaseException as exc:
            for pending in batch:
                if not pending.settled and pending.error is None:
                    pending.error = exc
            raise
        finally:
            for pending in batch:
                pending.settled = True

    async def settle(self) -> None:
        """Wait until every outcome handed over so far is written (or has failed)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            outcomes = [outcome for outcome, _ in batch]
            try:
                states = await in_thread(self._commit, outcomes)
            except Exception as exc:
                if len(batch) == 1 or is_transient(exc):
                    self._fail(batch, exc)
                    continue
                await self._one_by_one(batch)
                continue
            for (outcome, future), outcome_states in zip(batch, states, strict=True):
                self._report(outcome, outcome_states)
                if not future.done():
                    future.set_result(None)

    async def _one_by_one(self, batch: list[tuple[Outcome, asyncio.Future[None]]]) -> None:
        for outcome, future in batch:
            try:
                (states,) = await in_thread(self._commit, [outcome])
            except Exception as exc:
                self._fail([(outcome, future)], exc)
                continue
            self._report(outcome, states)
            if not future.done():
                future.set_result(None)

    @staticmethod
    def _fail(batch: Sequence[tuple[Outcome, asyncio.Future[None]]], exc: Exception) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
                # Read here too, so that a future nobody awaits any more (its send
                # was cancelled) does not log "exception was never retrieved".
                future.exception()

    def _commit(self, outcomes: Sequence[Outcome]) -> list[list[str]]:
        """Write and commit ``outcomes`` (blocking); each row's new state, per outcome."""
        if self.db.can_autocommit and all(o.accepted and o.note is None for o in outcomes):
            ids = [i for o in outcomes for i in o.ids]
            if not self._mark_sent_kept(ids):
                with self.db.autocommit() as connection:
                    outbox.mark_sent(connection, ids)
            return [["sent"] * len(o.rows) for o in outcomes]
        with self.db.begin() as session:
            return self._write(session, outcomes)

    def _mark_sent_kept(self, ids: list[int]) -> bool:
        """``mark_sent`` of ``ids`` on the kept connection; False if another commit holds it."""
        if not self._kept_lock.acquire(blocking=False):
            # The loop's commit and the threads' at once (push and e-mail): the
            # second takes a connection from the pool, as every commit used to.
            return False
        try:
            connection = self._kept
            if connection is not None and time.monotonic() - self._kept_used >= (
                PING_AFTER_IDLE_SECONDS
            ):
                # Idle long enough that the server may have dropped it: back to the
                # pool, which pings a connection idle that long before handing it out.
                self._kept = None
                self._close(connection)
                connection = None
            if connection is None:
                connection = self._kept = self.db.autocommit_connection()
            try:
                outbox.mark_sent_autocommitted(connection, ids)
            except BaseException:
                # Raised as before (a transient error is retried by the caller); the
                # next commit starts from a fresh connection.
                self._kept = None
                self._close(connection)
                raise
            self._kept_used = time.monotonic()
            return True
        finally:
            self._kept_lock.release()

    def close_idle(self) -> None:
        """Give the kept connection back to the pool if unused for a while (idle senders),
        and log what was sent once the summary is due."""
        self.tally.flush(due_only=True)
        with self._kept_lock:
            connection = self._kept
            if connection is None or time.monotonic() - self._kept_used < PING_AFTER_IDLE_SECONDS:
                return
            self._kept = None
        self._close(connection)

    def close(self) -> None:
        """Give the kept connection back to the pool and log what was sent (the senders stop)."""
        self.tally.flush()
        with self._kept_lock:
            connection, self._kept = self._kept, None
        self._close(connection)

    @staticmethod
    def _close(connection: Connection | None) -> None:
        if connection is not None:
            # A connection that broke is invalidated by SQLAlchemy already.
            with contextlib.suppress(SQLAlchemyError):
                connection.close()

    def _write(self, session: Session, outcomes: Sequence[Outcome]) -> list[list[str]]:
        """Every outcome's rows, in one transaction; each row's new state, per outcome."""
        plain = [o for o in outcomes if o.accepted and o.note is None]
        # The usual case, mails every destination took: one statement for all of them.
        outbox.mark_sent(session, [i for o in plain for i in o.ids])
        states: list[list[str]] = []
        for outcome in outcomes:
            ids = outcome.ids
            if outcome.accepted:
                if outcome.note is not None:
                    outbox.mark_sent(session, ids, note=outcome.note)
                states.append(["sent"] * len(ids))
            elif outcome.refused and not outcome.errors:
                # fmn refused every destination (a push URL now private): retrying can't help.
                dead = outbox.mark_dead(session, ids, outcome.error, worker=self.worker)
                states.append(["dead"] * dead)
            else:
                states.append(
                    [
                        outbox.mark_failed(
                            session,
                            row_id,
                            outcome.error,
                            max_attempts=self.delivery.max_attempts,
                            backoff_seconds=self.delivery.backoff_seconds,
                            backoff_max_seconds=self.delivery.backoff_max_seconds,
                            worker=self.worker,
                        )
                        for row_id in ids
                    ]
                )
        return states

    def _report(self, outcome: Outcome, states: list[str]) -> None:
        head = outcome.head
        if outcome.accepted:
            if outcome.note is not None:
                log.warning(
                    "delivery: message %s for %s/%s: %s",
                    for_log(head.message_id),
                    for_log(head.user),
                    head.context,
                    outcome.note,
                )
            self.metrics.inc("notifications_sent", len(states))
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "delivery: sent message %s to %s/%s (%d rows%s)",
                    for_log(head.message_id),
                    for_log(head.user),
                    head.context,
                    len(states),
                    ", digest" if outcome.digest else "",
                )
            self.tally.add(head.context, len(states), digest=outcome.digest)
            return
        for state in states:
            # Any other state: another sender took the row since and settled it.
            if state in ("dead", "failed"):
                self.metrics.inc(f"notifications_{state}")
        log.warning(
            "delivery: message %s for %s/%s failed (%s): %s",
            for_log(head.message_id),
            for_log(head.user),
            head.context,
            states[0] if states else "?",
            outcome.error,
        )
