"""The daemon's senders: claim due outbox rows, render, send, record the outcome.

Every context but ``irc`` is delivered here (the IRC bot claims ``irc`` rows).
Each round claims a batch and decides what to do with each (user, context)
group of it (one transaction), then sends with at most ``delivery.senders``
sends in flight; outcomes are recorded as soon as they are known, those that
come together in one transaction (:mod:`fmn_daemon.outcomes`). E-mail (a
``Blocking`` transport) is sent by threads that each hold a send slot and take
mail after mail from a queue, recording each outcome (in a group commit among
them) before taking the next; other transports send from tasks on the loop.

Rounds overlap (``run``): while a round's sends are in flight, the next round
claims what was committed meanwhile, as long as fewer sends than twice the slots
are in flight or waiting for one, so a message never waits for an earlier round's
slowest send, and a slot that frees up finds the next mail already claimed. Rows
in flight count as sent for the rate limit, as they were once a round waited for
its sends. That bound is e-mail's and the fast contexts' (rss, live), which send in
slots of their own each: while their sends fill it, claims leave e-mail out and go
on claiming the others (only the fast contexts' own filling it stops them), so a
mail server that keeps every mail to its timeout holds up only e-mail. A send that
ends and lifts what left its context out of the claims (this bound, or the rooms
below) wakes the claims at once, not at the next poll.

A paced context (Matrix: ``matrix.lines_per_second`` across all users) costs only
itself: a line waits for its turn before it takes a send slot, so no slot sleeps
through the pacing; its lines do not count against the claim-ahead bound above but
against one of their own, a quarter of the claim lease's worth of lines
(``paced_room``), so the last of them goes well before its lease ends (and it is
not claimed and sent again). Lines claimed beyond that go back to ``pending`` at
once, and claims leave the context out while more than half its room is taken, so
a Matrix backlog never stops other contexts' rows from being claimed.

Push (``push``, ``desktop``, ``android``) goes to the users' own servers, any of
which may keep a send to its deadline: one user, or one slow push service, costs
only itself and push. Push sends in slots of its own (as many as e-mail's), a
user's jobs in at most a quarter of them at once (``USER_SHARE_OF_SLOTS``), and
the jobs to one push server (the URL's host and port, ``push_host``) in at most
half (``HOST_SHARE_OF_SLOTS``): a service that hangs for all its users leaves
the other servers' users the other half. Jobs beyond a share wait their turn
holding no slot, and every job takes its turns in one order (its user's, then its
servers' sorted), so no two wait for each other. Push jobs count against a
claim-ahead room of their own, a quarter of the claim lease's worth of send
deadlines (``push_room``), measured twice: by user, each user's up to twice the
user's slots, and by server, each server's up to twice its slots (a job's on every
server it goes to). Claims leave push out while more than half of it is taken by
both measures, so neither a server that hangs for many users nor one user's jobs to
many servers stops them. A claim keeps no more push jobs than that room, no more of
one user's than the user's slots send in that time, and no more to one server than
its slots do; the rest go back to ``pending`` (no attempt counted), the user's and
the server's put off by one send deadline so they are not claimed again, ahead of
everyone's newer rows, by every claim until then.

What happens to a claimed group before anything is sent (muted, turned off, no
confirmed destination, digest, rate limit) is the delivery policy's, shared with
the IRC bot: ``fmn_core.delivery_policy.decide`` says what, and
``delivery_policy.apply`` settles the rows that are not sent. Claimed rows are
decided per (user, context, lane): a digest filter's rows wait for the context's
digest (every N minutes, after K, or daily at a local time), instant rows that are
not urgent wait out quiet hours and are released together as one digest
(``fmn_core.schedule``). Here only sending
and digests are left: in the ``matrix`` context (a chat, like IRC) a user's rows
above ``matrix.burst`` in one round are collapsed into one "N more notifications"
line, and every message is one line worded by ``fmn_core.chat``, as the IRC bot
words it.

A message goes to every confirmed destination of the context, each in its own
``try``: one failing destination never stops the others. Up to
``DESTINATIONS_AT_ONCE`` go at once, so that a user whose push servers each keep a
send to its deadline holds the claim for two deadlines, not ten (a start-up warning
names a claim lease shorter than twice that). Outcome of a row:

- every destination took it, or at least one did: **sent**. The destinations
  that failed are noted (masked) in ``last_error`` and logged, but the row is not
  retried, because a retry would send it again to those that took it.
- every destination failed: **failed**, retried with backoff, ``dead`` after
  ``delivery.max_attempts``; ``last_error`` holds the reasons.
- fmn refused every destination (an unsafe or unusable address, see
  ``TransportRefused``): **dead** at once; retrying cannot help.

Confirmation codes for non-IRC destinations go out through the same
transports, looked for at most every ``delivery.idle_poll_seconds`` (and on
every ``drain`` round); a code that fails is retried a minute later. In ``run``
they are sent beside the rounds, in a task of their own: a code goes to an
address nobody has proved, whose server may answer as slowly as it likes.

An idle sender polls every ``delivery.idle_poll_seconds``; on PostgreSQL it also
listens for the consumers' announcement of new rows (:mod:`fmn_daemon.new_rows`)
and claims them as soon as they are committed.

One row can only cost itself (issue 10): a claim that fails on its data (a
stored body that no longer decodes, say) is redone one row at a time and the
row that fails is marked ``dead`` with the reason; a group whose planning
raises, or a message that cannot be rendered, is marked ``dead`` the same way;
and ``run`` survives any exception of a round (logged once, then a backoff),
not only database errors.

Stopping (``stop`` set): no new claims; sends in flight get
``delivery.shutdown_grace_seconds`` to finish, the rest are cancelled and their
rows released at once (back to ``pending``, no attempt counted) rather than
left to their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, Protocol, TypeVar, cast, runtime_checkable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fmn_core import outbox, preferences
from fmn_core.chat import (
    CHAT_CONTEXTS,
    collapse_line,
    digest_line,
    notification_line,
)
from fmn_core.config import Config
from fmn_core.db import Database
from fmn_core.delivery_policy import (
    COUNT_ONLY_MAX_WAIT,
    DISABLED_ERROR,
    NO_ADDRESS_ERROR,
    NO_ADDRESS_RETRY_SECONDS,
    RATE_LIMIT_DIGEST_MINUTES,
)
from fmn_core.destinations import mask_address
from fmn_core.errors import report_internal_error
from fmn_core.models import utcnow
from fmn_core.outbox import ClaimedNotification
from fmn_core.rendering import Links, Rendered, render, render_confirmation, render_digest
from fmn_core.text import for_log
from fmn_core.views import OutgoingCode

from .concurrency import in_thread, in_unit_of_work
from .failures import describe, is_transient
from .metrics import Metrics
from .new_rows import NewRowsListener, sleep_until_stopped
from .outcomes import Outcome, OutcomeRecorder
from .planning import Job, Round, RoundPlanner
from .send_room import (
    CLAIM_AHEAD,
    HOST_SHARE_OF_SLOTS,
    PUSH_CONTEXTS,
    PUSH_JOB_TIMEOUTS,
    USER_SHARE_OF_SLOTS,
    Slots,
    Turns,
    capped_growth,
    count_capped,
    job_hosts,
    job_lines,
    job_rounds,
    paced_room,
    push_room,
)
from .transports import (
    DESTINATIONS_AT_ONCE,
    Blocking,
    Pooled,
    Transport,
    TransportError,
    TransportRefused,
    build_transports,
)
from .transports.live import LiveHub
from .transports.push import SEND_DEADLINE_TIMEOUTS

__all__ = [
    "COUNT_ONLY_MAX_WAIT",
    "DELIVERED_CONTEXTS_EXCLUDE",
    "DESTINATIONS_AT_ONCE",
    "DISABLED_ERROR",
    "NO_ADDRESS_ERROR",
    "NO_ADDRESS_RETRY_SECONDS",
    "PUSH_JOB_TIMEOUTS",
    "RATE_LIMIT_DIGEST_MINUTES",
    "Senders",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: The bot delivers these.
DELIVERED_CONTEXTS_EXCLUDE: tuple[str, ...] = ("irc",)
CODE_RETRY_SECONDS = 60.0
_DB_BACKOFF_MAX = 30.0
#: How often an idle sender looks for transport connections unused for too long.
_IDLE_CHECK_SECONDS = 5.0


@runtime_checkable
class _Paced(Protocol):
    """A transport whose lines wait their turn (Matrix) inside ``send``, just before
    each goes: it sends in slots of its own, so that a send asleep in the pacing
    holds no slot another context's message could use."""

    @property
    def lines_per_second(self) -> float: ...


