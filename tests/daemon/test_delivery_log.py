"""What the senders log of what they send: a summary a minute, not a line a mail.

At 500 mails a second a line per mail is 15,000 lines in 30 s, past journald's
default limit for a service (10,000 in 30 s), which then drops every line of the
daemon's for the rest of the interval, its errors among them.
"""

from __future__ import annotations

import logging
import threading

import pytest

from daemon.conftest import SmtpServer
from daemon.test_delivery import _email_rows, drain, make_config
from fmn_core.db import Database
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.outcomes import SentTally
from fmn_daemon.transports.live import LiveHub

OUTCOMES = "fmn_daemon.outcomes"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == OUTCOMES and r.levelno == level]


def test_many_mails_sent_make_one_summary_line_and_no_line_each(
    db: Database, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=OUTCOMES)
    _email_rows(db, 12)
    assert drain(Senders(db, make_config(db, smtp_server), Metrics(), LiveHub())) == 12
    assert len(smtp_server.wait_for(12)) == 12
    # The senders stopped (drain closes them): what they sent is summed up once.
    (line,) = _lines(caplog, logging.INFO)
    assert line.startswith("delivery: sent 12 notifications in the last ")
    assert line.endswith(" s (email 12)")


def test_each_mail_still_has_its_line_at_debug(
    db: Database, smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=OUTCOMES)
    _email_rows(db, 3)
    assert drain(Senders(db, make_config(db, smtp_server), Metrics(), LiveHub())) == 3
    each = [line for line in _lines(caplog, logging.DEBUG) if line.startswith("delivery: sent ")]
    assert len(each) == 3
    assert all(" to u" in line and "/email (1 rows)" in line for line in each)


def test_the_summary_comes_once_a_minute_by_context_with_digests_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=OUTCOMES)
    clock = Clock()
    tally = SentTally(every=60.0, clock=clock)
    tally.add("email", 1, digest=False)
    tally.add("irc", 1, digest=False)
    clock.now += 30
    tally.add("email", 5, digest=True)
    tally.flush(due_only=True)  # an idle check before the minute is over: nothing yet
    assert _lines(caplog, logging.INFO) == []
    clock.now += 31
    tally.add("push", 2, digest=False)  # the minute is over: this one is in the line
    assert _lines(caplog, logging.INFO) == [
        "delivery: sent 9 notifications in the last 61 s (email 6, irc 1, push 2; 1 of them "
        "digests)"
    ]
    # Counted afresh from there; an idle check once that minute is over logs it.
    tally.add("email", 1, digest=False)
    clock.now += 60
    tally.flush(due_only=True)
    assert _lines(caplog, logging.INFO)[1:] == [
        "delivery: sent 1 notifications in the last 60 s (email 1)"
    ]
    tally.flush()  # nothing counted since: no line
    assert len(_lines(caplog, logging.INFO)) == 2


def test_the_tally_counts_every_thread_s_sends(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=OUTCOMES)
    tally = SentTally(every=3600.0)

    def send() -> None:
        for _ in range(2000):
            tally.add("email", 1, digest=False)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.flush()
    (line,) = _lines(caplog, logging.INFO)
    assert line.startswith("delivery: sent 16,000 notifications in the last ")
    assert line.endswith(" s (email 16,000)")
