"""Meetings: meetbot's IRC and Matrix meetings, and Fedocal's calendars."""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..messages import MessageFacts
from ..rules import IndexHint, Parameter, RuleContext, rule
from .hints import FEDORA, RANK_TOPIC, in_topics, topics
from .reading import body_text

__all__ = [
    "fedocal_meeting",
    "meetbot_meeting_on_channel",
]


_MEETBOT = topics(FEDORA, "meetbot.meeting.start", "meetbot.meeting.complete")
_FEDOCAL_MEETING = topics(
    FEDORA,
    "fedocal.meeting.new",
    "fedocal.meeting.update",
    "fedocal.meeting.delete",
    "fedocal.meeting.reminder",
)


def _channel(value: str) -> str:
    return value.strip().lstrip("#").lower()


@rule(
    "Meeting in channel",
    Parameter(
        "channel",
        "an IRC channel or Matrix room, e.g. #fedora-meeting; * and ? match any text",
        kind="glob",
    ),
    hint=IndexHint("topic", in_topics(_MEETBOT), RANK_TOPIC),
)
def meetbot_meeting_on_channel(message: MessageFacts, context: RuleContext, channel: str) -> bool:
    """A meeting started or ended in this channel (the leading # is optional)."""
    if message.topic not in _MEETBOT:
        return False
    # meetbot-messages calls it "location"; the fedmsg-era bot sent "channel".
    where = body_text(message.body, "location") or body_text(message.body, "channel")
    return where is not None and fnmatchcase(_channel(where), _channel(channel))


@rule(
    "Fedocal meeting",
    Parameter("calendar", "a Fedora calendar's name, e.g. infrastructure", kind="text"),
    hint=IndexHint("topic", in_topics(_FEDOCAL_MEETING), RANK_TOPIC),
)
def fedocal_meeting(message: MessageFacts, context: RuleContext, calendar: str) -> bool:
    """Meetings of this Fedora calendar created, changed, deleted or about to start."""
    if message.topic not in _FEDOCAL_MEETING:
        return False
    wanted = calendar.strip().casefold()
    names = (
        body_text(message.body, "calendar", "calendar_name"),
        body_text(message.body, "meeting", "calendar_name"),
    )
    return any(name is not None and name.strip().casefold() == wanted for name in names)
