"""Delivering the ``irc`` context: outbox rows become private messages.

One background thread claims due ``irc`` rows from fmn's outbox (the same lease
based claim the daemon uses, so a crashed or restarted bot loses nothing: rows
are marked sent only after their line was queued, and an expired lease makes
them due again), decides per user what to do, and sends through an
:class:`IrcLink` (:class:`LimnoriaLink` on a real connection: ``ISON`` for
presence, the services account on a nick (tracked or asked with WHOX), ``PRIVMSG``):

* muted (``fmn mute``): postponed until the mute ends;
* the ``irc`` context turned off: the rows go ``dead`` with that reason
  (visible to operators, re-playable);
* no confirmed nick: a failed attempt, tried again hourly, ``dead`` after
  ``delivery.max_attempts``;
* a digest policy (``fmn digest``): postponed until the digest is due, then
  everything waiting is sent as one line;
* the confirmed nick is not online, or no services account of the user's is on
  it (logged out, another account, or that can't be told now): postponed and
  looked up again every minute, for ``bot.offline_hold_minutes`` from the first
  look-up that found it so (time a row waited before, for a digest, quiet hours
  or a mute, does not count); after that the rows go ``dead``. On a server without
  WHOX there are no accounts to check: the one on the nick gets its lines;
* otherwise one line per notification, at most ``bot.burst`` lines per user per
  round: above that the rest collapses into one "N more notifications" line.
  Lines across all users are paced at ``bot.lines_per_second``. The lines and
  the pacing are ``fmn_core.chat``'s, which the daemon's Matrix sender shares.

What the bot records on a row after its look-ups and sends (postponed, dead) is
recorded only while its claim on the row holds, as the daemon's senders do
(``worker=``): a bot whose lease ran out, slow or paused, leaves the row to the
sender that took it since, which may already have sent it. That the line went out
is recorded even then: it did.

Muted and digest rows are looked at again every minute even when they wait
longer, so ``fmn unmute`` and ``fmn digest irc off`` take effect within a minute. These
outcomes match the daemon's senders for the other contexts.

The same round sends IRC confirmation codes (``fmn set-address irc <nick>``) to
nicks that are online and held the same way, and marks them sent.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fmn_core import delivery_policy, outbox, preferences
from fmn_core.chat import (
    MAX_LINE_BYTES,
    Pacer,
    burst_lines,
    collapse_line,
    digest_line,
    fit_line,
    notification_line,
)
from fmn_core.config import Config
from fmn_core.db import Database
from fmn_core.delivery_policy import COUNT_ONLY_MAX_WAIT, DISABLED_ERROR, NO_ADDRESS_RETRY_SECONDS
from fmn_core.models import utcnow
from fmn_core.outbox import ClaimedNotification

from .irc_link import UNCHECKED, Holder, IrcLink

__all__ = [
    "COUNT_ONLY_MAX_WAIT",
    "DISABLED_ERROR",
    "MAX_LINE_BYTES",
    "NO_NICK_ERROR",
    "NO_NICK_RETRY_SECONDS",
    "RECHECK_SECONDS",
    "IrcSender",
    "Pacer",
    "RoundReport",
    "collapse_line",
    "confirmation_line",
    "digest_line",
    "notification_line",
]

IRC = "irc"

#: How long held notifications (offline, muted, digest) wait before they are looked at again.
RECHECK_SECONDS = 60.0
#: A line that could not be queued (no connection) is tried again this much later.
SEND_RETRY_SECONDS = 30.0
#: How many rows one round claims at most.
BATCH_SIZE = 200
NO_NICK_ERROR = "no confirmed IRC nick; confirm one to receive these"
#: Rows of a user without a confirmed nick are tried again this often (then dead).
NO_NICK_RETRY_SECONDS = NO_ADDRESS_RETRY_SECONDS
#: Stats for a group without a digest: ``delivery_policy.decide`` does not read them then.
_NO_STATS = delivery_policy.GroupStats(waiting=0, oldest_waiting=None, sent_last_hour=0)


def _held_by(holders: Mapping[str, Holder], nick: str, user: str) -> bool:
    """Whether ``user``'s lines may go to ``nick``: a services account of theirs is on it.

    Only a positive answer counts. A nick that is logged out, held by another
    account, or whose holder can't be told now may be anyone's; ``UNCHECKED``
    (no WHOX, so no accounts to check) is the exception the network leaves.
    """
    holder = holders.get(nick)
    return holder is UNCHECKED or holder == user


def confirmation_line(user: str, code: str, bot_nick: str) -> str:
    """The private message that carries an IRC confirmation code."""
    return fit_line(
        f"The Fedora account {user} asked fmn to send its notifications to this nick. "
        f"If that is you, reply (while identified as {user}): /msg {bot_nick} fmn confirm {code} "
        "— otherwise ignore this; nothing is sent here until then."
    )


@dataclass
class RoundReport:
    """What one delivery round did (for logs and tests)."""

    sent: int = 0
    lines: int = 0
    postponed: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    codes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        """Whether the round found nothing to do."""
        return not (
            self.sent or self.postponed or self.failed or self.dead or self.released or self.codes
        )


@dataclass
class _LaneRows:
    user: str
    rows: list[ClaimedNotification]
    #: Whether the policy said to send the group as one digest line.
    digest: bool = False

    @property
    def first(self) -> ClaimedNotification:
        return self.rows[0]

    @property
    def ids(self) -> list[int]:
        return [row.id for row in self.rows]


class IrcSender:
    """Claims the outbox's ``irc`` rows and sends them through an :class:`IrcLink`."""

    def __init__(
        self,
        database: Database,
        link: IrcLink,
        *,
        bot_nick: Callable[[], str],
        log: logging.Logger,
        schema_ready: Callable[[], bool],
        worker: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.database = database
        self.config: Config = database.config
        self.link = link
        self.bot_nick = bot_nick
        self.log = log
        #: Whether the database's schema is one this fmn can use (asked before each round).
        self.schema_ready = schema_ready
        self.worker = worker or f"fmn-bot:{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        bot = self.config.bot
        self.pacer = Pacer(bot.lines_per_second, bot.burst)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: Codes whose nick was offline: destination id -> when to ask again.
        self._code_waits: dict[int, dt.datetime] = {}

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        """Run rounds in a background thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fmn-irc-delivery", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: the round in hand gives back what it has not sent."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                self.log.warning("the IRC delivery thread did not stop within %s s", timeout)

    def wake(self) -> None:
        """Start the next round now (a new confirmation code is waiting, say)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        idle = max(self.config.delivery.idle_poll_seconds, 0.05)
        while not self._stop.is_set():
            try:
                report = self.run_once()
            except Exception:
                self.log.exception("IRC delivery round failed; trying again shortly")
                report = RoundReport()
            if report.idle or report.released:
                self._wake.wait(idle if report.idle else max(idle, 5.0))
                self._wake.clear()

    def _sleep(self, seconds: float) -> bool:
        """Wait for the pacer; False if asked to stop meanwhile."""
        return not self._stop.wait(seconds) if seconds > 0 else not self._stop.is_set()

    # ------------------------------------------------------------------- round

    def run_once(self, now: dt.datetime | None = None) -> RoundReport:
        """One round: claim due rows, decide, send; then confirmation codes."""
        moment = now if now is not None else self.clock()
        report = RoundReport()
        if not self.schema_ready():
            # Claiming on a schema this fmn can't use would fail, or worse, half work;
            # the rows wait untouched until the operator has upgraded it.
            report.notes.append("the database's schema is not usable yet")
            return report
        lease = self.config.delivery.claim_lease_seconds
        with self.database.begin() as session:
            claimed = outbox.claim_due(
                session,
                worker=self.worker,
                contexts=[IRC],
                limit=BATCH_SIZE,
                lease_seconds=lease,
                now=moment,
            )
        with self.database.begin() as session:
            codes = [
                code
                for code in preferences.pending_confirmation_codes(session, contexts=[IRC])
                if self._code_waits.get(code.destination_id, moment) <= moment
            ]
        if not claimed and not codes:
            return report

        # One group per user and lane (instant, urgent, digest: fmn_core.schedule).
        groups: dict[tuple[int, str, str], _LaneRows] = {}
        for row in claimed:
            groups.setdefault(row.lane_key, _LaneRows(row.user, [])).rows.append(row)

        ready: list[_LaneRows] = []
        for group in groups.values():
            if self._settle_without_irc(group, moment, report):
                continue
            ready.append(group)

        nicks = sorted(
            {n for g in ready for n in g.first.destinations} | {c.address for c in codes}
        )
        online = self.link.online(nicks) if nicks else frozenset()
        if online is None:
            # Not connected: give everything back and try again later.
            with self.database.begin() as session:
                report.released += outbox.release(
                    session, [i for g in ready for i in g.ids], worker=self.worker
                )
            report.notes.append("no IRC connection")
            return report
        holders = self.link.holders(sorted(online)) if online else {}

        for index, group in enumerate(ready):
            if self._stop.is_set():
                with self.database.begin() as session:
                    rest = [i for g in ready[index:] for i in g.ids]
                    report.released += outbox.release(session, rest, worker=self.worker)
                return report
            self._deliver(group, online, holders, moment, report)

        for code in codes:
            if self._stop.is_set():
                break
            if code.address not in online or not _held_by(holders, code.address, code.user):
                # Ask about this nick again later, not on every idle poll.
                self._code_waits[code.destination_id] = moment + dt.timedelta(
                    seconds=RECHECK_SECONDS
                )
                continue
            if not self._pace():
                break
            if self.link.send(
                code.address, confirmation_line(code.user, code.code, self.bot_nick())
            ):
                with self.database.begin() as session:
                    preferences.mark_code_sent(session, code.destination_id, code.code)
                report.codes += 1
                report.lines += 1
        return report

    # ---------------------------------------------------------------- decisions

    def _settle_without_irc(self, group: _LaneRows, now: dt.datetime, report: RoundReport) -> bool:
        """Rows that need no IRC lookup: muted, turned off, no nick, digest not due.

        Decided by ``delivery_policy.decide``, as the daemon's senders do, so a user's
        contexts behave alike (the bot has no rate limit).
        """
        first = group.first
        decision = delivery_policy.decide(
            first, self._stats(first, now), now, waiting_in_claim=len(group.rows)
        )
        group.digest = decision.kind == "digest"
        if decision.kind in ("send", "digest"):
            return False
        with self.database.begin() as session:
            settled = delivery_policy.apply(
                session,
                decision,
                group.ids,
                max_attempts=self.config.delivery.max_attempts,
                now=now,
                # Muted rows are looked at again within RECHECK_SECONDS, so that a mute
                # ended from another front end takes effect soon; other holds say
                # until when they wait (a policy change releases them at once).
                hold_at_most=(
                    dt.timedelta(seconds=RECHECK_SECONDS) if decision.reason == "muted" else None
                ),
                no_destination_error=NO_NICK_ERROR,
                retry_seconds=NO_NICK_RETRY_SECONDS,
                worker=self.worker,
            )
        assert settled is not None  # only "send" and "digest" are left to the sender
        report.postponed += settled.postponed
        report.failed += settled.failed
        report.dead += settled.dead
        if decision.kind == "dead" and settled.dead:
            self._log_dropped(group, decision.note, settled.dead)
        return True

    def _stats(self, first: ClaimedNotification, now: dt.datetime) -> delivery_policy.GroupStats:
        """The group's outbox stats; looked up only when a digest needs them."""
        if not first.wants_digest:
            return _NO_STATS
        with self.database.begin() as session:
            return delivery_policy.group_stats(session, [first.lane_key], now=now)[first.lane_key]

    def _deliver(
        self,
        group: _LaneRows,
        online: frozenset[str],
        holders: Mapping[str, Holder],
        now: dt.datetime,
        report: RoundReport,
    ) -> None:
        first = group.first
        nick = next(
            (n for n in first.destinations if n in online and _held_by(holders, n, group.user)),
            None,
        )
        if nick is None:
            self._hold_offline(group, now, report)
            return
        rows = group.rows
        if group.digest:
            if first.lane == "digest" or first.hold_reason != "quiet_hours":
                with self.database.begin() as session:
                    seen = set(group.ids)
                    rows = rows + [
                        r
                        for r in outbox.claim_group(
                            session,
                            worker=self.worker,
                            user_id=first.user_id,
                            context=IRC,
                            lease_seconds=self.config.delivery.claim_lease_seconds,
                            now=now,
                            digest_lane=(first.lane == "digest") if first.schedule.active else None,
                        )
                        if r.id not in seen
                    ]
            self._send_lines(nick, [(digest_line(rows), [r.id for r in rows])], report)
            return
        # What the collapsed line stands for can be read later, one by one.
        lines = burst_lines(rows, self.config.bot.burst, hint="'fmn recent' lists them")
        self._send_lines(nick, lines, report)

    def _send_lines(
        self, nick: str, batches: list[tuple[str, list[int]]], report: RoundReport
    ) -> None:
        for index, (line, ids) in enumerate(batches):
            if not self._pace():
                with self.database.begin() as session:
                    rest = [i for _, batch in batches[index:] for i in batch]
                    report.released += outbox.release(session, rest, worker=self.worker)
                return
            if self.link.send(nick, line):
                with self.database.begin() as session:
                    report.sent += outbox.mark_sent(session, ids)
                report.lines += 1
            else:
                until = self.clock() + dt.timedelta(seconds=SEND_RETRY_SECONDS)
                rest = [i for _, batch in batches[index:] for i in batch]
                self._postpone(
                    rest, until, "the IRC connection refused the line", report, reason="retry"
                )
                return

    def _pace(self) -> bool:
        delay = self.pacer.delay()
        if not self._sleep(delay):
            return False
        self.pacer.take()
        return True

    def _hold_offline(self, group: _LaneRows, now: dt.datetime, report: RoundReport) -> None:
        hold = dt.timedelta(minutes=self.config.bot.offline_hold_minutes)
        # The allowance counts from the first look-up that found the nick offline for
        # the row (now, for a row that was not waiting for it), not from when the row
        # was made: a row held for a daily digest is older than a day when it is due.
        expired = [r.id for r in group.rows if now - (r.offline_since or now) >= hold]
        waiting = [r.id for r in group.rows if r.id not in expired]
        if expired:
            reason = (
                f"the recipient's IRC nick was not online for "
                f"{self.config.bot.offline_hold_minutes} minutes"
            )
            self._kill(
                _LaneRows(group.user, [r for r in group.rows if r.id in expired]), reason, report
            )
        if waiting:
            until = now + dt.timedelta(seconds=RECHECK_SECONDS)
            with self.database.begin() as session:
                report.postponed += outbox.postpone_offline(
                    session,
                    waiting,
                    until,
                    note="the recipient's IRC nick is not online",
                    now=now,
                    worker=self.worker,
                )

    def _postpone(
        self,
        ids: list[int],
        until: dt.datetime,
        note: str,
        report: RoundReport,
        *,
        reason: str | None = None,
    ) -> None:
        with self.database.begin() as session:
            report.postponed += outbox.postpone(
                session, ids, until, note=note, reason=reason, worker=self.worker
            )

    def _kill(self, group: _LaneRows, reason: str, report: RoundReport) -> None:
        """``dead`` at once, with the reason: retrying cannot help."""
        with self.database.begin() as session:
            dead = outbox.mark_dead(session, group.ids, reason, worker=self.worker)
        report.dead += dead
        if dead:
            # Fewer when another sender took some of the rows after this one's claim ran out.
            self._log_dropped(group, reason, dead)

    def _log_dropped(self, group: _LaneRows, reason: str, count: int | None = None) -> None:
        self.log.info(
            "%d IRC notification(s) of %s dropped: %s",
            len(group.rows) if count is None else count,
            group.user,
            reason,
        )
