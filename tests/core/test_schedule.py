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


def test_quiet_hours_end_at_the_first_end_when_the_clock_goes_back() -> None:
    # New York, 1 November 2026: 01:00-02:00 comes twice (05:00-06:00 UTC as EDT,
    # 06:00-07:00 UTC as EST). A window ending at 01:30 ends at the first 01:30.
    quiet = QuietHours("22:00", "01:30", "America/New_York")
    assert quiet.end_if_quiet(at("2026-11-01 05:10")) == at("2026-11-01 05:30")
    # The second 01:10 is after the window: not held until 01:30 the next day.
    assert quiet.end_if_quiet(at("2026-11-01 06:10")) is None
    # Lord Howe goes back half an hour (02:00 to 01:30 at 15:00 UTC on 4 April).
    lord_howe = QuietHours("23:00", "01:45", "Australia/Lord_Howe")
    assert lord_howe.end_if_quiet(at("2026-04-04 14:40")) == at("2026-04-04 14:45")
    assert lord_howe.end_if_quiet(at("2026-04-04 15:05")) is None


def test_quiet_hours_hold_through_the_repeated_hour() -> None:
    # Prague, 25 October 2026: 03:00 CEST becomes 02:00 CET at 01:00 UTC. The window
    # began at the first 02:30 (00:30 UTC); the second 02:10 is still inside it.
    quiet = QuietHours("02:30", "07:00", "Europe/Prague")
    assert quiet.end_if_quiet(at("2026-10-25 00:40")) == at("2026-10-25 06:00")
    assert quiet.end_if_quiet(at("2026-10-25 01:10")) == at("2026-10-25 06:00")
    assert quiet.end_if_quiet(at("2026-10-25 00:20")) is None


def test_quiet_hours_ending_in_a_skipped_hour_end_when_the_clock_jumps() -> None:
    # New York, 8 March 2026: 02:00 EST becomes 03:00 EDT at 07:00 UTC; 02:30 never
    # comes, the window ends when the clock jumps past it.
    quiet = QuietHours("22:00", "02:30", "America/New_York")
    assert quiet.end_if_quiet(at("2026-03-08 06:50")) == at("2026-03-08 07:00")
    assert quiet.end_if_quiet(at("2026-03-08 07:10")) is None
    # A start in the skipped hour: the window begins at the jump.
    late = QuietHours("02:30", "08:00", "America/New_York")
    assert late.end_if_quiet(at("2026-03-08 06:50")) is None
    assert late.end_if_quiet(at("2026-03-08 07:00")) == at("2026-03-08 12:00")


def test_quiet_hours_that_start_and_end_alike_never_hold() -> None:
    # Refused when stored; a row written some other way must not hold mail for ever.
    assert QuietHours("22:00", "22:00", "UTC").end_if_quiet(at("2026-12-05 12:00")) is None


def test_a_time_zone_this_machine_no_longer_knows_reads_as_utc() -> None:
    # tzdata dropped US/Pacific-New in 2020: a name stored before must not break delivery.
    quiet = QuietHours("22:00", "07:00", "US/Pacific-New")
    assert quiet.end_if_quiet(at("2026-12-05 23:00")) == at("2026-12-06 07:00")
    daily = DigestSchedule(at="18:00", timezone="Mars/Base")
    assert daily.due_at(at("2026-12-05 10:00"), count_only_max_wait=MAX_WAIT) == at(
        "2026-12-05 18:00"
    )
