"""Acting from a notification: a real mail's "mute this package" link, followed for real.

The mail comes from the daemon's delivery through a real SMTP server (aiosmtpd);
the link is opened and posted over real HTTP against the daemon's own server; the
next messages go through ingest and delivery again: the one about the muted
package makes no notification, the others still arrive.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from pathlib import Path

import aiohttp
from sqlalchemy import select

from daemon.conftest import SmtpServer, free_port
from fmn_core import preferences
from fmn_core.config import Config, DeliveryConfig, HttpConfig, SmtpConfig
from fmn_core.db import Database, make_engine
from fmn_core.matcher import Matcher
from fmn_core.messages import MessageFacts, facts_of, parse_line
from fmn_core.models import Base, Destination, Notification, Preference, Rule, User, utcnow
from fmn_core.preferences import Actor
from fmn_core.rendering import Links
from fmn_daemon.delivery import Senders
from fmn_daemon.http import start_http
from fmn_daemon.ingest import ingest_batch
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LiveHub

#: Bodhi messages of the corpus: two about tzdata, one about annobin.
TZDATA_FIRST = "6cb3404f-6a5d-595f-b44f-29b9d8cd1131"
TZDATA_NEXT = "df16f1a1-cacd-57b5-907b-62d04c842122"
ANNOBIN = "ce9f052b-2e65-5c33-a4e0-d12011990ec7"


def corpus_message(corpus: list[str], message_id: str) -> MessageFacts:
    for line in corpus:
        if message_id in line:
            facts = facts_of(parse_line(line))
            if facts.id == message_id:
                return facts
    raise AssertionError(f"{message_id} is not in the corpus")


def setup(tmp_path: Path, smtp: SmtpServer) -> tuple[Database, Config]:
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    port = free_port()
    config = Config(
        database_url=url,
        http=HttpConfig(
            host="127.0.0.1", port=port, public_url=f"http://127.0.0.1:{port}", secret_key="k"
        ),
        smtp=SmtpConfig(host="127.0.0.1", port=smtp.port, timeout_seconds=5),
        delivery=DeliveryConfig(senders=1, idle_poll_seconds=0.05),
    )
    db = Database(config, engine)
    with db.begin() as s:
        for name in ("ana", "ben"):
            actor = Actor(name)
            preferences.add_filter(s, actor, "email", "updates")
            preferences.add_rule(s, actor, "email", "updates", "app_is", {"app": "bodhi"})
            user = s.scalars(select(User).where(User.name == name)).one()
            preference = s.scalars(select(Preference).where(Preference.user_id == user.id)).one()
            s.add(Destination(preference=preference, address=f"{name}@example.org", confirmed=True))
    return db, config


def ingest_and_deliver(db: Database, config: Config, *messages: MessageFacts) -> None:
    with db.begin() as session:
        ingest_batch(session, Matcher.load(session), list(messages))
    asyncio.run(Senders(db, config, Metrics(), LiveHub()).drain(20))


def link_in(text: str, title: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith(f"{title}: "):
            return line.strip().split(": ", 1)[1]
    raise AssertionError(text)


async def fetch(method: str, url: str, data: dict[str, str] | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, url, data=data) as response,
    ):
        return response.status, await response.text()


def test_a_mailed_mute_link_stops_that_package_and_nothing_else(
    tmp_path: Path, smtp_server: SmtpServer, corpus: list[str]
) -> None:
    db, config = setup(tmp_path, smtp_server)
    ingest_and_deliver(db, config, corpus_message(corpus, TZDATA_FIRST))
    mails = smtp_server.wait_for(2)
    (ana_mail,) = [m for m in mails if m.rcpt_tos == ["ana@example.org"]]
    (ben_mail,) = [m for m in mails if m.rcpt_tos == ["ben@example.org"]]
    text = ana_mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    mute = link_in(text, "Mute this package")
    assert f"fmn why {TZDATA_FIRST}" in text
    ben_text = ben_mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    ben_mute = link_in(ben_text, "Mute this package")

    async def follow() -> None:
        server = await start_http(config, db, Metrics(), LiveHub())
        try:
            status, page = await fetch("GET", mute)
            assert status == 200, page
            # GET only shows what would change.
            assert (
                "`not package_involved package=tzdata` added to filter &#x27;updates&#x27;" in page
            )
            assert "method='post'" in page
            with db.begin() as session:
                assert not session.scalars(select(Rule).where(Rule.negated.is_(True))).all()
            status, page = await fetch("POST", mute, {"days": "30"})
            assert status == 200, page
            assert "fmn wrote:" in page and "expiring on" in page
        finally:
            await server.cleanup()

    asyncio.run(follow())
    with db.begin() as session:
        ana = preferences.get_filter(session, Actor("ana"), "email", "updates")
        ben = preferences.get_filter(session, Actor("ben"), "email", "updates")
    assert [r.text for r in ana.rules] == [
        "app_is app=bodhi",
        "not package_involved package=tzdata",
    ]
    expires = ana.rules[1].expires_at
    assert expires is not None and dt.timedelta(days=29) < expires - utcnow() <= dt.timedelta(
        days=30
    )
    assert [r.text for r in ben.rules] == ["app_is app=bodhi"]  # ana's link touched only ana

    smtp_server.messages.clear()
    ingest_and_deliver(
        db, config, corpus_message(corpus, TZDATA_NEXT), corpus_message(corpus, ANNOBIN)
    )
    mails = smtp_server.wait_for(3)
    with db.begin() as session:
        rows = {(n.user.name, n.message_id) for n in session.scalars(select(Notification))}
    assert ("ana", TZDATA_NEXT) not in rows  # muted: no notification at all
    assert ("ana", ANNOBIN) in rows and ("ben", TZDATA_NEXT) in rows
    assert sorted(m.rcpt_tos[0] for m in mails) == [
        "ana@example.org",
        "ben@example.org",
        "ben@example.org",
    ]

    # Ben's own link still works for ben; after he withdraws his links, it is refused.
    links = Links.from_config(config)

    async def refusals() -> None:
        server = await start_http(config, db, Metrics(), LiveHub())
        try:
            # A link made for ana, expired.
            expired = links.action_url(
                links.action_token(
                    "ana", "email", TZDATA_FIRST, "mute-app", utcnow() - dt.timedelta(minutes=1), 0
                )
            )
            status, page = await fetch("POST", expired)
            assert status == 410 and "expired" in page
            # Ana's token with ben's name put in: the signature no longer holds.
            token = mute.rsplit("/", 1)[1]
            payload, signature = token.split(".")
            forged = _b64(_unb64(payload).replace(b"ana\0", b"ben\0", 1)) + "." + signature
            status, _ = await fetch("POST", links.action_url(forged))
            assert status == 404
            # A genuine link for carol, who got no notification for the message.
            other = links.action_url(
                links.action_token(
                    "carol", "email", TZDATA_FIRST, "mute-app", utcnow() + dt.timedelta(days=1), 0
                )
            )
            status, page = await fetch("POST", other)
            assert status == 410
            # Ben changes his mind: every link he was sent is refused from now on.
            with db.begin() as session:
                preferences.revoke_action_links(session, Actor("ben"))
            status, page = await fetch("GET", ben_mute)
            assert status == 410 and "withdrawn" in page
            status, page = await fetch("POST", ben_mute)
            assert status == 410
        finally:
            await server.cleanup()

    asyncio.run(refusals())
    with db.begin() as session:
        ben = preferences.get_filter(session, Actor("ben"), "email", "updates")
        ana = preferences.get_filter(session, Actor("ana"), "email", "updates")
    assert [r.text for r in ben.rules] == ["app_is app=bodhi"]
    assert len(ana.rules) == 2


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_pause_and_digest_actions_say_what_they_do(
    tmp_path: Path, smtp_server: SmtpServer, corpus: list[str]
) -> None:
    db, config = setup(tmp_path, smtp_server)
    ingest_and_deliver(db, config, corpus_message(corpus, TZDATA_FIRST))
    with db.begin() as session:
        written = preferences.act_on_notification(
            session, Actor("ana"), TZDATA_FIRST, "pause-filter"
        )
        assert len(written) == 1 and written[0].startswith("filter 'updates' (email) paused until")
        plan = preferences.plan_action(session, Actor("ana"), TZDATA_FIRST, "digest")
        assert not plan.unavailable
        assert plan.changes == (
            "filter 'updates' (email) now sends its matches to the email digest",
        )
        assert (
            preferences.get_filter(session, Actor("ana"), "email", "updates").delivery == "instant"
        )
        written = preferences.act_on_notification(session, Actor("ana"), TZDATA_FIRST, "digest")
        assert written == list(plan.changes)
        assert (
            preferences.get_filter(session, Actor("ana"), "email", "updates").delivery == "digest"
        )
    smtp_server.messages.clear()
    ingest_and_deliver(db, config, corpus_message(corpus, ANNOBIN))
    mails = smtp_server.wait_for(1)
    assert [m.rcpt_tos for m in mails] == [["ben@example.org"]]  # ana's filter is paused

    # Seven days on, the matcher resumes it by itself.
    with db.begin() as session:
        matcher = Matcher.load(session)
        assert not any(
            r.user == "ana" for r in matcher.recipients(corpus_message(corpus, TZDATA_NEXT))
        )
        matcher.clock = lambda: utcnow() + dt.timedelta(days=7, minutes=1)
        assert matcher.apply_changes(session) >= 1
        assert any(r.user == "ana" for r in matcher.recipients(corpus_message(corpus, TZDATA_NEXT)))
