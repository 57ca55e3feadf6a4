"""Issue 13's "done when", end to end: ngircd, the Limnoria bot, the daemon's senders
and a real SMTP server (aiosmtpd).

A user sets everything up by talking to the bot on IRC: an instant, urgent email
filter for failed builds of their package and a digest filter for their group's
packages, a daily digest at 18:00 in Europe/Prague, and an email address
confirmed with the code the daemon mails. Bus messages go through
``fmn-daemon replay`` (the ingest pipeline). The failed build is mailed within
seconds; the rest waits (``fmn pending`` says why and until when) and arrives
once, as one digest, when the daemon's clock reaches 18:00 in Prague. The
daemon's clock is injected (no sleeping); the time zones are real.

The IRC conversation is written to ``$FMN_TRANSCRIPT`` when that is set
(``docs/transcripts/delivery-modes-bot.txt`` is one such run).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from email.message import Message
from pathlib import Path

import pytest
from daemon.conftest import SmtpServer

from fmn_core.config import SmtpConfig, load_config
from fmn_core.db import Database
from fmn_core.models import utcnow
from fmn_core.schedule import next_local_time
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LiveHub

from .test_irc import Bot, IrcClient, _daemon, _wait_for_bot, bot, fmn_config, ircd  # noqa: F401

pytestmark = pytest.mark.slow

KOSCHEI = (
    '{"body": {"collection": "f41", "collection_name": "Fedora Rawhide", "groups": ["c"], '
    '"koji_instance": "primary", "name": "%s", "new": "%s", "old": "ok", "repo": "f41"}, '
    '"headers": {}, "id": "%s", "topic": "org.fedoraproject.prod.koschei.package.state.change"}'
)


def _text(mail: Message) -> str:
    """A received mail's text, quoted-printable decoded."""
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode("utf-8")


class Clock:
    """The daemon's clock, moved by the test."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Transcript:
    """The IRC conversation as the user saw it."""

    def __init__(self, client: IrcClient) -> None:
        self.client = client
        self.lines: list[str] = []

    def ask(self, text: str) -> str:
        answer = self.client.ask(text)
        self.lines += [f"<{self.client.nick}> {text}", f"<fmnbot> {answer}"]
        return answer

    def note(self, text: str) -> None:
        self.lines.append(f"-- {text}")

    def save(self) -> None:
        target = os.environ.get("FMN_TRANSCRIPT")
        if target:
            Path(target).write_text("\n".join(self.lines) + "\n", encoding="utf-8")


def test_instant_failed_builds_and_a_daily_digest_over_irc_and_smtp(
    bot: Bot,  # noqa: F811
    ircd: int,  # noqa: F811
    fmn_config: Path,  # noqa: F811
    tmp_path: Path,
    smtp_server: SmtpServer,
) -> None:
    config = load_config(str(fmn_config))
    config = config.replace(
        smtp=SmtpConfig(host="127.0.0.1", port=smtp_server.port, timeout_seconds=5)
    )
    db = Database(config)
    clock = Clock(utcnow())
    delivery = Senders(db, config, Metrics(), LiveHub(), clock=clock)

    def drain() -> None:
        asyncio.run(delivery.drain(20))

    tester = IrcClient(ircd, "tester")
    talk = Transcript(tester)
    try:
        _wait_for_bot(tester, bot)
        assert "Added filter" in talk.ask('fmn add-filter email "failed builds"')
        talk.ask('fmn add-rule email "failed builds" package_involved package=rnv')
        assert "urgent" in talk.ask('fmn delivery email urgent "failed builds"')
        assert "Added filter" in talk.ask('fmn add-filter email "group packages"')
        talk.ask('fmn add-rule email "group packages" app_is app=koschei')
        assert "(digest, 1 rule)" in talk.ask('fmn delivery email digest "group packages"')
        assert talk.ask("fmn daily email 18:00 Europe/Prague") == (
            "email: digest daily at 18:00 Europe/Prague."
        )
        assert "confirmation code is on its way" in talk.ask(
            "fmn set-address email alice@example.org"
        )
        drain()  # the daemon mails the code
        (code_mail,) = smtp_server.wait_for(1)
        talk.note(f"the daemon mailed the code: {code_mail.subject}")
        body = _text(code_mail.message)
        # Set on IRC: the mail says how to confirm there, and nothing about the TUI.
        assert "a private message:  fmn confirm " in body and "TUI" not in body
        code = body.split("fmn confirm ", 1)[1].split()[0]
        assert talk.ask(f"fmn confirm {code}").startswith("Confirmed: email delivers to ")

        messages = tmp_path / "messages.jsonl"
        messages.write_text(
            "\n".join(
                [
                    KOSCHEI % ("rnv", "failing", "e2e-rnv-failed"),
                    KOSCHEI % ("git", "failing", "e2e-git"),
                    KOSCHEI % ("gcc", "ok", "e2e-gcc"),
                ]
            )
            + "\n",
            encoding="utf-8",
        )
        assert "3 notifications written" in _daemon(fmn_config, "replay", str(messages))
        talk.note("fmn-daemon replay: rnv failing, git failing, gcc back to normal")
        started = time.monotonic()
        clock.now = utcnow()
        drain()
        mails = smtp_server.wait_for(2)
        assert time.monotonic() - started < 10  # within seconds
        instant = _text(mails[1].message)
        assert "rnv" in mails[1].subject and "failed builds" in instant
        talk.note(f"mailed at once ({clock.now:%H:%M} UTC): {mails[1].subject}")

        due = next_local_time(clock.now, "18:00", "Europe/Prague")
        pending = talk.ask("fmn pending")
        assert pending.startswith("2 notifications waiting: ")
        assert f"held for the next digest until {due:%Y-%m-%d %H:%M} UTC" in pending

        clock.now = due - dt.timedelta(minutes=1)
        drain()
        assert len(smtp_server.messages) == 2
        clock.now = due
        drain()
        mails = smtp_server.wait_for(3)
        assert mails[2].subject.startswith("[fmn] 2 notifications")
        talk.note(f"the daemon's clock reaches {due:%Y-%m-%d %H:%M} UTC: {mails[2].subject}")
        clock.now = due + dt.timedelta(days=1)
        drain()
        assert len(smtp_server.messages) == 3  # once
        assert "Nothing is waiting" in talk.ask("fmn pending")
        talk.ask("fmn recent email")
        talk.save()
    except AssertionError:
        print(bot.log_tail())
        raise
    finally:
        tester.close()
        db.dispose()
