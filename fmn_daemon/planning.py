"""Deciding on a claimed batch before anything is sent: one round's plan.

The senders (:mod:`fmn_daemon.delivery`) claim due outbox rows; this module groups
them per (user, context, lane) and asks the delivery policy what each group needs
(``fmn_core.delivery_policy.decide``): rows that are not sent (muted, turned off, no
confirmed destination, rate limited) are settled here; the rest become jobs, one
per row, a digest of a group's rows, or in a chat context the rows above a user's
burst collapsed into one line.

A plan is made in the claim's own transaction with no savepoints (the usual round),
or ``isolated``: each group in its own savepoint, so a group whose planning raises
costs only its own rows, marked ``dead`` with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from fmn_core import delivery_policy, outbox
from fmn_core.chat import CHAT_CONTEXTS, split_burst
from fmn_core.config import Config
from fmn_core.outbox import ClaimedNotification
from fmn_core.text import for_log

from .failures import describe, is_transient
from .metrics import Metrics
from .outcomes import CarriesRows

__all__ = ["Job", "Round", "RoundPlanner"]

log = logging.getLogger(__name__)

#: Stats for rows only checked against quiet hours (``decide`` reads none then).
_NO_STATS = delivery_policy.GroupStats(waiting=0, oldest_waiting=None, sent_last_hour=0)


@dataclass(frozen=True)
class Job(CarriesRows):
    """One message to send: a single row, or a digest of a group's rows (or, in a
    chat context, the rows above a user's burst collapsed into one line)."""

    rows: tuple[ClaimedNotification, ...]
    digest: bool
    collapsed: bool = False


@dataclass
class Round:
    """What one round decided: jobs to send, and how many rows were settled without sending."""

    jobs: list[Job]
    settled: int


