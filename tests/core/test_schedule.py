"""fmn_core.schedule: daily digests and quiet hours in real time zones."""

from __future__ import annotations

import datetime as dt

import pytest

from fmn_core.errors import InvalidArgument
from fmn_core.schedule import (
    DigestSchedule,
    QuietHours,
    check_delivery,
    check_local_time,
    check_timezone,
    lane_of,
    next_local_time,
)

UTC = dt.UTC
MAX_WAIT = dt.timedelta(hours=24)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_next_local_time_follows_the_users_zone_and_dst() -> None:
    # Prague is UTC+1 in winter, UTC+2 in summer: 08:00 local moves in UTC.
    assert next_local_time(at("2026-12-05 06:00"), "08:00", "Europe/Prague") == at(
        "2026-12-05 07:00"
    )
    assert next_local_time(at("2026-07-05 06:00"), "08:00", "Europe/Prague") == at(
        "2026-07-06 06:00"
    )
    # Strictly after: at the very moment, the next day's.
    assert next_local_time(at("2026-12-05 07:00"), "08:00", "Europe/Prague") == at(
        "2026-12-06 07:00"
    )
    # Across the March change the local hour stays 08:00.
    assert next_local_time(at("2026-03-28 08:00"), "08:00", "Europe/Prague") == at(
        "2026-03-29 06:00"
    )
    assert next_local_time(at("2026-12-05 12:00"), "09:30", "America/New_York") == at(
        "2026-12-05 14:30"
    )


def test_quiet_hours_span_midnight_and_end_at_the_local_time() -> None:
    quiet = QuietHours("22:00", "07:00", "Europe/Prague")
    # 23:30 Prague (22:30 UTC): quiet until 07:00 Prague = 06:00 UTC next day.
    assert quiet.end_if_quiet(at("2026-12-05 22:30")) == at("2026-12-06 06:00")
    assert quiet.end_if_quiet(at("2026-12-06 05:59")) == at("2026-12-06 06:00")
    assert quiet.end_if_quiet(at("2026-12-06 06:00")) is None
    assert quiet.end_if_quiet(at("2026-12-05 12:00")) is None
    daytime = QuietHours("12:00", "13:00", "UTC")
    assert daytime.end_if_quiet(at("2026-12-05 12:30")) == at("2026-12-05 13:00")
    assert daytime.end_if_quiet(at("2026-12-05 13:00")) is None


def test_digest_schedule_is_due_at_the_first_of_its_conditions() -> None:
    oldest = at("2026-12-05 10:00")
    daily = DigestSchedule(at="18:00", timezone="Europe/Prague")
    assert daily.active
    assert daily.due_at(oldest, count_only_max_wait=MAX_WAIT) == at("2026-12-05 17:00")
    both = DigestSchedule(minutes=60, at="18:00", timezone="Europe/Prague")
    assert both.due_at(oldest, count_only_max_wait=MAX_WAIT) == at("2026-12-05 11:00")
    count_only = DigestSchedule(count=5)
    assert count_only.due_at(oldest, count_only_max_wait=MAX_WAIT) == oldest + MAX_WAIT
    assert not DigestSchedule().active


def test_lanes_digest_only_when_the_context_has_a_digest() -> None:
    daily = DigestSchedule(at="08:00")
    assert lane_of("digest", False, daily) == "digest"
    assert lane_of("digest", True, daily) == "digest"
    assert lane_of("digest", False, DigestSchedule()) == "instant"
    assert lane_of("instant", True, daily) == "urgent"
    assert lane_of("instant", False, daily) == "instant"


@pytest.mark.parametrize("bad", ["24:00", "8", "08:60", "", "noon", None, 800, "08:00:00"])
def test_local_times_are_checked(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="HH:MM") as caught:
        check_local_time(bad, "at")
    assert caught.value.argument == "at"


def test_local_times_are_normalized() -> None:
    assert check_local_time("8:05", "at") == "08:05"
    assert check_local_time("23:59", "at") == "23:59"


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "../etc/passwd", None, "Europe/" + "x" * 80])
def test_time_zones_must_be_iana_names(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="IANA time zone"):
        check_timezone(bad, "timezone")


def test_known_time_zones_pass() -> None:
    assert check_timezone("Europe/Prague", "timezone") == "Europe/Prague"
    assert check_timezone("UTC", "timezone") == "UTC"


def test_delivery_modes_are_checked() -> None:
    assert check_delivery("digest") == "digest"
    with pytest.raises(InvalidArgument, match="'instant' or 'digest'"):
        check_delivery("hourly")
