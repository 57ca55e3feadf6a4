"""When notifications travel: delivery modes, daily digests and quiet hours.

Pure functions and value objects, no I/O: the delivery policy
(``fmn_core.delivery_policy.decide``) asks them when a held row is due, and the
write path asks them to check what a user typed.

- Each filter says how its matches travel (:data:`DELIVERY_MODES`): ``instant``
  (at once) or ``digest`` (they join the context's next digest). A ``digest``
  filter in a context without a digest schedule sends at once: there is no
  digest to join, so turning a digest off releases what it held.
- A context's digest (:class:`DigestSchedule`) goes out every N minutes, after K
  notifications, and/or daily at a local time in an IANA time zone, whichever
  comes first.
- Quiet hours (:class:`QuietHours`) hold instant notifications that are not
  urgent until the local window ends; the window may span midnight.

Local times are wall-clock times in the user's zone (``zoneinfo``): a daily
digest at 08:00 in Europe/Prague is at 07:00 UTC in winter and 06:00 UTC in
summer. A local time that does not exist on a given day (a DST gap) resolves to
the time the same wall-clock reading has after the gap (PEP 495, ``fold=0``).
A zone name this machine no longer knows (tzdata dropped it after it was stored)
reads as UTC, so the user's notifications still go out, at UTC times.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import zoneinfo
from dataclasses import dataclass
from typing import Final, Literal

from .errors import InvalidArgument

__all__ = [
    "DELIVERY_MODES",
    "HOLD_REASONS",
    "DigestSchedule",
    "Lane",
    "QuietHours",
    "check_delivery",
    "check_local_time",
    "check_timezone",
    "lane_of",
    "next_local_time",
]

#: How a filter's matches travel.
DELIVERY_MODES: Final = ("instant", "digest")

#: Why a waiting notification waits (``Notification.hold_reason``), see
#: ``fmn_core.wording.waiting_reason``.
HOLD_REASONS: Final = (
    "muted",
    "quiet_hours",
    "digest",
    "rate_limit",
    "no_address",
    "offline",
    "retry",
)

#: Which queue a claimed row travels in: the context's digest, instant, or
#: instant and urgent (through quiet hours).
Lane = Literal["digest", "instant", "urgent"]

log = logging.getLogger(__name__)

_TIME_RE = re.compile(r"(?P<hour>[0-2]?\d):(?P<minute>[0-5]\d)")


def check_delivery(value: object, what: str = "delivery") -> str:
    """``instant`` or ``digest``, or ``InvalidArgument`` naming ``what``."""
    if value not in DELIVERY_MODES:
        raise InvalidArgument(
            f"{what} must be 'instant' or 'digest', not {str(value)[:20]!r}.", argument=what
        )
    assert isinstance(value, str)
    return value


def check_local_time(value: object, what: str) -> str:
    """A local time as ``HH:MM`` (24-hour clock), normalized to two-digit hours."""
    match = _TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match["hour"]) > 23:
        raise InvalidArgument(
            f"{what} must be a time of day as HH:MM (24-hour clock, like 08:30), "
            f"not {str(value)[:20]!r}.",
            argument=what,
        )
    return f"{int(match['hour']):02d}:{match['minute']}"


def check_timezone(value: object, what: str, *, label: str | None = None) -> str:
    """An IANA time zone name (``Europe/Prague``, ``UTC``) this machine knows.

    ``label`` names the setting in the refusal when ``what`` (the argument's name)
    would not say which of a context's two time zones was wrong.
    """
    if isinstance(value, str) and 0 < len(value) <= 64 and ".." not in value:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
        else:
            return value
    raise InvalidArgument(
        f"{label or what} must be an IANA time zone name like Europe/Prague or "
        "America/New_York, "
        f"not {str(value)[:40]!r}.",
        argument=what,
    )


def _clock(value: str) -> dt.time:
    hour, minute = value.split(":")
    return dt.time(int(hour), int(minute))


@functools.cache
def _zone(name: str) -> dt.tzinfo:
    """The zone ``name``, or UTC when this machine does not know it.

    Names are checked when stored, but tzdata can drop one later (``US/Pacific-New``
    went in 2020): raising here would make every held row of the user unplannable,
    and the daemon marks such rows dead.
    """
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        log.warning("schedule: unknown time zone %r, using UTC", name[:64])
        return dt.UTC


def _readings(day: dt.date, wanted: dt.time, zone: dt.tzinfo) -> list[dt.datetime]:
    """The moments (UTC) on local ``day`` when the clock in ``zone`` reaches ``wanted``.

    One on most days; two when the hour repeats (DST ends); in a skipped hour (DST
    starts), the moment the clock jumps past ``wanted``.
    """
    first = dt.datetime.combine(day, wanted, tzinfo=zone).astimezone(dt.UTC)
    second = dt.datetime.combine(day, wanted.replace(fold=1), tzinfo=zone).astimezone(dt.UTC)
    if first <= second:
        return [first] if first == second else [first, second]
    # A gap: ``second`` (the new offset) lies before the change, ``first`` (the old
    # offset) after it; the change itself is the moment the clock passes ``wanted``.
    before, after = second, first
    changed = after.astimezone(zone).utcoffset()
    while after - before > dt.timedelta(seconds=1):
        middle = before + (after - before) // 2
        if middle.astimezone(zone).utcoffset() == changed:
            after = middle
        else:
            before = middle
    return [after]


def next_local_time(after: dt.datetime, at: str, timezone: str) -> dt.datetime:
    """The first moment strictly after ``after`` when the clock in ``timezone`` reads ``at``.

    Returned in UTC. Computed on wall-clock dates, so a DST change between the two
    days does not shift the local hour.
    """
    zone = _zone(timezone)
    local = after.astimezone(zone)
    wanted = _clock(at)
    day = local.date()
    for _ in range(3):
        candidate = dt.datetime.combine(day, wanted, tzinfo=zone).astimezone(dt.UTC)
        if candidate > after:
            return candidate
        day += dt.timedelta(days=1)
    raise AssertionError("a local time recurs within three days")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily local window (``start`` to ``end``, ``HH:MM``) in ``timezone``."""

    start: str
    end: str
    timezone: str

    def end_if_quiet(self, now: dt.datetime) -> dt.datetime | None:
        """When the window ``now`` falls in ends (UTC), or None outside the window.

        A window runs from the moment the clock reads ``start`` to the next moment it
        reads ``end``, in real time: when DST ends and the clock goes back an hour,
        02:10 after 02:30 is still inside a 02:30-07:00 window, and a window ending
        at 01:30 ends at the first 01:30, not a day after the second. An end in a
        skipped hour comes when the clock jumps past it.
        """
        zone = _zone(self.timezone)
        start, end = _clock(self.start), _clock(self.end)
        if start == end:  # refused when stored; never a window that never ends
            return None
        today = now.astimezone(zone).date()
        days = [today + dt.timedelta(days=k) for k in (-2, -1, 0, 1)]
        began = max(
            (m for day in days[:3] for m in _readings(day, start, zone) if m <= now), default=None
        )
        if began is None:  # pragma: no cover - yesterday's start is always before now
            return None
        until = min(m for day in days for m in _readings(day, end, zone) if m > began)
        return until if until > now else None


@dataclass(frozen=True, slots=True)
class DigestSchedule:
    """When a context's digest goes out: every ``minutes``, after ``count``, and/or at ``at``."""

    minutes: int = 0
    count: int = 0
    at: str | None = None
    timezone: str = "UTC"

    @property
    def active(self) -> bool:
        """Whether the context collects digests at all."""
        return self.minutes > 0 or self.count > 0 or self.at is not None

    def due_at(self, oldest: dt.datetime, *, count_only_max_wait: dt.timedelta) -> dt.datetime:
        """When a digest whose oldest row is ``oldest`` is due by time (the count aside).

        With only a count, a lone row waits at most ``count_only_max_wait``.
        """
        times = []
        if self.minutes > 0:
            times.append(oldest + dt.timedelta(minutes=self.minutes))
        if self.at is not None:
            times.append(next_local_time(oldest, self.at, self.timezone))
        if not times:
            times.append(oldest + count_only_max_wait)
        return min(times)


def lane_of(delivery: str, urgent: bool, schedule: DigestSchedule) -> Lane:
    """The lane of a row from its filter's ``delivery`` and ``urgent`` and its context's digest."""
    if delivery == "digest" and schedule.active:
        return "digest"
    return "urgent" if urgent else "instant"
