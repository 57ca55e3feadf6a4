"""Meeting rules (fmn_core.catalog.meetings): meetbot and fedocal."""

from __future__ import annotations

from fmn_core.messages import MessageFacts
from fmn_core.rules import Catalog

from .samples import changed, check, from_corpus


def test_meetbot_meeting_on_channel_normalizes_the_channel(
    rules: Catalog, corpus: list[str], crafted: dict[str, MessageFacts]
) -> None:
    legacy = changed(
        from_corpus(corpus, lambda d: d["topic"] == "org.fedoraproject.prod.meetbot.meeting.start")
    )
    for channel in ("#fedora-meeting-2", "fedora-meeting-2", "#Fedora-Meeting-*"):
        assert check(rules, "meetbot_meeting_on_channel", legacy, channel=channel)
    assert not check(rules, "meetbot_meeting_on_channel", legacy, channel="fedora-meeting")
    assert check(
        rules, "meetbot_meeting_on_channel", crafted["meeting"], channel="fedora-meeting-3"
    )


def test_fedocal_meeting_matches_the_calendar(rules: Catalog, corpus: list[str]) -> None:
    data = from_corpus(corpus, lambda d: d["topic"] == "org.fedoraproject.prod.fedocal.meeting.new")
    message = changed(data)
    assert check(rules, "fedocal_meeting", message, calendar="test_calendar")
    assert check(rules, "fedocal_meeting", message, calendar="Test_Calendar")
    assert not check(rules, "fedocal_meeting", message, calendar="infrastructure")
    calendar_only = changed(data, "org.fedoraproject.prod.fedocal.calendar.update")
    assert not check(rules, "fedocal_meeting", calendar_only, calendar="test_calendar")