class Senders:
    """Claims and sends every context but ``irc``; see the module docstring."""

    def __init__(
        self,
        db: Database,
        config: Config,
        metrics: Metrics,
        live: LiveHub | None = None,
        *,
        transports: Mapping[str, Transport] | None = None,
        links: Links | None = None,
        worker: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.db = db
        #: What "now" is when rows are claimed and decided on (tests move it by hand).
        self.clock = clock
        self.config = config
        self.metrics = metrics
        self.live = live
        self.transports: Mapping[str, Transport] = (
            transports if transports is not None else build_transports(config, live)
        )
        self.links = links if links is not None else Links.from_config(config)
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._planner = RoundPlanner(config, metrics, self.worker, clock)
        self.contexts = tuple(c for c in config.contexts if c not in DELIVERED_CONTEXTS_EXCLUDE)
        #: E-mail's send slots (its threads'), and the fast contexts' (rss, live): a mail
        #: server that keeps every mail to its timeout holds no slot of theirs.
        self._slots = Slots(config.delivery.senders)
        self._fast_slots = Slots(config.delivery.senders)
        #: How many sends of e-mail and the fast contexts ``run`` claims ahead; while
        #: they fill it, claims leave e-mail out (``_mail_left_out``) as long as the
        #: fast contexts' alone do not.
        self._claim_ahead = config.delivery.senders * CLAIM_AHEAD
        #: Every send in flight or waiting for a slot: a task (``_deliver``), or for
        #: a ``Blocking`` transport the future its thread settles (``_queue_mail``).
        self._inflight: dict[asyncio.Future[None], Job] = {}
        #: Contexts whose transport sends from a worker thread (``Blocking``).
        self._blocking = {c for c, t in self.transports.items() if isinstance(t, Blocking)}
        self._mail_excluded = tuple(sorted(self._blocking))
        self._mail_jobs = 0
        #: Whether the last claim left e-mail out, and the paced and push contexts it
        #: left out: the first send of theirs to end that lifts that wakes ``run``
        #: (``_done``), rather than the next poll.
        self._mail_left_out = False
        self._left_out: frozenset[str] = frozenset()
        #: Paced contexts, how many lines each may have claimed ahead, and has (``run``
        #: counts their jobs apart, and claims leave out a context whose backlog is full).
        self._paced = {c: t for c, t in self.transports.items() if isinstance(t, _Paced)}
        self._paced_room = {
            c: paced_room(t.lines_per_second, config.delivery) for c, t in self._paced.items()
        }
        self._paced_lines: Counter[str] = Counter()
        self._paced_jobs = 0
        #: A paced context's own send slots, as many as the shared ones.
        self._paced_slots = {c: Slots(config.delivery.senders) for c in self._paced}
        #: Push contexts: the users' own servers, each of which may keep a send to its
        #: deadline. They send in slots of their own (as many as the shared ones), a
        #: user's jobs in at most ``_user_slots`` of them at once and the jobs to one
        #: host in at most ``_host_slots``, the others waiting their turn without a
        #: slot (``Turns``). Their jobs do not count
        #: against the claim-ahead bound of the others but against a room of their own
        #: (``push_room``, in send deadlines: ``job_rounds``), each user's at most
        #: ``_user_cap`` of it and each host's ``_host_cap``, and a user's (a host's)
        #: against the user's (host's) own room.
        self._push = frozenset(
            c
            for c in self.transports
            if c in PUSH_CONTEXTS and c not in self._blocking and c not in self._paced
        )
        self._push_excluded = tuple(sorted(self._push))
        self._user_slots = max(1, config.delivery.senders // USER_SHARE_OF_SLOTS)
        self._host_slots = max(1, config.delivery.senders // HOST_SHARE_OF_SLOTS)
        self._user_cap = self._user_slots * CLAIM_AHEAD
        self._host_cap = self._host_slots * CLAIM_AHEAD
        self._push_room = push_room(config.delivery.senders, config)
        self._user_room = push_room(self._user_slots, config)
        self._host_room = push_room(self._host_slots, config)
        self._push_slots = Slots(config.delivery.senders)
        self._turns = Turns(self._user_slots)
        self._host_turns = Turns(self._host_slots)
        self._push_jobs = 0
        #: Send deadlines of push jobs in flight, per user id and per host (a job's on
        #: every host it goes to), and their sums with each user's counted up to
        #: ``_user_cap`` and each host's up to ``_host_cap`` (what claims leave push
        #: out on: ``_push_full``).
        self._push_rounds: Counter[int] = Counter()
        self._host_rounds: Counter[str] = Counter()
        self._push_counted = 0
        self._host_counted = 0
        _warn_of_a_short_lease(config, self.transports)
        self._code_retry_at: dict[int, float] = {}
        self._new_rows = NewRowsListener(db)
        self._outcomes = OutcomeRecorder(db, config.delivery, metrics, worker=self.worker)
        self._codes_at = 0.0
        #: ``run``'s confirmation codes, sent beside its rounds (``_codes_beside``), and
        #: the destinations whose code went, to be marked by the next round.
        self._codes_task: asyncio.Task[None] | None = None
        #: (destination id, code) of codes sent and not yet marked: the code too, so
        #: that a newer one the user asked for meanwhile is not marked sent with it.
        self._codes_sent: list[tuple[int, str]] = []
        self._idle_check_at = 0.0
        #: What ``run`` waits on while every send slot is busy (``_await_one``).
        self._waiter: asyncio.Future[None] | None = None
        #: Set (with the new rows' wait interrupted) to end ``run``'s idle wait: it is
        #: stopping, or a context the last claim left out may be claimed again.
        self._look_again: asyncio.Event | None = None
        #: Threads for sends from a worker thread, one per send slot (``_send_threads``).
        self._send_pool: ThreadPoolExecutor | None = None
        #: ``Blocking`` sends waiting for a thread, and the lock the threads take them
        #: under (``_queue_mail``, ``_drain_mail``).
        self._mail: deque[tuple[Job, asyncio.Future[None], _LoopCalls]] = deque()
        self._mail_lock = threading.Lock()
        #: How the send threads reach the event loop of the latest ``_queue_mail``.
        self._loop_calls: _LoopCalls | None = None

    # -- the one way into core ------------------------------------------------

    async def _core(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``function(session, *args, **kwargs)`` in a worker thread, in one transaction."""
        return await in_unit_of_work(self.db, function, *args, **kwargs)

    # -- running ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, then finish or release what is in flight.

        Rounds overlap: a round starts its sends and returns; the next claims as
        soon as rows are committed, unless twice as many sends as there are slots
        are in flight or waiting for one. Cancelling the task (a
        forced stop) skips the grace period: sends in flight are cancelled at once
        and their rows released.
        """
        delivery = self.config.delivery
        failures = 0
        self._fresh_slots()
        look_again = self._look_again = asyncio.Event()
        watcher = asyncio.create_task(self._watch_stop(stop), name="delivery-stop-watch")
        try:
            while not stop.is_set():
                if self._ahead() - self._mail_jobs >= self._claim_ahead:
                    # The fast contexts' sends alone fill the bound. While e-mail's help
                    # fill it, claims leave e-mail out and go on (a mail server that
                    # never answers holds up only e-mail); paced lines and push jobs
                    # have their own bounds (``_claim_exclusions``).
                    await self._await_one(stop)
                    continue
                # Ends of sends from here on that lift an exclusion end the idle wait.
                look_again.clear()
                try:
                    codes = time.monotonic() >= self._codes_at
                    if codes:
                        self._codes_at = time.monotonic() + delivery.idle_poll_seconds
                    claimed, more = await self._start_round(codes=codes, beside=True)
                    failures = 0
                except Exception as exc:
                    # Rows are isolated inside the round; what reaches here is the
                    # database going away, or a bug: back off, never stop delivering.
                    failures += 1
                    delay = min(_DB_BACKOFF_MAX, delivery.idle_poll_seconds * 2**failures)
                    if isinstance(exc, SQLAlchemyError):
                        self.metrics.inc("db_errors")
                        log.warning(
                            "delivery: database error (%s); retrying in %.1fs",
                            exc.__class__.__name__,
                            delay,
                        )
                    else:
                        log.exception(
                            "delivery: internal error in a round; retrying in %.1fs", delay
                        )
                    await sleep_until_stopped(stop, delay)
                    continue
                if more:
                    continue  # more may be due already
                if claimed and not self._new_rows.listening and not self._mail_left_out:
                    # Nobody announces new rows: look again when a send is done or
                    # the poll interval is up, whichever comes first (with e-mail left
                    # out, not at each other send: once e-mail can be claimed again).
                    if self._inflight:
                        await self._await_one(stop, delivery.idle_poll_seconds)
                    continue
                # Until the poll interval is up, a consumer commits new rows (committed
                # since the claim: at once), or a context left out may be claimed.
                await self._new_rows.wait(look_again, delivery.idle_poll_seconds)
                if not self._inflight and time.monotonic() >= self._idle_check_at:
                    self._idle_check_at = time.monotonic() + _IDLE_CHECK_SECONDS
                    await self._close_idle_transports()
        except BaseException:
            watcher.cancel()
            await self._new_rows.close()
            await self._finish(0.0)
            raise
        watcher.cancel()
        await self._new_rows.close()
        await self._finish(delivery.shutdown_grace_seconds)

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        """Once ``stop`` is set, end whatever wait ``run`` is in (one task per run)."""
        await stop.wait()
        self._wake_up()
        self._nudge()

    def _nudge(self) -> None:
        """End ``run``'s idle wait now (or its next, if it is not waiting)."""
        if self._look_again is not None:
            self._look_again.set()
        self._new_rows.interrupt()

    async def drain(self, timeout: float) -> int:
        """Deliver until no row is due (and no code waits); returns rows handled.

        For the demo and tests; raises ``TimeoutError`` if rows keep coming after
        ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        total = 0
        while True:
            handled = await self.round()
            total += handled
            if handled == 0:
                await self._close_transports()
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"rows were still due after {timeout}s ({total} handled)")

    async def round(self, stop: asyncio.Event | None = None) -> int:
        """One whole round: send pending codes, claim a batch, settle it and send it.

        Returns how many rows and codes it handled (0 means there was nothing to do).
        """
        if not self._inflight:
            # A fresh semaphore never belongs to another event loop (drain() from a
            # new loop in tests).
            self._fresh_slots()
        handled, _ = await self._start_round(codes=True)
        await self._await_inflight(stop)
        return handled

    def _fresh_slots(self) -> None:
        senders = self.config.delivery.senders
        self._slots = Slots(senders)
        self._fast_slots = Slots(senders)
        self._paced_slots = {c: Slots(senders) for c in self._paced}
        self._push_slots = Slots(senders)
        self._turns = Turns(self._user_slots)
        self._host_turns = Turns(self._host_slots)

    async def _start_round(self, *, codes: bool, beside: bool = False) -> tuple[int, bool]:
        """Send pending codes (if ``codes``), claim and settle a batch, start its sends.

        Returns how many rows and codes it handled, and whether more rows may be due
        already (a whole batch claimed, or a paced context's rows given back); the
        sends run on as tasks. With
        ``beside``, the codes go in a task of their own and are not counted: a code
        goes to an address nobody has proved yet, and a server there that answers
        slowly must not hold up everyone's notifications until it is done.
        """
        handled = 0
        if codes and beside:
            await self._codes_beside()
        elif codes:
            handled = await self._send_codes()
        inflight = self._inflight_by_group()
        exclude = self._claim_exclusions()
        released: set[int] = set()
        try:
            claimed, plan, released = await self._core(self._claim_plan_and_trim, inflight, exclude)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning(
                "delivery: a claim or its plan failed (%s); claiming its rows one at a time",
                for_log(describe(exc), limit=200),
            )
            claimed = await in_thread(self._claim_one_by_one, exclude)
            if claimed:
                plan = await self._core(self._planner.plan, claimed, inflight, isolated=True)
                plan, released = await self._core(self._within_room, plan)
            else:
                plan = Round([], 0)
        if not claimed:
            return handled, False
        if plan.settled:
            log.debug("delivery: %d claimed rows settled without sending", plan.settled)
        for job in plan.jobs:
            sending: asyncio.Future[None]
            if job.head.context in self._blocking:
                self._mail_jobs += 1
                sending = self._queue_mail(job)
            else:
                if job.head.context in self._paced:
                    self._paced_lines[job.head.context] += job_lines(job)
                    self._paced_jobs += 1
                elif job.head.context in self._push:
                    self._push_jobs += 1
                    self._count_push(job, 1)
                sending = asyncio.create_task(self._deliver(job), name=f"deliver-{job.head.id}")
            self._inflight[sending] = job
            sending.add_done_callback(self._done)
        claimed_ids = {c.id for c in claimed}
        # Digests may have pulled in waiting rows that were not due yet.
        extra = sum(1 for job in plan.jobs for row in job.rows if row.id not in claimed_ids)
        kept = len(claimed_ids - released)
        more = len(claimed) >= self.config.delivery.batch_size or bool(released)
        return handled + kept + extra, more

    def _claim_plan_and_trim(
        self,
        session: Session,
        inflight: Mapping[tuple[int, str], int],
        exclude: tuple[str, ...],
    ) -> tuple[list[ClaimedNotification], Round, set[int]]:
        """``_claim_and_plan``, then ``_within_room``: also returns the rows given
        back at once."""
        claimed, plan = self._claim_and_plan(session, inflight, exclude)
        if not (self._paced or self._push) or not plan.jobs:
            return claimed, plan, set()
        plan, released = self._within_room(session, plan)
        return claimed, plan, released

    def _claim_and_plan(
        self,
        session: Session,
        inflight: Mapping[tuple[int, str], int],
        exclude: tuple[str, ...] = DELIVERED_CONTEXTS_EXCLUDE,
    ) -> tuple[list[ClaimedNotification], Round]:
        """Claim a batch of due rows and plan it, in one transaction."""
        delivery = self.config.delivery
        claimed = outbox.claim_due(
            session,
            worker=self.worker,
            exclude_contexts=exclude,
            limit=delivery.batch_size,
            lease_seconds=delivery.claim_lease_seconds,
            now=self.clock(),
        )
        if not claimed:
            return claimed, Round([], 0)
        # No savepoints: anything that fails here rolls the claim back too, and the
        # round is redone row by row and group by group (``_start_round``).
        return claimed, self._planner.plan(session, claimed, inflight, isolated=False)

    def _claim_exclusions(self) -> tuple[str, ...]:
        """The contexts the next claim leaves out: the bot's, each paced context with
        more than half its room taken (so that a claim is not made for a line or two,
        and given back, at every line sent), the push contexts likewise, and e-mail
        while its sends and the fast contexts' fill the claim-ahead bound."""
        left_out: tuple[str, ...] = ()
        if self._paced:
            left_out += tuple(
                c for c, room in self._paced_room.items() if self._paced_lines[c] * 2 > room
            )
        if self._push and self._push_full():
            left_out += self._push_excluded
        self._left_out = frozenset(left_out)
        self._mail_left_out = bool(self._blocking) and self._ahead() >= self._claim_ahead
        if self._mail_left_out:
            left_out += self._mail_excluded
        return DELIVERED_CONTEXTS_EXCLUDE + left_out

    def _ahead(self) -> int:
        """Sends of e-mail and the fast contexts in flight or waiting for a slot."""
        return len(self._inflight) - self._paced_jobs - self._push_jobs

    def _within_room(self, session: Session, plan: Round) -> tuple[Round, set[int]]:
        """Keep the jobs that can be sent before their lease ends, oldest first:

        - a paced context's while their lines fit its room (``paced_room``);
        - a push job while its user's send deadlines fit the user's room and each of
          its hosts' the host's, and the push contexts' theirs (``push_room``) by the
          users' measure or by the hosts' (``_push_full``).

        Lines or jobs claimed beyond would wait their turn past their lease. The rest
        are given back at once (``outbox.release``: no attempt counted), and claims
        leave their context out until its room is half free; but push jobs beyond
        their user's room or a host's are put off by a send deadline
        (``outbox.postpone``, no attempt counted either), by when one of that user's
        (host's) in a slot has ended: given back at once, they would be claimed again
        by every claim, ahead of everyone's newer rows, until one had; and a server
        that hangs for many users would have its jobs fill every claim, and push's
        room.

        A context, user or host with nothing in flight keeps at least one job.
        """
        taken = Counter(self._paced_lines)
        users = Counter(self._push_rounds)
        hosts = Counter(self._host_rounds)
        counted, hosts_counted = self._push_counted, self._host_counted
        whole = self._push_room
        jobs: list[Job] = []
        released: set[int] = set()
        put_off: set[int] = set()
        for job in plan.jobs:
            context = job.head.context
            room = self._paced_room.get(context)
            if room is not None:
                lines = job_lines(job)
                if taken[context] and taken[context] + lines > room:
                    released.update(job.ids)
                    continue
                taken[context] += lines
            elif context in self._push:
                user, rounds, servers = job.head.user_id, job_rounds(job), job_hosts(job)
                if users[user] and users[user] + rounds > self._user_room:
                    put_off.update(job.ids)
                    continue
                if any(hosts[h] and hosts[h] + rounds > self._host_room for h in servers):
                    put_off.update(job.ids)
                    continue
                more = capped_growth(users[user], rounds, self._user_cap)
                more_hosts = sum(capped_growth(hosts[h], rounds, self._host_cap) for h in servers)
                full = counted + more > whole and hosts_counted + more_hosts > whole
                if counted and full:
                    released.update(job.ids)
                    continue
                counted += count_capped(users, user, rounds, self._user_cap)
                for host in servers:
                    hosts_counted += count_capped(hosts, host, rounds, self._host_cap)
            jobs.append(job)
        if released:
            outbox.release(session, released, worker=self.worker)
            log.debug("delivery: %d rows given back until their turn nears", len(released))
        if put_off:
            until = self.clock() + dt.timedelta(
                seconds=self.config.push.timeout_seconds * SEND_DEADLINE_TIMEOUTS
            )
            outbox.postpone(session, put_off, until, worker=self.worker)
            log.debug(
                "delivery: %d push rows put off until their user's or server's turn", len(put_off)
            )
        return Round(jobs=jobs, settled=plan.settled), released | put_off

    def _inflight_by_group(self) -> Counter[tuple[int, str]]:
        """Rows being sent now, per (user id, context): sent, as far as rate limits go."""
        counts: Counter[tuple[int, str]] = Counter()
        for job in self._inflight.values():
            counts[job.head.group] += len(job.rows)
        return counts

    async def _await_one(self, stop: asyncio.Event, timeout: float | None = None) -> None:
        """Wait until a send finishes, ``stop`` is set or ``timeout`` seconds passed.

        One future that ``_done`` (or the stop watcher, or a timer) resolves: waiting
        on every task in flight instead cost a callback added and removed per task,
        for each send finished, which grew with the claimed batch.
        """
        if stop.is_set():
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._wake_up) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _wake_up(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pooled(self) -> list[Pooled]:
        unique = {id(t): t for t in self.transports.values()}
        return [t for t in unique.values() if isinstance(t, Pooled)]

    async def _close_idle_transports(self) -> None:
        for transport in self._pooled():
            await in_thread(transport.close_idle)
        await in_thread(self._outcomes.close_idle)

    async def _close_transports(self) -> None:
        for transport in self._pooled():
            await in_thread(transport.close)
        await in_thread(self._outcomes.close)
        pool, self._send_pool = self._send_pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    def _send_threads(self) -> ThreadPoolExecutor:
        """The threads that sends run in: one per send slot, apart from the loop's own.

        The event loop's shared threads are few (``os.cpu_count() + 4``, 6 on two
        cores) and also run the claims and the outcomes' commits: with 16 slots, a
        commit would wait behind sends queued there, each waiting for the mail
        server's replies, and slots would wait for a thread.
        """
        if self._send_pool is None:
            self._send_pool = ThreadPoolExecutor(
                max_workers=self.config.delivery.senders, thread_name_prefix="fmn-send"
            )
        return self._send_pool

    def _done(self, task: asyncio.Future[None]) -> None:
        job = self._inflight.pop(task, None)
        if job is not None:
            # A context the last claim left out may be claimed again once its room
            # is half free (e-mail: once below the bound): ``run`` looks now, not at
            # the next poll.
            context = job.head.context
            if context in self._paced:
                self._paced_lines[context] -= job_lines(job)
                self._paced_jobs -= 1
                if (
                    context in self._left_out
                    and self._paced_lines[context] * 2 <= self._paced_room[context]
                ):
                    self._nudge()
            elif context in self._push:
                self._push_jobs -= 1
                self._count_push(job, -1)
                if context in self._left_out and not self._push_full():
                    self._nudge()
            else:
                if context in self._blocking:
                    self._mail_jobs -= 1
                if self._mail_left_out and self._ahead() < self._claim_ahead:
                    self._mail_left_out = False
                    self._nudge()
        self._wake_up()
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # Recording the outcome failed (the database went away): the rows stay
            # claimed and are sent again once their lease expires.
            log.error(
                "delivery: could not record the outcome for rows %s: %r",
                job.ids if job else "?",
                error,
            )

    def _count_push(self, job: Job, sign: int) -> None:
        """Add a push job's send deadlines (``sign`` 1) to those in flight of its user and
        of each host it goes to, or take them off (-1)."""
        rounds = sign * job_rounds(job)
        user = job.head.user_id
        self._push_counted += count_capped(self._push_rounds, user, rounds, self._user_cap)
        for host in job_hosts(job):
            self._host_counted += count_capped(self._host_rounds, host, rounds, self._host_cap)

    def _push_full(self) -> bool:
        """Whether claims leave push out: more than half its room taken both by the users'
        jobs (each user's counted up to ``_user_cap``) and by the hosts' (each host's up
        to ``_host_cap``). A server that hangs for many users fills the first alone, one
        user's jobs to many servers the second: neither stops the claims of push."""
        room = self._push_room
        return self._push_counted * 2 > room and self._host_counted * 2 > room

    async def _await_inflight(self, stop: asyncio.Event | None) -> None:
        """Wait for this round's sends; return early (leaving them to ``_finish``) on stop."""
        if not self._inflight:
            return
        if stop is None:
            await asyncio.wait(list(self._inflight))
            return
        stopper = asyncio.create_task(stop.wait(), name="delivery-stop-wait")
        try:
            while self._inflight and not stop.is_set():
                waits: list[asyncio.Future[Any]] = [*self._inflight, stopper]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            await asyncio.gather(stopper, return_exceptions=True)

    async def _finish(self, grace: float) -> None:
        """Give sends in flight ``grace`` seconds, cancel the rest, release their rows."""
        try:
            await self._finish_sends(grace)
        finally:
            await self._stop_codes()
            await self._close_transports()

    async def _stop_codes(self) -> None:
        # A code not marked sent is sent again by the next daemon: nothing is lost.
        task, self._codes_task = self._codes_task, None
        if task is not None and not task.done():
            task.cancel("the daemon is stopping")
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self._mark_codes_sent()
        except SQLAlchemyError:
            log.warning(
                "delivery: %d sent codes not marked sent; they will go again",
                len(self._codes_sent),
            )

    async def _finish_sends(self, grace: float) -> None:
        if not self._inflight:
            await self._outcomes.settle()
            return
        forced = False
        try:
            _, pending = (
                await asyncio.wait(list(self._inflight), timeout=grace)
                if grace > 0
                else (set(), set(self._inflight))
            )
        except asyncio.CancelledError:
            # A forced stop while the sends had their grace: cancel and release them now,
            # as a forced stop does, and be cancelled afterwards. Left running, their
            # rows would stay ``sending`` until the lease ran out.
            forced, pending = True, set(self._inflight)
        if not pending:
            await self._outcomes.settle()
            return
        if forced:
            log.warning("delivery: stopping now; cancelling %d sends", len(pending))
        else:
            log.warning(
                "delivery: cancelling %d sends still running after %.0fs", len(pending), grace
            )
        with self._mail_lock:
            # Never started: no thread may take them now (their rows are released).
            self._mail.clear()
        ids = [i for task in pending if task in self._inflight for i in self._inflight[task].ids]
        for task in pending:
            task.cancel("the daemon is stopping")
        await asyncio.gather(*pending, return_exceptions=True)
        # Outcomes handed over before the cancel are written first; the release
        # below then leaves those rows alone (they are no longer ``sending``).
        await self._outcomes.settle()
        try:
            released = await self._core(outbox.release, ids, worker=self.worker)
            log.info("delivery: released %d unsent rows", released)
        except SQLAlchemyError:
            log.warning("delivery: could not release %d rows; their lease will expire", len(ids))
        if forced:
            raise asyncio.CancelledError

    def _claim_one_by_one(self, exclude: tuple[str, ...]) -> list[ClaimedNotification]:
        """Claim due rows one per transaction; a row that fails is marked dead with the reason."""
        delivery = self.config.delivery
        with self.db.begin() as session:
            ids = outbox.due_ids(session, exclude_contexts=exclude, limit=delivery.batch_size)
        claimed: list[ClaimedNotification] = []
        for row_id in ids:
            try:
                with self.db.begin() as session:
                    claimed.extend(
                        outbox.claim_ids(
                            session,
                            [row_id],
                            worker=self.worker,
                            lease_seconds=delivery.claim_lease_seconds,
                        )
                    )
            except Exception as exc:
                if is_transient(exc):
                    raise
                self._bury_row(row_id, f"cannot be loaded: {describe(exc)}")
        return claimed

    def _bury_row(self, row_id: int, reason: str) -> None:
        """Mark one row ``dead`` at once with ``reason`` (its own transaction); log it once."""
        with self.db.begin() as session:
            outbox.mark_dead(session, [row_id], reason)
        self.metrics.inc("notifications_dead")
        log.error("delivery: row %d is dead: %s", row_id, for_log(reason, limit=300))

    # -- sending ----------------------------------------------------------------

    def _render(self, job: Job) -> Rendered:
        if job.head.context in CHAT_CONTEXTS:
            return _chat_rendered(job)
        links = self.links if job.head.context == "email" else None
        return render_digest(job.rows, links) if job.digest else render(job.head, links)

    async def _deliver(self, job: Job) -> None:
        """Send ``job`` on a transport that sends from the event loop, in a slot of its
        kind's: Matrix's own (its transport waits for the line's turn just before the
        message goes, after the room is found, and no other context's send waits
        meanwhile), push's own once its user has fewer than ``_user_slots`` in use and
        each host it goes to fewer than ``_host_slots`` (a user's jobs go in their order
        and hold no slot while they wait for the user's or a host's turn), or the fast
        contexts'.

        Turns are taken in one order by every job, the user's, then the hosts' sorted
        by name, then the slot, so no two jobs each wait for what the other holds. The
        user's comes first: taken after a host's, a user's backlog waiting for the
        user's turn would hold that host's turns and keep its other users waiting;
        this way one user holds at most the user's share of any host's turns."""
        context = job.head.context
        if context in self._push:
            turns, host_turns, user = self._turns, self._host_turns, job.head.user_id
            taken: list[str] = []
            await turns.take(user)
            try:
                for host in job_hosts(job):
                    await host_turns.take(host)
                    taken.append(host)
                await self._send_in_slot(job, self._push_slots)
            finally:
                # A forced stop cancels a job in any of these waits: what it took goes back.
                for host in taken:
                    host_turns.give(host)
                turns.give(user)
            return
        await self._send_in_slot(job, self._paced_slots.get(context, self._fast_slots))

    async def _send_in_slot(self, job: Job, slots: Slots) -> None:
        await slots.take()
        try:
            outcome = await self._send(job)
            # Recorded before the slot is given back, so that a crash can repeat at
            # most one accepted message per slot; outcomes of slots that finish
            # together share one transaction. A send cancelled here (a forced stop)
            # still has its outcome written.
            await self._outcomes.record(outcome)
        finally:
            slots.give()

    def _queue_mail(self, job: Job) -> asyncio.Future[None]:
        """Hand ``job`` (a ``Blocking`` transport's) to the send threads; settled once recorded.

        The threads take the jobs from a queue of their own, one after the other,
        each thread holding a send slot for as long as it finds jobs: a mail costs
        no task, no executor call and no trip through the event loop between its
        thread finishing the mail before and starting it. A thread is started when
        a job waits and a slot is free, or when a slot is given back while jobs wait.
        """
        calls = self._calls_to_loop()
        sending: asyncio.Future[None] = calls.loop.create_future()
        with self._mail_lock:
            self._mail.append((job, sending, calls))
        # Every thread running is busy with a mail (one finding none ends), so a
        # job that waits wants a thread of its own if a slot is free.
        if self._slots.try_take():
            self._start_drain(self._slots, calls)
        return sending

    def _calls_to_loop(self) -> _LoopCalls:
        """The running loop's ``_LoopCalls`` (made anew for a new loop: ``drain`` in tests)."""
        loop = asyncio.get_running_loop()
        calls = self._loop_calls
        if calls is None or calls.loop is not loop:
            calls = self._loop_calls = _LoopCalls(loop)
        return calls

    def _start_drain(self, slots: Slots, calls: _LoopCalls) -> None:
        self._send_threads().submit(self._drain_mail, slots, calls)

    def _slot_freed(self, slots: Slots) -> None:
        """A send slot is free: to a thread for mails that wait, else to whoever waits."""
        if slots is not self._slots:
            return  # a slot of an earlier round's loop (``round`` from a new loop)
        with self._mail_lock:
            waiting = bool(self._mail)
        if waiting:
            self._start_drain(slots, self._calls_to_loop())
        else:
            slots.give()

    def _drain_mail(self, slots: Slots, calls: _LoopCalls) -> None:
        """In a send thread, holding one slot: send and record mails until none waits.

        Each mail's outcome is committed before the thread takes the next, so a
        crash repeats at most one accepted mail per slot; the slot goes back to the
        event loop once no mail waits.
        """
        # Each job's end goes to the loop when the thread takes the next one, or
        # with the slot once none waits: one wake-up of the loop for a lone mail.
        done: tuple[_LoopCalls, asyncio.Future[None], BaseException | None] | None
        done = None
        try:
            while True:
                with self._mail_lock:
                    if not self._mail:
                        break
                    job, sending, job_calls = self._mail.popleft()
                if done is not None:
                    done[0].call(_settle, done[1], done[2])
                error: BaseException | None = None
                try:
                    outcome, recorded = self._send_in_thread(job)
                    if not recorded:
                        # One more try, in this thread; should that fail too, the rows
                        # stay claimed and go again once their lease is up.
                        self._outcomes.record_blocking(outcome)
                except Exception as exc:
                    error = exc
                done = (job_calls, sending, error)
        finally:
            if done is not None and done[0] is not calls:
                done[0].call(_settle, done[1], done[2])
                done = None
            calls.call(self._drained, slots, done[1:] if done is not None else None)

    def _drained(
        self,
        slots: Slots,
        last: tuple[asyncio.Future[None], BaseException | None] | None,
    ) -> None:
        """On the loop: a send thread found no more mail; its last job ended, its slot is free."""
        if last is not None:
            _settle(*last)
        self._slot_freed(slots)

    def _send_in_thread(self, job: Job) -> tuple[Outcome, bool]:
        """Render, send and record ``job`` in a worker thread.

        Returns the outcome and whether it is recorded. The outcome is committed
        here, in a group commit with the other send threads' outcomes of the
        moment (``OutcomeRecorder.record_blocking``), not handed to the event loop
        for its commit and back.
        """
        transport, rendered, errors, refused = self._prepare(job)
        accepted = 0
        # A job comes here only from ``_queue_mail``, for a context in ``_blocking``: its
        # transport is known to be ``Blocking`` (a runtime protocol check costs µs a mail).
        if transport is not None and rendered is not None:
            blocking = cast(Blocking, transport)
            for destination in job.head.destinations:
                try:
                    blocking.send_blocking(destination, rendered)
                except Exception as exc:
                    self._note_failure(job, destination, exc, errors, refused)
                else:
                    accepted += 1
        outcome = _outcome(job, accepted, errors, refused)
        try:
            self._outcomes.record_blocking(outcome)
        except Exception as exc:
            log.debug("delivery: recording in the sending thread failed (%r); retrying", exc)
            return outcome, False
        return outcome, True

    async def _send(self, job: Job) -> Outcome:
        transport, rendered, errors, refused = self._prepare(job)
        accepted = 0
        if transport is not None and rendered is not None:
            destinations = job.head.destinations
            if len(destinations) == 1:
                failures = [await _send_one(transport.send, destinations[0], rendered)]
            else:
                # At once (``DESTINATIONS_AT_ONCE``): one after the other, a user's slow
                # servers would hold the claim for the sum of their deadlines.
                at_once = asyncio.Semaphore(DESTINATIONS_AT_ONCE)
                failures = await asyncio.gather(
                    *(_send_one(transport.send, d, rendered, at_once) for d in destinations)
                )
            for destination, failure in zip(destinations, failures, strict=True):
                if failure is None:
                    accepted += 1
                else:
                    self._note_failure(job, destination, failure, errors, refused)
        return _outcome(job, accepted, errors, refused)

    def _prepare(self, job: Job) -> tuple[Transport | None, Rendered | None, list[str], list[str]]:
        """The job's transport and message, or why there is none (errors, refusals)."""
        head = job.head
        transport = self.transports.get(head.context)
        errors: list[str] = []
        refused: list[str] = []
        rendered: Rendered | None = None
        if transport is None:
            errors.append(f"this daemon does not deliver {head.context}")
        else:
            try:
                rendered = self._render(job)
            except Exception as exc:  # one message that can't be shown costs only its rows
                # Logged once, with the outcome, when it is recorded.
                refused.append(f"cannot be rendered: {describe(exc)}")
        return transport, rendered, errors, refused

    @staticmethod
    def _note_failure(
        job: Job, destination: str, exc: Exception, errors: list[str], refused: list[str]
    ) -> None:
        """File a destination's failure as a refusal or an error (one never stops the others)."""
        masked = mask_address(job.head.context, destination)
        if isinstance(exc, TransportRefused):
            refused.append(f"{masked}: {exc.reason}")
        elif isinstance(exc, TransportError):
            errors.append(f"{masked}: {exc.reason}")
        else:  # a transport's bug must not stop the other destinations
            notice = report_internal_error(
                log, f"sending message {for_log(job.head.message_id)} to {masked}"
            )
            errors.append(f"{masked}: {notice}")

    # -- confirmation codes -------------------------------------------------------

    async def _send_codes(self) -> int:
        """Send the due confirmation codes one after another, each marked sent as it goes
        (``round``); returns how many went."""
        sent = 0
        for code in await self._due_codes():
            if await self._send_code(code):
                await self._core(preferences.mark_code_sent, code.destination_id, code.code)
                sent += 1
        return sent

    async def _codes_beside(self) -> None:
        """``run``'s codes: mark those sent since the last time, and start sending the due
        ones in a task of their own, unless the last ones are still going.

        Only the sends leave the round: the database work stays in its order (on the
        tests' PostgreSQL every session shares one connection).
        """
        idle = self._codes_task is None or self._codes_task.done()
        await self._mark_codes_sent()
        if not idle:
            return
        codes = await self._due_codes()
        if codes:
            self._codes_task = asyncio.create_task(
                self._send_codes_beside(codes), name="delivery-codes"
            )

    async def _mark_codes_sent(self) -> None:
        # One at a time, each dropped once marked: a failure leaves the rest to mark
        # next time (the task may add more meanwhile, at the end).
        while self._codes_sent:
            await self._core(preferences.mark_code_sent, *self._codes_sent[0])
            del self._codes_sent[0]

    async def _send_codes_beside(self, codes: list[OutgoingCode]) -> None:
        for code in codes:
            if await self._send_code(code):
                self._codes_sent.append((code.destination_id, code.code))

    async def _due_codes(self) -> list[OutgoingCode]:
        codes = await self._core(preferences.pending_confirmation_codes, contexts=self.contexts)
        now = time.monotonic()
        return [
            code
            for code in codes
            if self._code_retry_at.get(code.destination_id, 0.0) <= now
            and code.context in self.transports
        ]

    async def _send_code(self, code: OutgoingCode) -> bool:
        """Send one code; False (and a retry in ``CODE_RETRY_SECONDS``) when it did not go."""
        transport = self.transports[code.context]
        masked = mask_address(code.context, code.address)
        rendered = render_confirmation(
            code.context, code.code, public_url=self.config.http.public_url, origin=code.origin
        )
        try:
            await transport.send(code.address, rendered)
        except TransportError as exc:
            self._code_retry_at[code.destination_id] = time.monotonic() + CODE_RETRY_SECONDS
            log.warning(
                "delivery: confirmation code for %s/%s to %s not sent: %s",
                code.user,
                code.context,
                masked,
                exc.reason,
            )
            return False
        except Exception:  # a transport's bug: this code waits, the others go on
            self._code_retry_at[code.destination_id] = time.monotonic() + CODE_RETRY_SECONDS
            log.exception(
                "delivery: confirmation code for %s/%s to %s not sent (internal error)",
                for_log(code.user),
                code.context,
                masked,
            )
            return False
        self._code_retry_at.pop(code.destination_id, None)
        log.info(
            "delivery: sent a confirmation code for %s/%s to %s", code.user, code.context, masked
        )
        return True


def _settle(sending: asyncio.Future[None], error: BaseException | None) -> None:
    """On the event loop: a send thread is done with a job (cancelled meanwhile: nothing)."""
    if sending.done():
        return
    if error is None:
        sending.set_result(None)
    else:
        sending.set_exception(error)


class _LoopCalls:
    """Calls from the send threads to one event loop, as many as wait per wake-up of it.

    ``call_soon_threadsafe`` wakes the loop (a write to its self-pipe) for every call:
    once per mail at a steady rate. Here a call made while earlier ones still wait
    for the loop joins them, and the loop runs them all, in order, on one wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    def call(self, callback: Callable[..., object], *args: Any) -> None:
        """``callback(*args)`` on the loop, from any thread."""
        with self._lock:
            first = not self._calls
            self._calls.append((callback, args))
        if first:
            _call_soon(self.loop, self._run)

    def _run(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for callback, args in calls:
            try:
                callback(*args)
            except Exception as exc:  # as the loop treats a callback that raises: logged
                self.loop.call_exception_handler(
                    {"message": f"exception in callback {callback!r}", "exception": exc}
                )


def _call_soon(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any
) -> None:
    """``callback(*args)`` on ``loop`` from a thread; nothing if the loop is closed."""
    # Closed: a forced stop left this thread running, and nobody waits for it now.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


async def _send_one(
    send: Callable[[str, Rendered], Awaitable[None]],
    destination: str,
    rendered: Rendered,
    at_once: asyncio.Semaphore | None = None,
) -> Exception | None:
    """Send to one destination; what it failed with, if it did (one never stops the others)."""
    try:
        if at_once is None:
            await send(destination, rendered)
        else:
            async with at_once:
                await send(destination, rendered)
    except Exception as exc:
        return exc
    return None


def _warn_of_a_short_lease(config: Config, transports: Mapping[str, Transport]) -> None:
    """Say at start-up when a push job can outlast half its claim's lease.

    Half is left for the wait for a send slot. A warning, not a refusal: a short
    lease recovers a dead sender's rows sooner, and the crash tests use one.
    """
    if PUSH_CONTEXTS.isdisjoint(transports):
        return
    timeout = config.push.timeout_seconds
    lease = config.delivery.claim_lease_seconds
    worst = PUSH_JOB_TIMEOUTS * timeout
    if 2 * worst > lease:
        log.warning(
            "delivery: delivery.claim_lease_seconds (%g s) is short for push.timeout_seconds "
            "(%g s): a push to a user's destinations may take %g s, and a row still being "
            "sent when its lease ends is claimed and sent again; set "
            "delivery.claim_lease_seconds to at least %g or push.timeout_seconds to at most %g",
            lease,
            timeout,
            worst,
            2 * worst,
            lease / (2 * PUSH_JOB_TIMEOUTS),
        )


def _outcome(job: Job, accepted: int, errors: list[str], refused: list[str]) -> Outcome:
    return Outcome(
        rows=job.rows,
        digest=job.digest,
        accepted=accepted,
        errors=tuple(errors),
        refused=tuple(refused),
    )


def _chat_rendered(job: Job) -> Rendered:
    """A chat context's message: one line, worded as the IRC bot words it."""
    if job.collapsed:
        line = collapse_line(job.rows)
    elif job.digest:
        line = digest_line(job.rows)
    else:
        line = notification_line(job.head)
    url = job.head.url if len(job.rows) == 1 else None
    return Rendered(subject=line, text=line, short=line, url=url)