class RoundPlanner:
    """Plans claimed batches for one sender process (its worker name and clock)."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        worker: str,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.worker = worker
        self.clock = clock

    def plan(
        self,
        session: Session,
        claimed: Sequence[ClaimedNotification],
        inflight: Mapping[tuple[int, str], int],
        *,
        isolated: bool,
    ) -> Round:
        """Settle what needs no sending; group the rest into jobs (one transaction).

        ``inflight`` counts each (user id, context)'s rows being sent right now.
        ``isolated``: each group in its own savepoint, a group that fails marked
        dead; otherwise (the usual round: two statements fewer per group) the
        first failure raises.
        """
        now = self.clock()
        # A (user, context) pair travels in lanes (instant, urgent, digest: see
        # fmn_core.schedule), each decided on its own.
        groups: dict[tuple[int, str, str], list[ClaimedNotification]] = {}
        for row in claimed:
            groups.setdefault(row.lane_key, []).append(row)
        if not isolated:
            counts: Counter[str] = Counter()
            every = delivery_policy.group_stats(session, groups, now=now)
            jobs: list[Job] = []
            settled = 0
            for key, rows in groups.items():
                settled += self._plan_group(
                    session,
                    key,
                    rows,
                    _with_inflight(every[key], rows, inflight),
                    now,
                    jobs,
                    counts,
                )
            # Counted once the whole plan stands (a failure redoes it isolated).
            for name, count in counts.items():
                self.metrics.inc(name, count)
            return Round(jobs=jobs, settled=settled)
        stats: Mapping[delivery_policy.GroupKey, Any] | None
        try:
            with session.begin_nested():
                stats = delivery_policy.group_stats(session, groups, now=now)
        except Exception as exc:
            if is_transient(exc):
                raise
            stats = None  # read again per group below, so a failure costs one group only
        jobs = []
        settled = 0
        for key, rows in groups.items():
            try:
                with session.begin_nested():
                    own = stats
                    if own is None:
                        own = delivery_policy.group_stats(session, [key], now=now)
                    counts = Counter()
                    settled += self._plan_group(
                        session,
                        key,
                        rows,
                        _with_inflight(own[key], rows, inflight),
                        now,
                        jobs,
                        counts,
                    )
                for name, count in counts.items():
                    self.metrics.inc(name, count)
            except Exception as exc:
                if is_transient(exc):
                    raise
                reason = f"cannot be planned: {describe(exc)}"
                outbox.mark_dead(
                    session, [row.id for row in rows], reason, now=now, worker=self.worker
                )
                self.metrics.inc("notifications_dead", len(rows))
                log.error(
                    "delivery: message %s for %s/%s: %d rows are dead: %s",
                    for_log(rows[0].message_id),
                    for_log(rows[0].user),
                    rows[0].context,
                    len(rows),
                    for_log(reason, limit=300),
                )
                settled += len(rows)
        return Round(jobs=jobs, settled=settled)

    def _plan_group(
        self,
        session: Session,
        key: tuple[int, str, str],
        rows: list[ClaimedNotification],
        stats: delivery_policy.GroupStats,
        now: dt.datetime,
        jobs: list[Job],
        counts: Counter[str],
    ) -> int:
        """Settle or schedule one (user, context) group; how many rows it settled.

        Rows it gives up or fails are added to ``counts`` (metric names).
        """
        delivery = self.config.delivery
        head = rows[0]
        ids = [r.id for r in rows]
        decision = delivery_policy.decide(
            head,
            stats,
            now,
            rate_limit_per_hour=delivery.rate_limit_per_hour,
            waiting_in_claim=len(rows),
        )
        if decision.kind == "send":
            if head.context not in CHAT_CONTEXTS:
                jobs.extend(Job(rows=(row,), digest=False) for row in rows)
                return 0
            # A chat gets at most a burst of lines per user and round, as on IRC.
            singles, collapsed = split_burst(rows, self.config.matrix.burst)
            jobs.extend(Job(rows=(row,), digest=False) for row in singles)
            if collapsed:
                jobs.append(Job(rows=tuple(collapsed), digest=False, collapsed=True))
            return 0
        if decision.kind == "digest":
            jobs.append(self._digest(session, rows, now))
            return 0
        settled = delivery_policy.apply(
            session,
            decision,
            ids,
            max_attempts=delivery.max_attempts,
            now=now,
            worker=self.worker,
        )
        assert settled is not None  # only "send" and "digest" are left to the sender
        counts["notifications_dead"] += settled.dead
        counts["notifications_failed"] += settled.failed
        if decision.kind == "no_destination":
            log.info(
                "delivery: user %s has no confirmed %s address; %d rows wait",
                for_log(head.user),
                head.context,
                len(ids),
            )
        return len(ids)

    def _digest(self, session: Session, rows: list[ClaimedNotification], now: dt.datetime) -> Job:
        """One digest job: the claimed rows plus every other waiting row of their lane.

        Rows released together from quiet hours were all claimed already: only a
        digest lane (or a rate limit) pulls in rows that are not due yet.
        """
        head = rows[0]
        if head.lane != "digest" and head.hold_reason == "quiet_hours":
            return Job(rows=tuple(rows), digest=True)
        more = outbox.claim_group(
            session,
            worker=self.worker,
            user_id=head.user_id,
            context=head.context,
            lease_seconds=self.config.delivery.claim_lease_seconds,
            now=now,
            # With a digest schedule, each lane collects only its own rows.
            digest_lane=(head.lane == "digest") if head.schedule.active else None,
        )
        seen = {r.id for r in rows}
        pulled = [r for r in more if r.id not in seen]
        quiet = [r for r in pulled if r.lane == "instant"]
        if head.lane == "urgent" and quiet:
            # An urgent digest (a rate limit) passes quiet hours; the instant rows it
            # took along must not, so they go back to wait for the window's end.
            decision = delivery_policy.decide(quiet[0], _NO_STATS, now)
            if decision.reason == "quiet_hours":
                delivery_policy.apply(
                    session,
                    decision,
                    [r.id for r in quiet],
                    max_attempts=self.config.delivery.max_attempts,
                    now=now,
                    worker=self.worker,
                )
                pulled = [r for r in pulled if r.lane != "instant"]
        everything = sorted([*rows, *pulled], key=lambda r: (r.created_at, r.id))
        return Job(rows=tuple(everything), digest=True)


def _with_inflight(
    stats: delivery_policy.GroupStats,
    rows: Sequence[ClaimedNotification],
    inflight: Mapping[tuple[int, str], int],
) -> delivery_policy.GroupStats:
    """A group's stats with its rows being sent right now counted as sent."""
    sending = inflight.get(rows[0].group, 0)
    if not sending:
        return stats
    return replace(stats, sent_last_hour=stats.sent_last_hour + sending)
