"""The senders: real SMTP and HTTP receivers, the outbox on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from core.test_outbox import add_message, add_notification, add_user, state_of
from hostile_http import HostileServer
from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError

from daemon.conftest import WITH_JSON, CountingServer, PushReceiver, SmtpServer, free_port
from daemon.test_push import answering, drip_body, ntfy_url
from daemon.test_transport_pacing import Held
from fmn_core import outbox, preferences
from fmn_core.config import Config, DeliveryConfig, HttpConfig, PushConfig, SmtpConfig
from fmn_core.db import Database, make_engine
from fmn_core.models import Base, Confirmation, Notification, User, utcnow
from fmn_core.rendering import Links, Rendered
from fmn_daemon.delivery import NO_ADDRESS_ERROR, RATE_LIMIT_DIGEST_MINUTES, Senders
from fmn_daemon.failures import is_transient
from fmn_daemon.metrics import Metrics
from fmn_daemon.outcomes import Outcome, OutcomeRecorder
from fmn_daemon.transports import Transport, TransportError
from fmn_daemon.transports.email import EmailTransport
from fmn_daemon.transports.live import LiveHub
from fmn_daemon.transports.push import SEND_DEADLINE_TIMEOUTS


def make_config(db: Database, smtp: SmtpServer | None = None, **delivery: Any) -> Config:
    delivery.setdefault("senders", 1)  # the PostgreSQL fixture shares one connection
    delivery.setdefault("idle_poll_seconds", 0.05)
    return db.config.replace(
        smtp=SmtpConfig(
            host="127.0.0.1", port=smtp.port if smtp else free_port(), timeout_seconds=5
        ),
        push=PushConfig(allowed_schemes=WITH_JSON, allow_private_hosts=True, timeout_seconds=5),
        http=HttpConfig(public_url="https://fmn.example.org", secret_key="k"),
        delivery=DeliveryConfig(**delivery),
    )


def drain(delivery: Senders, timeout: float = 20) -> int:
    return asyncio.run(delivery.drain(timeout))


def sent_mail_subjects(server: SmtpServer) -> list[str]:
    return [m.subject for m in server.messages]


def test_delivery_sends_email_and_marks_it_sent(db: Database, smtp_server: SmtpServer) -> None:
    with db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo")).id
    metrics = Metrics()
    delivery = Senders(db, make_config(db, smtp_server), metrics, LiveHub())
    assert drain(delivery) == 1
    (mail,) = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["jo@example.org"]
    assert mail.subject.startswith("[bodhi] lmacken submitted a buildroot override")
    token = mail.message["List-Unsubscribe"].split("/unsubscribe/")[1].strip("<> \n")
    assert Links.from_config(delivery.config).verify_unsubscribe_token(token) == ("jo", "email")
    row = state_of(db, row_id)
    assert row.state == "sent" and row.sent_at is not None
    assert metrics.get("notifications_sent") == 1
    assert drain(delivery) == 0


def test_delivery_leaves_irc_rows_to_the_bot(db: Database, smtp_server: SmtpServer) -> None:
    with db.begin() as session:
        user = add_user(session, "jo", "irc", ("jo_",))
        row_id = add_notification(session, user, "irc").id
    drain(Senders(db, make_config(db, smtp_server), Metrics(), LiveHub()))
    assert state_of(db, row_id).state == "pending"


def test_delivery_reclaims_rows_a_crashed_sender_left(
    db: Database, smtp_server: SmtpServer
) -> None:
    with db.begin() as session:
        row_id = add_notification(
            session,
            add_user(session, "jo"),
            state="sending",
            claimed_by="crashed",
            claimed_until=utcnow() - dt.timedelta(seconds=1),
        ).id
    drain(Senders(db, make_config(db, smtp_server), Metrics(), LiveHub()))
    assert smtp_server.wait_for(1)
    assert state_of(db, row_id).state == "sent"


def test_delivery_a_mail_sent_again_after_a_crash_keeps_its_message_id(
    db: Database, smtp_server: SmtpServer
) -> None:
    # The server said 250, then the sender died before the row was marked sent: the
    # row is claimed again and mailed again. The two mails carry one Message-ID,
    # which mail clients fold; another notification gets another.
    with db.begin() as session:
        jo = add_user(session, "jo")
        row_id = add_notification(session, jo).id
        add_notification(session, jo, message=add_message(session, id="another-bus-message"))
    config = make_config(db, smtp_server)
    assert drain(Senders(db, config, Metrics(), LiveHub())) == 2
    with db.begin() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == row_id)
            .values(
                state="sending",
                sent_at=None,
                claimed_by="crashed",
                claimed_until=utcnow() - dt.timedelta(seconds=1),
            )
        )
    assert drain(Senders(db, config, Metrics(), LiveHub())) == 1
    assert state_of(db, row_id).state == "sent"
    mails = smtp_server.wait_for(3)
    by_bus_message: dict[str, list[str]] = {}
    for mail in mails:
        by_bus_message.setdefault(str(mail.message["X-Fedmsg-Id"]), []).append(
            str(mail.message["Message-ID"])
        )
    another = by_bus_message.pop("another-bus-message")
    ((_, resent),) = by_bus_message.items()
    assert len(resent) == 2 and resent[0] == resent[1]
    assert another[0] not in resent


def test_delivery_one_failing_destination_does_not_block_the_others(
    committed: Database, smtp_server: SmtpServer, push_receiver: PushReceiver
) -> None:
    # E-mail and push record their outcomes at once from their own threads: the ``db``
    # fixture's one PostgreSQL connection can't serve them both.
    db = committed
    dead_end = f"json://127.0.0.1:{free_port()}/nobody"
    good = f"json://127.0.0.1:{push_receiver.port}/jo"
    with db.begin() as session:
        jo = add_user(session, "jo", "push", (dead_end, good))
        al = add_user(session, "al", "push", (dead_end,))
        bo = add_user(session, "bo", addresses=("bo@example.org",))
        partly = add_notification(session, jo, "push").id
        failing = add_notification(session, al, "push").id
        fine = add_notification(session, bo).id
    metrics = Metrics()
    drain(Senders(db, make_config(db, smtp_server), metrics, LiveHub()))
    assert len(push_receiver.wait_for(1)) == 1
    assert smtp_server.wait_for(1)[0].rcpt_tos == ["bo@example.org"]
    jo_row = state_of(db, partly)
    assert jo_row.state == "sent"
    assert jo_row.last_error is not None and "delivered to 1 of 2" in jo_row.last_error
    assert "/nobody" not in jo_row.last_error
    al_row = state_of(db, failing)
    assert al_row.state == "failed" and al_row.attempts == 1
    assert al_row.next_attempt_at > utcnow()
    assert "/nobody" not in (al_row.last_error or "")
    assert state_of(db, fine).state == "sent"
    assert metrics.get("notifications_sent") == 2
    assert metrics.get("notifications_failed") == 1


def test_delivery_retries_with_backoff_then_goes_dead(db: Database) -> None:
    with db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo")).id
    metrics = Metrics()
    config = make_config(db, None, max_attempts=3, backoff_seconds=0.001, backoff_max_seconds=0.001)
    delivery = Senders(db, config, metrics, LiveHub())
    deadline = asyncio.run(_until_dead(delivery, db, row_id))
    assert deadline
    row = state_of(db, row_id)
    assert row.state == "dead" and row.attempts == 3
    assert "did not take the message" in (row.last_error or "")
    assert "jo@example.org" not in (row.last_error or "")
    assert metrics.get("notifications_failed") == 2
    assert metrics.get("notifications_dead") == 1


async def _until_dead(delivery: Senders, db: Database, row_id: int) -> bool:
    for _ in range(50):
        await delivery.drain(10)
        if state_of(db, row_id).state == "dead":
            return True
        await asyncio.sleep(0.01)
    return False


def test_delivery_refused_destination_is_dead_at_once(
    db: Database, push_receiver: PushReceiver
) -> None:
    with db.begin() as session:
        user = add_user(session, "jo", "push", (f"json://127.0.0.1:{push_receiver.port}/x",))
        row_id = add_notification(session, user, "push").id
    config = make_config(db).replace(
        push=PushConfig(allowed_schemes=WITH_JSON, allow_private_hosts=False)
    )
    drain(Senders(db, config, Metrics(), LiveHub()))
    row = state_of(db, row_id)
    assert row.state == "dead" and row.attempts == 1
    assert "loopback" in (row.last_error or "")
    assert push_receiver.requests == []


def test_delivery_postpones_muted_users(db: Database, smtp_server: SmtpServer) -> None:
    until = utcnow() + dt.timedelta(hours=3)
    with db.begin() as session:
        user = add_user(session, "jo")
        user.muted_until = until
        row_id = add_notification(session, user).id
    drain(Senders(db, make_config(db, smtp_server), Metrics(), LiveHub()))
    row = state_of(db, row_id)
    assert row.state == "pending" and row.attempts == 0
    assert row.next_attempt_at == until
    assert smtp_server.messages == []


def test_delivery_without_confirmed_address_waits_with_a_clear_error(
    db: Database, smtp_server: SmtpServer
) -> None:
    with db.begin() as session:
        user = add_user(session, "jo", confirmed=False)
        row_id = add_notification(session, user).id
    drain(Senders(db, make_config(db, smtp_server), Metrics(), LiveHub()))
    row = state_of(db, row_id)
    assert row.state == "failed" and row.attempts == 1
    assert row.last_error == NO_ADDRESS_ERROR
    assert row.next_attempt_at > utcnow() + dt.timedelta(minutes=25)
    assert smtp_server.messages == []


def test_delivery_turned_off_context_is_dead_and_not_sent(
    db: Database, smtp_server: SmtpServer
) -> None:
    with db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo", enabled=False)).id
    drain(Senders(db, make_config(db, smtp_server), Metrics(), LiveHub()))
    assert state_of(db, row_id).state == "dead"
    assert smtp_server.messages == []


def test_delivery_digest_by_count_sends_one_message(db: Database, smtp_server: SmtpServer) -> None:
    with db.begin() as session:
        user = add_user(session, "jo", digest_count=3)
        first = [add_notification(session, user).id for _ in range(2)]
    delivery = Senders(db, make_config(db, smtp_server), Metrics(), LiveHub())
    drain(delivery)
    assert smtp_server.messages == []
    held = [state_of(db, i) for i in first]
    assert all(r.state == "pending" and r.next_attempt_at > utcnow() for r in held)
    with db.begin() as session:
        user = session.scalars(select(User).where(User.name == "jo")).one()
        third = add_notification(session, user).id
    drain(delivery)
    (mail,) = smtp_server.wait_for(1)
    assert mail.subject.startswith("[fmn] 3 notifications")
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert all(state_of(db, i).state == "sent" for i in [*first, third])


def test_delivery_digest_by_minutes_waits_for_the_window(
    db: Database, smtp_server: SmtpServer
) -> None:
    now = utcnow()
    with db.begin() as session:
        user = add_user(session, "jo", digest_minutes=10)
        recent = add_notification(session, user, created_at=now - dt.timedelta(minutes=2)).id
    delivery = Senders(db, make_config(db, smtp_server), Metrics(), LiveHub())
    drain(delivery)
    held = state_of(db, recent)
    assert held.state == "pending"
    expected = now - dt.timedelta(minutes=2) + dt.timedelta(minutes=10)
    assert abs((held.next_attempt_at - expected).total_seconds()) < 2
    assert smtp_server.messages == []
    # The window has passed for the oldest row: everything waiting goes out together.
    with db.begin() as session:
        session.execute(
            update(Notification)
            .where(Notification.id == recent)
            .values(created_at=now - dt.timedelta(minutes=11), next_attempt_at=now)
        )
        user = session.scalars(select(User).where(User.name == "jo")).one()
        newer = add_notification(session, user, next_attempt_at=now + dt.timedelta(hours=1)).id
    drain(delivery)
    (mail,) = smtp_server.wait_for(1)
    assert mail.subject.startswith("[fmn] 2 notifications")
    assert state_of(db, recent).state == "sent" and state_of(db, newer).state == "sent"


def test_delivery_rate_limit_collapses_into_a_digest(db: Database, smtp_server: SmtpServer) -> None:
    now = utcnow()
    with db.begin() as session:
        user = add_user(session, "jo")
        for _ in range(2):
            add_notification(session, user, state="sent", sent_at=now - dt.timedelta(minutes=5))
        flood = [add_notification(session, user).id for _ in range(3)]
    delivery = Senders(
        db, make_config(db, smtp_server, rate_limit_per_hour=2), Metrics(), LiveHub()
    )
    drain(delivery)
    assert smtp_server.messages == []
    rows = [state_of(db, i) for i in flood]
    assert all(r.state == "pending" and r.attempts == 0 for r in rows)
    assert all(
        r.next_attempt_at > now + dt.timedelta(minutes=RATE_LIMIT_DIGEST_MINUTES - 1) for r in rows
    )
    with db.begin() as session:
        session.execute(
            update(Notification)
            .where(Notification.id.in_(flood))
            .values(
                created_at=now - dt.timedelta(minutes=RATE_LIMIT_DIGEST_MINUTES + 1),
                next_attempt_at=now,
            )
        )
    drain(delivery)
    (mail,) = smtp_server.wait_for(1)
    assert mail.subject.startswith("[fmn] 3 notifications")
    assert all(state_of(db, i).state == "sent" for i in flood)


def test_delivery_sends_confirmation_codes(db: Database, smtp_server: SmtpServer) -> None:
    with db.begin() as session:
        pending = preferences.set_destination(
            session, preferences.Actor("jo"), "email", "jo@example.org"
        )
        user_id = session.scalars(select(User.id).where(User.name == "jo")).one()
    assert pending.code
    drain(Senders(db, make_config(db, smtp_server), Metrics(), LiveHub()))
    (mail,) = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["jo@example.org"]
    assert pending.code in mail.message.get_content()
    with db.begin() as session:
        confirmation = session.scalars(select(Confirmation)).one()
        assert confirmation.outgoing_code is None and confirmation.sent_count == 1
        assert preferences.pending_confirmation_codes(session) == []
    assert user_id


def test_delivery_a_new_code_asked_for_while_the_old_one_goes_out_is_sent_too(
    file_db: Database, smtp_server: SmtpServer
) -> None:
    # jo asks for a new code while the first is on its way: marking the first sent
    # must not forget the second, which would then never be sent.
    config = make_config(file_db, smtp_server)
    config = dataclasses.replace(
        config, confirmation=dataclasses.replace(config.confirmation, resend_interval_seconds=0)
    )
    file_db.config = config
    file_db.sessionmaker.configure(info=file_db.session_info())
    with file_db.begin() as session:
        first = preferences.set_destination(
            session, preferences.Actor("jo"), "email", "jo@example.org"
        )
    asked: list[str] = []

    class AskingAgain(EmailTransport):
        def send_blocking(self, destination: str, rendered: Rendered) -> None:
            super().send_blocking(destination, rendered)
            if not asked:
                with file_db.begin() as session:
                    again = preferences.resend_confirmation(
                        session, preferences.Actor("jo"), "email"
                    )
                asked.append(again.code or "")

    transport = AskingAgain(config.smtp)
    delivery = Senders(file_db, config, Metrics(), LiveHub(), transports={"email": transport})
    drain(delivery)
    drain(delivery)
    transport.close()
    mails = smtp_server.wait_for(2)
    assert asked and asked[0] != first.code
    assert [first.code in m.message.get_content() for m in mails] == [True, False]
    assert asked[0] in mails[1].message.get_content()
    with file_db.begin() as session:
        assert preferences.pending_confirmation_codes(session) == []


def test_delivery_rss_is_marked_sent_and_live_reaches_subscribers(db: Database) -> None:
    token_rss = "rss-token-aaaaaaaaaaaaaaaa"
    token_live = "live-token-bbbbbbbbbbbbbbbb"
    with db.begin() as session:
        user = add_user(session, "jo", "rss", (token_rss,))
        add_user(session, "jo", "live", (token_live,))
        rss = add_notification(session, user, "rss").id
        live = add_notification(session, user, "live").id
        unheard = add_notification(
            session, add_user(session, "al", "live", ("live-token-nobody-listens",)), "live"
        ).id
    hub = LiveHub()

    async def scenario() -> dict[str, Any]:
        with hub.subscribe(token_live) as subscription:
            await Senders(db, make_config(db), Metrics(), hub).drain(10)
            return subscription.queue.get_nowait()

    event = asyncio.run(scenario())
    assert event["id"] == live
    assert event["topic"] == "org.fedoraproject.prod.bodhi.buildroot_override.tag"
    assert event["app"] == "bodhi" and event["filter"] == "my packages"
    assert {"summary", "url", "created"} <= set(event)
    assert state_of(db, rss).state == "sent"
    assert state_of(db, live).state == "sent"
    assert state_of(db, unheard).state == "sent"  # live means live


# -- concurrency and stopping (SQLite file: several connections at once) -----------------------


class _Together:
    """A transport whose first ``count`` sends all end at once, when the last starts;
    a destination starting with ``fail`` is refused."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = 0
        self.all_here: asyncio.Event | None = None

    async def send(self, destination: str, rendered: Rendered) -> None:
        if self.all_here is None:
            self.all_here = asyncio.Event()
        self.arrived += 1
        if self.arrived >= self.count:
            self.all_here.set()
        await self.all_here.wait()
        if destination.startswith("fail"):
            raise TransportError("refused by test")


class _Gate:
    """A transport that records concurrency and can hold sends until released."""

    def __init__(self, hold: bool = False) -> None:
        self.active = 0
        self.peak = 0
        self.sent: list[str] = []
        self.hold = hold
        self.started: asyncio.Event | None = None

    async def send(self, destination: str, rendered: Rendered) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.started is not None:
                self.started.set()
            if self.hold:
                await asyncio.Event().wait()  # until cancelled
            await asyncio.sleep(0.05)
            if destination.startswith("fail"):
                raise TransportError("refused by test")
            self.sent.append(destination)
        finally:
            self.active -= 1


def test_delivery_runs_at_most_the_configured_number_of_senders(file_db: Database) -> None:
    with file_db.begin() as session:
        for n in range(9):
            add_notification(session, add_user(session, f"u{n}", "push", (f"ok-{n}",)), "push")
    gate = _Gate()
    config = make_config(file_db, senders=3)
    transports: dict[str, Transport] = {"push": gate}
    delivery = Senders(file_db, config, Metrics(), transports=transports)
    assert drain(delivery) == 9
    assert sorted(gate.sent) == sorted(f"ok-{n}" for n in range(9))
    assert gate.peak == 3


def test_delivery_run_stops_cleanly_and_releases_unsent_rows(file_db: Database) -> None:
    with file_db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo", "push", ("held",)), "push").id
    gate = _Gate(hold=True)
    config = make_config(file_db, shutdown_grace_seconds=0.2)
    delivery = Senders(file_db, config, Metrics(), transports={"push": gate})

    async def scenario() -> None:
        stop = asyncio.Event()
        gate.started = asyncio.Event()
        runner = asyncio.create_task(delivery.run(stop))
        await asyncio.wait_for(gate.started.wait(), 10)
        assert state_of(file_db, row_id).state == "sending"
        stop.set()
        await asyncio.wait_for(runner, 10)

    asyncio.run(scenario())
    row = state_of(file_db, row_id)
    assert row.state == "pending" and row.claimed_by is None and row.attempts == 0


def test_delivery_run_sends_codes_beside_its_rounds_and_marks_them_sent(
    file_db: Database, smtp_server: SmtpServer
) -> None:
    config = make_config(file_db, smtp_server)
    file_db.config = config
    file_db.sessionmaker.configure(info=file_db.session_info())
    with file_db.begin() as session:
        pending = preferences.set_destination(
            session, preferences.Actor("jo"), "email", "jo@example.org"
        )
    delivery = Senders(file_db, config, Metrics(), LiveHub())

    async def scenario() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(delivery.run(stop))
        await asyncio.to_thread(smtp_server.wait_for, 1)
        # Marked by a later round, or at the stop: either way, once.
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(runner, 10)

    asyncio.run(scenario())
    (mail,) = smtp_server.messages
    assert pending.code and pending.code in mail.message.get_content()
    with file_db.begin() as session:
        assert preferences.pending_confirmation_codes(session) == []
        assert session.scalars(select(Confirmation.sent_count)).one() == 1


def test_delivery_run_a_code_to_a_slow_push_server_holds_up_nobody(
    file_db: Database, push_receiver: PushReceiver
) -> None:
    """mallory sets a push URL on a server that drips its answer; its confirmation code
    is sent beside the rounds, so jo's notification goes at once, and a stop is prompt."""
    config = make_config(file_db, shutdown_grace_seconds=1).replace(
        push=PushConfig(allow_private_hosts=True, timeout_seconds=2)
    )
    file_db.config = config
    file_db.sessionmaker.configure(info=file_db.session_info())
    delivery = Senders(file_db, config, Metrics(), LiveHub())

    async def scenario(
        dripping: HostileServer, ended: threading.Event, row_id: int
    ) -> tuple[float, bool, float]:
        stop = asyncio.Event()
        started = time.monotonic()
        runner = asyncio.create_task(delivery.run(stop))
        while state_of(file_db, row_id).state != "sent":
            assert time.monotonic() - started < 10, "jo's notification waited for the code"
            await asyncio.sleep(0.05)
        sent_after = time.monotonic() - started
        still_dripping = bool(dripping.requests) and not ended.is_set()
        stop.set()
        stopping = time.monotonic()
        await asyncio.wait_for(runner, 10)
        return sent_after, still_dripping, time.monotonic() - stopping

    with answering(drip_body) as (dripping, ended):
        with file_db.begin() as session:
            preferences.set_destination(
                session, preferences.Actor("mallory"), "push", ntfy_url(dripping, "m")
            )
            jo = add_user(session, "jo", "push", (f"ntfy://127.0.0.1:{push_receiver.port}/jo",))
            row_id = add_notification(session, jo, "push").id
        sent_after, still_dripping, stop_took = asyncio.run(scenario(dripping, ended, row_id))
    deadline = 2 * SEND_DEADLINE_TIMEOUTS
    assert still_dripping, "the code's send was over before jo's notification went"
    assert sent_after < deadline / 2
    assert stop_took < 1 + 2  # the grace period, and a little
    assert push_receiver.wait_for(1)[0].json()["topic"] == "jo"
    with file_db.begin() as session:
        # Not marked sent: the next daemon sends it again.
        assert [c.user for c in preferences.pending_confirmation_codes(session)] == ["mallory"]


def test_delivery_run_finishes_sends_within_the_grace_period(file_db: Database) -> None:
    with file_db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo", "push", ("ok",)), "push").id
    gate = _Gate()
    config = make_config(file_db, shutdown_grace_seconds=5)
    delivery = Senders(file_db, config, Metrics(), transports={"push": gate})

    async def scenario() -> None:
        stop = asyncio.Event()
        gate.started = asyncio.Event()
        runner = asyncio.create_task(delivery.run(stop))
        await asyncio.wait_for(gate.started.wait(), 10)
        stop.set()
        await asyncio.wait_for(runner, 10)

    asyncio.run(scenario())
    assert gate.sent == ["ok"]
    assert state_of(file_db, row_id).state == "sent"


def test_delivery_forced_stop_cancels_at_once_and_releases_rows(file_db: Database) -> None:
    with file_db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo", "push", ("held",)), "push").id
    gate = _Gate(hold=True)
    config = make_config(file_db, shutdown_grace_seconds=60)
    delivery = Senders(file_db, config, Metrics(), transports={"push": gate})

    async def scenario() -> float:
        gate.started = asyncio.Event()
        runner = asyncio.create_task(delivery.run(asyncio.Event()))
        await asyncio.wait_for(gate.started.wait(), 10)
        began = asyncio.get_running_loop().time()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        return asyncio.get_running_loop().time() - began

    assert asyncio.run(scenario()) < 5  # not the 60 s grace
    row = state_of(file_db, row_id)
    assert row.state == "pending" and row.claimed_by is None


@pytest.mark.postgres
def test_delivery_wakes_on_committed_rows_instead_of_waiting_for_the_poll(
    empty_postgres_url: str,
) -> None:
    import time

    from fmn_core import outbox

    # A database of its own: NOTIFY is delivered on commit, which the savepoint
    # fixture never does.
    engine = make_engine(empty_postgres_url)
    try:
        Base.metadata.create_all(engine)
        database = Database(Config(database_url=str(engine.url)), engine)
        config = make_config(database, idle_poll_seconds=30)
        gate = _Gate()
        delivery = Senders(database, config, Metrics(), transports={"push": gate})

        def commit_a_row() -> None:
            with database.begin() as session:
                user = add_user(session, "jo", "push", ("ok",))
                add_notification(session, user, "push")
                outbox.announce_new_rows(session)

        async def scenario() -> float:
            stop = asyncio.Event()
            gate.started = asyncio.Event()
            runner = asyncio.create_task(delivery.run(stop))
            try:
                # Idle and listening: the first (empty) round is over.
                for _ in range(200):
                    if delivery._new_rows._connection is not None:
                        break
                    await asyncio.sleep(0.05)
                assert delivery._new_rows._connection is not None, "the sender never listened"
                await asyncio.sleep(0.3)
                started = time.monotonic()
                await asyncio.to_thread(commit_a_row)
                await asyncio.wait_for(gate.started.wait(), 15)
                return time.monotonic() - started
            finally:
                stop.set()
                await asyncio.wait_for(runner, 15)

        elapsed = asyncio.run(scenario())
        # The poll interval is 30 s: only the notification can explain a send this soon.
        assert elapsed < 5, f"the row was sent {elapsed:.1f}s after its commit"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_delivery_records_mails_every_destination_took_in_one_autocommitted_statement(
    empty_postgres_url: str,
) -> None:
    # On PostgreSQL's pool the usual outcome (sent, no note) is one UPDATE on a
    # connection that commits it as it runs: no BEGIN/COMMIT round trips. Outcomes
    # that need more (a failure's backoff) still get a transaction.
    from sqlalchemy import event

    engine = make_engine(empty_postgres_url)
    try:
        Base.metadata.create_all(engine)
        database = Database(Config(database_url=str(engine.url)), engine)
        assert database.can_autocommit
        with database.begin() as session:
            ok = [
                add_notification(
                    session, add_user(session, f"u{n}", "push", (f"ok-{n}",)), "push"
                ).id
                for n in range(4)
            ]
        updates: list[tuple[bool, str]] = []

        @event.listens_for(engine, "before_cursor_execute")
        def _seen(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("UPDATE NOTIFICATIONS"):
                updates.append((conn.connection.dbapi_connection.autocommit, statement))

        config = make_config(database, senders=5)
        # The four sends end together (in one turn of the loop, however loaded the
        # machine), so their outcomes are one group.
        delivery = Senders(database, config, Metrics(), transports={"push": _Together(4)})
        assert drain(delivery) == 4
        assert {state_of(database, i).state for i in ok} == {"sent"}
        claims = [auto for auto, sql in updates if "RETURNING" in sql]
        sent = [auto for auto, sql in updates if "RETURNING" not in sql]
        assert sent == [True]  # the four outcomes, one autocommitted statement
        assert claims and not any(claims)  # a claim is a transaction of its own
        updates.clear()
        with database.begin() as session:
            failing = add_notification(
                session, add_user(session, "f", "push", ("fail",)), "push"
            ).id
        assert drain(delivery) == 1
        assert state_of(database, failing).state == "failed"
        # A failure's backoff is written in a transaction, as before.
        failed = [auto for auto, sql in updates if "RETURNING" not in sql]
        assert failed and not any(failed)
    finally:
        engine.dispose()


# -- the send path: pooled SMTP sessions, overlapping rounds, group commits ---------------------


def checked_out(engine: Any) -> int:
    """Connections taken from the engine's pool and not given back."""
    return int(engine.pool.checkedout())


@pytest.mark.postgres
def test_delivery_keeps_the_connection_sent_outcomes_are_written_on(
    empty_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Taking a connection from the pool and giving it back cost more CPU than the
    # UPDATE of a sent outcome: the recorder keeps one between such commits, gives
    # it back once idle (the pool pings a connection idle that long), and starts
    # from a fresh one when the kept one broke.
    from sqlalchemy import create_engine, event, text
    from sqlalchemy.pool import NullPool

    from fmn_daemon import outcomes as outcomes_module

    engine = make_engine(empty_postgres_url)
    try:
        Base.metadata.create_all(engine)
        database = Database(Config(database_url=str(engine.url)), engine)
        with database.begin() as session:
            users = [add_user(session, f"u{n}", "push", (f"ok-{n}",)) for n in range(6)]
            ids = [add_notification(session, user, "push").id for user in users]
        with database.begin() as session:
            rows = outbox.claim_due(session, worker="w", limit=10, lease_seconds=60)
        by_id = {row.id: row for row in rows}
        checkouts: list[int] = []

        @event.listens_for(engine, "checkout")
        def _checked_out(dbapi_connection: Any, *_: Any) -> None:
            checkouts.append(id(dbapi_connection))

        recorder = OutcomeRecorder(database, DeliveryConfig(), Metrics())

        def sent(row_id: int) -> Outcome:
            return Outcome(rows=(by_id[row_id],), digest=False, accepted=1, errors=(), refused=())

        recorder.record_blocking(sent(ids[0]))
        recorder.record_blocking(sent(ids[1]))
        assert len(checkouts) == 1  # two commits, one connection taken from the pool
        assert checked_out(engine) == 1

        # Idle past the ping interval: given back, and taken again (pinged) when next used.
        monkeypatch.setattr(outcomes_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        recorder.close_idle()
        assert checked_out(engine) == 0
        recorder.record_blocking(sent(ids[2]))
        assert len(checkouts) == 2
        monkeypatch.setattr(outcomes_module, "PING_AFTER_IDLE_SECONDS", 60.0)

        # The server drops the kept connection: that commit fails as the database
        # going away does (the sender retries it), and the next one gets a fresh one.
        with recorder._kept_lock:
            kept = recorder._kept
            assert kept is not None
            pid = kept.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        killer_engine = create_engine(empty_postgres_url, poolclass=NullPool)
        with killer_engine.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            killer.commit()
        killer_engine.dispose()
        with pytest.raises(SQLAlchemyError) as raised:
            recorder.record_blocking(sent(ids[3]))
        assert is_transient(raised.value)
        recorder.record_blocking(sent(ids[3]))
        recorder.record_blocking(sent(ids[4]))
        assert len(checkouts) == 3
        recorder.close()
        assert checked_out(engine) == 0
        states = [state_of(database, i) for i in ids]
        assert [s.state for s in states] == ["sent"] * 5 + ["sending"]
        assert all(s.sent_at is not None and s.claimed_by is None for s in states[:5])
    finally:
        engine.dispose()


def _email_rows(db: Database, n: int) -> list[int]:
    """``n`` e-mail notifications, one per new user ``u0`` … with a confirmed address."""
    with db.begin() as session:
        return [
            add_notification(
                session, add_user(session, f"u{i}", addresses=(f"u{i}@example.org",))
            ).id
            for i in range(n)
        ]


def test_delivery_email_reuses_one_smtp_session_and_recovers_from_a_closed_one(
    db: Database, counting_server: CountingServer
) -> None:
    counting_server.close_after = 2
    ids = _email_rows(db, 5)
    config = make_config(db).replace(
        smtp=SmtpConfig(host=counting_server.host, port=counting_server.port, timeout_seconds=5)
    )
    assert drain(Senders(db, config, Metrics(), LiveHub())) == 5
    # Every row's mail exactly once, though the server closed each session after 2 mails.
    assert sorted(counting_server.recipients) == sorted(f"u{n}@example.org" for n in range(5))
    assert len(counting_server.sessions) == 3
    assert {state_of(db, i).state for i in ids} == {"sent"}


def test_delivery_email_refused_recipient_fails_only_its_row_with_the_reason(
    db: Database, counting_server: CountingServer
) -> None:
    counting_server.refuse = {"gone@example.org"}
    with db.begin() as session:
        kept = add_notification(session, add_user(session, "jo")).id
        gone = add_notification(
            session, add_user(session, "al", addresses=("gone@example.org",))
        ).id
        after = add_notification(session, add_user(session, "bo", addresses=("bo@example.org",))).id
    config = make_config(db).replace(
        smtp=SmtpConfig(host=counting_server.host, port=counting_server.port, timeout_seconds=5)
    )
    metrics = Metrics()
    drain(Senders(db, config, metrics, LiveHub()))
    assert state_of(db, kept).state == "sent"
    assert state_of(db, after).state == "sent"
    failed = state_of(db, gone)
    assert failed.state == "failed" and failed.attempts == 1
    assert failed.last_error is not None
    assert "550 5.1.1 mailbox unavailable" in failed.last_error
    assert "gone@example.org" not in failed.last_error
    assert len(counting_server.sessions) == 1
    assert metrics.get("notifications_sent") == 2
    assert metrics.get("notifications_failed") == 1


class _Held:
    """A transport that holds sends to ``held`` until released; others go at once."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, destination: str, rendered: Rendered) -> None:
        if destination == "held":
            self.holding.set()
            await self.release.wait()
        self.sent.append(destination)


def test_delivery_run_claims_new_rows_while_a_send_is_in_flight(file_db: Database) -> None:
    with file_db.begin() as session:
        slow = add_notification(session, add_user(session, "jo", "push", ("held",)), "push").id
    transport = _Held()
    config = make_config(file_db, senders=2)
    delivery = Senders(file_db, config, Metrics(), transports={"push": transport})

    def commit_another() -> int:
        with file_db.begin() as session:
            return add_notification(session, add_user(session, "al", "push", ("quick",)), "push").id

    async def scenario() -> tuple[int, list[str], str]:
        stop = asyncio.Event()
        runner = asyncio.create_task(delivery.run(stop))
        try:
            await asyncio.wait_for(transport.holding.wait(), 10)
            quick = await asyncio.to_thread(commit_another)
            # Sent while the first round's send is still held: rounds overlap.
            for _ in range(200):
                if transport.sent:
                    break
                await asyncio.sleep(0.05)
            sent_meanwhile = list(transport.sent)
            state_meanwhile = state_of(file_db, slow).state
            transport.release.set()
            return quick, sent_meanwhile, state_meanwhile
        finally:
            transport.release.set()
            stop.set()
            await asyncio.wait_for(runner, 10)

    quick, sent_meanwhile, state_meanwhile = asyncio.run(scenario())
    assert sent_meanwhile == ["quick"]
    assert state_meanwhile == "sending"
    assert sorted(transport.sent) == ["held", "quick"]
    assert state_of(file_db, slow).state == "sent"
    assert state_of(file_db, quick).state == "sent"


def test_delivery_run_claims_ahead_while_every_slot_is_busy(file_db: Database) -> None:
    # One slot, held: a row committed meanwhile is claimed at once (it waits for
    # the slot claimed, not in the table), so the slot finds it ready when it
    # frees up; it is sent only after the held one, never beside it.
    with file_db.begin() as session:
        held = add_notification(session, add_user(session, "jo", "push", ("held",)), "push").id
    transport = _Held()
    config = make_config(file_db, senders=1)
    delivery = Senders(file_db, config, Metrics(), transports={"push": transport})

    def commit_another() -> int:
        with file_db.begin() as session:
            return add_notification(session, add_user(session, "al", "push", ("next",)), "push").id

    async def scenario() -> tuple[int, str, list[str]]:
        stop = asyncio.Event()
        runner = asyncio.create_task(delivery.run(stop))
        try:
            await asyncio.wait_for(transport.holding.wait(), 10)
            following = await asyncio.to_thread(commit_another)
            state = "pending"
            for _ in range(200):
                state = state_of(file_db, following).state
                if state != "pending":
                    break
                await asyncio.sleep(0.05)
            sent_meanwhile = list(transport.sent)
            transport.release.set()
            return following, state, sent_meanwhile
        finally:
            transport.release.set()
            stop.set()
            await asyncio.wait_for(runner, 10)

    following, state_meanwhile, sent_meanwhile = asyncio.run(scenario())
    assert state_meanwhile == "sending"  # claimed while the only slot was busy
    assert sent_meanwhile == []  # but not sent beside the held one
    assert transport.sent == ["held", "next"]
    assert {state_of(file_db, i).state for i in (held, following)} == {"sent"}


class _HeldThenFailing(_Held):
    """Holds sends to ``held`` until released, then fails them."""

    async def send(self, destination: str, rendered: Rendered) -> None:
        await super().send(destination, rendered)
        if destination == "held":
            raise TransportError("timed out")


def test_delivery_a_late_sender_does_not_undo_the_send_of_the_one_that_took_its_row(
    file_db: Database,
) -> None:
    # Sender A's send outlasts its lease (a slow server, a paused host); sender B
    # takes the row and sends it. A's failure, reported afterwards, must not turn
    # the row back to failed: it would go out once more after its backoff.
    with file_db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo", "push", ("held",)), "push").id
    config = make_config(file_db, claim_lease_seconds=60)
    slow = _HeldThenFailing()
    late_metrics = Metrics()
    late = Senders(file_db, config, late_metrics, transports={"push": slow}, worker="A")
    quick = _Held()
    quick.release.set()
    later = utcnow() + dt.timedelta(seconds=120)  # A's lease ran out
    taker = Senders(
        file_db, config, Metrics(), transports={"push": quick}, worker="B", clock=lambda: later
    )

    async def scenario() -> None:
        sending = asyncio.create_task(late.round())
        try:
            await asyncio.wait_for(slow.holding.wait(), 10)
            assert await asyncio.to_thread(drain, taker) == 1
        finally:
            slow.release.set()
        await asyncio.wait_for(sending, 10)

    asyncio.run(scenario())
    assert quick.sent == ["held"]
    row = state_of(file_db, row_id)
    assert (row.state, row.attempts, row.last_error) == ("sent", 0, None)
    # Nor does A count a failure of a notification that went out.
    assert late_metrics.get("notifications_failed") == 0
    assert drain(taker) == 0


def outcome_commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many outcomes each of the recorder's commits wrote, in order."""
    batches: list[int] = []
    commit = OutcomeRecorder._commit

    def counting_commit(self: OutcomeRecorder, outcomes: Any) -> Any:
        batches.append(len(outcomes))
        return commit(self, outcomes)

    monkeypatch.setattr(OutcomeRecorder, "_commit", counting_commit)
    return batches


def test_delivery_records_outcomes_that_come_together_in_one_transaction(
    file_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with file_db.begin() as session:
        ids = [
            add_notification(session, add_user(session, f"u{n}", "push", (f"ok-{n}",)), "push").id
            for n in range(12)
        ]
    batches = outcome_commits(monkeypatch)
    gate = _Gate()  # every send takes 50 ms, so the 12 end together
    metrics = Metrics()
    delivery = Senders(
        file_db, make_config(file_db, senders=12), metrics, transports={"push": gate}
    )
    assert drain(delivery) == 12
    assert sum(batches) == 12
    assert len(batches) < 12 and max(batches) > 1
    assert {state_of(file_db, i).state for i in ids} == {"sent"}
    assert metrics.get("notifications_sent") == 12


def _claimed_with_the_second_gone(db: Database, n: int) -> tuple[list[int], list[Any]]:
    """``n`` push rows claimed, then the second deleted: recording its outcome cannot work."""
    from fmn_core import outbox

    with db.begin() as session:
        ids = [
            add_notification(session, add_user(session, f"u{i}", "push", (f"ok-{i}",)), "push").id
            for i in range(n)
        ]
    with db.begin() as session:
        claimed = outbox.claim_ids(session, ids, worker="w", lease_seconds=60)
    with db.begin() as session:
        session.execute(delete(Notification).where(Notification.id == ids[1]))
    return ids, list(claimed)


def test_delivery_outcome_that_cannot_be_recorded_costs_only_itself(file_db: Database) -> None:
    ids, claimed = _claimed_with_the_second_gone(file_db, 3)
    metrics = Metrics()
    recorder = OutcomeRecorder(file_db, DeliveryConfig(), metrics)
    outcomes = [
        Outcome(rows=(claimed[0],), digest=False, accepted=1, errors=(), refused=()),
        Outcome(rows=(claimed[1],), digest=False, accepted=0, errors=("down",), refused=()),
        Outcome(rows=(claimed[2],), digest=False, accepted=1, errors=(), refused=()),
    ]

    async def scenario() -> list[BaseException | None]:
        return await asyncio.gather(*(recorder.record(o) for o in outcomes), return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Exception)
    assert state_of(file_db, ids[0]).state == "sent"
    assert state_of(file_db, ids[2]).state == "sent"
    assert metrics.get("notifications_sent") == 2


def test_delivery_counts_rows_in_flight_against_the_rate_limit(file_db: Database) -> None:
    with file_db.begin() as session:
        user = add_user(session, "jo", "push", ("held",))
        first = add_notification(session, user, "push").id
    transport = _Held()
    config = make_config(file_db, senders=2, rate_limit_per_hour=2)
    delivery = Senders(file_db, config, Metrics(), transports={"push": transport})

    def commit_two_more() -> list[int]:
        with file_db.begin() as session:
            jo = session.scalars(select(User).where(User.name == "jo")).one()
            return [add_notification(session, jo, "push").id for _ in range(2)]

    async def scenario() -> list[int]:
        stop = asyncio.Event()
        runner = asyncio.create_task(delivery.run(stop))
        try:
            await asyncio.wait_for(transport.holding.wait(), 10)
            more = await asyncio.to_thread(commit_two_more)
            # Planned while the first is in flight: 1 sending + 2 claimed > 2 an hour.
            for _ in range(200):
                if all(state_of(file_db, i).state != "pending" for i in more):
                    break
                await asyncio.sleep(0.05)
            return more
        finally:
            transport.release.set()
            stop.set()
            await asyncio.wait_for(runner, 10)

    more = asyncio.run(scenario())
    assert state_of(file_db, first).state == "sent"
    rows = [state_of(file_db, i) for i in more]
    assert all(r.hold_reason == "rate_limit" for r in rows), [
        (r.state, r.hold_reason) for r in rows
    ]


def test_delivery_run_closes_smtp_sessions_left_idle(
    file_db: Database, counting_server: CountingServer
) -> None:
    from fmn_daemon.transports.email import EmailTransport

    with file_db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo")).id
    smtp = SmtpConfig(host=counting_server.host, port=counting_server.port, timeout_seconds=5)
    email = EmailTransport(smtp, idle_seconds=0.0)
    delivery = Senders(file_db, make_config(file_db), Metrics(), transports={"email": email})

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        runner = asyncio.create_task(delivery.run(stop))
        try:
            for _ in range(200):
                if counting_server.recipients and state_of(file_db, row_id).state == "sent":
                    break
                await asyncio.sleep(0.05)
            opened_after_send = email.opened
            # Idle now: the sender closes the session instead of keeping it open.
            for _ in range(200):
                if email.idle_sessions == 0:
                    break
                await asyncio.sleep(0.05)
            return opened_after_send, email.idle_sessions
        finally:
            stop.set()
            await asyncio.wait_for(runner, 10)

    opened, idle = asyncio.run(scenario())
    assert counting_server.recipients == ["jo@example.org"]
    assert opened == 1 and idle == 0


def _statements_of_a_claim(db: Database, delivery: Senders) -> tuple[list[str], Any]:
    """The SQL a round's claim and plan runs, and what it returns."""
    from sqlalchemy import event

    statements: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    with db.begin() as session:
        session.connection()  # the test fixture's own savepoint is not the claim's
        event.listen(db.engine, "before_cursor_execute", note)
        try:
            result = delivery._claim_and_plan(session, {})
        finally:
            event.remove(db.engine, "before_cursor_execute", note)
    return statements, result


@pytest.mark.parametrize("users", [1, 5])
def test_delivery_claim_and_plan_take_three_statements_whatever_the_batch(
    db: Database, users: int
) -> None:
    # Claim (one UPDATE ... RETURNING), load (one SELECT with every join), the
    # groups' figures (one SELECT): no per-row or per-group follow-ups, no savepoints.
    with db.begin() as session:
        ids = set()
        for n in range(users):
            user = add_user(session, f"u{n}", addresses=(f"a{n}@example.org", f"b{n}@example.org"))
            ids |= {add_notification(session, user).id for _ in range(2)}
    delivery = Senders(db, make_config(db), Metrics(), LiveHub())
    statements, (claimed, plan) = _statements_of_a_claim(db, delivery)
    assert {row.id for row in claimed} == ids
    assert len(plan.jobs) == 2 * users and plan.settled == 0
    assert all(
        job.head.destinations == (f"a{n}@example.org", f"b{n}@example.org")
        for job in plan.jobs
        for n in [int(job.head.user[1:])]
    )
    assert len(statements) <= 3, statements
    assert not any(s.lstrip().upper().startswith(("SAVEPOINT", "RELEASE")) for s in statements)
    assert {state_of(db, i).state for i in ids} == {"sending"}


def test_delivery_plan_that_fails_redoes_the_round_group_by_group(
    db: Database, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The usual round plans without savepoints: a group whose planning raises rolls
    # the whole claim back, and the round is redone isolated, costing that group only.
    from fmn_core import delivery_policy

    with db.begin() as session:
        good = add_notification(session, add_user(session, "jo")).id
        bad = add_notification(session, add_user(session, "al", addresses=("al@example.org",))).id
    decide = delivery_policy.decide

    def failing_decide(head: Any, *args: Any, **kwargs: Any) -> Any:
        if head.user == "al":
            raise ValueError("a broken preference")
        return decide(head, *args, **kwargs)

    monkeypatch.setattr(delivery_policy, "decide", failing_decide)
    metrics = Metrics()
    drain(Senders(db, make_config(db, smtp_server), metrics, LiveHub()))
    assert state_of(db, good).state == "sent"
    dead = state_of(db, bad)
    assert dead.state == "dead" and "a broken preference" in (dead.last_error or "")
    assert metrics.get("notifications_dead") == 1
    assert [m.rcpt_tos for m in smtp_server.wait_for(1)] == [["jo@example.org"]]


def test_delivery_lone_email_is_recorded_in_the_thread_that_sent_it(
    db: Database, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With no other send in flight there is no group to commit with: the worker
    # thread that sent the mail records it, with no hand-off back to the event loop.
    with db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo")).id
    hops: list[str] = []
    to_thread = asyncio.to_thread

    async def counting(function: Any, /, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(function, "__name__", "?"))
        return await to_thread(function, *args, **kwargs)

    loop_records: list[Any] = []
    record = OutcomeRecorder.record

    async def counting_record(self: OutcomeRecorder, outcome: Any) -> None:
        loop_records.append(outcome)
        await record(self, outcome)

    start_drain = Senders._start_drain

    def counting_start_drain(self: Senders, *args: Any) -> None:
        hops.append("_drain_mail")
        start_drain(self, *args)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    monkeypatch.setattr(Senders, "_start_drain", counting_start_drain)
    monkeypatch.setattr(OutcomeRecorder, "record", counting_record)
    metrics = Metrics()
    delivery = Senders(db, make_config(db, smtp_server), metrics, LiveHub())

    async def one_round() -> tuple[int, list[str]]:
        handled = await delivery.round()
        seen = list(hops)
        await delivery._close_transports()
        return handled, seen

    handled, hops = asyncio.run(one_round())
    assert handled == 1
    assert smtp_server.wait_for(1)[0].rcpt_tos == ["jo@example.org"]
    assert state_of(db, row_id).state == "sent"
    assert metrics.get("notifications_sent") == 1
    assert loop_records == []
    # The codes' query, the claim, and the send thread that also recorded.
    assert hops == ["unit", "unit", "_drain_mail"]


def test_delivery_emails_in_flight_together_still_share_a_group_commit(
    file_db: Database, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _email_rows(file_db, 12)
    batches = outcome_commits(monkeypatch)
    counted = OutcomeRecorder._commit

    def slow_commit(self: OutcomeRecorder, outcomes: Any) -> Any:
        # A commit that takes a while, as under load: sends that finish meanwhile
        # wait for the next one (each of the 12 sends has a thread of its own, so
        # with instant commits they may well finish one commit apart).
        time.sleep(0.05)
        return counted(self, outcomes)

    monkeypatch.setattr(OutcomeRecorder, "_commit", slow_commit)
    metrics = Metrics()
    delivery = Senders(file_db, make_config(file_db, smtp_server, senders=12), metrics, LiveHub())
    assert drain(delivery) == 12
    assert {state_of(file_db, i).state for i in ids} == {"sent"}
    assert metrics.get("notifications_sent") == 12
    assert sum(batches) == 12
    assert len(batches) < 12 and max(batches) > 1


class _Concurrency:
    """Counts sends in progress at once, across transports (threads and tasks)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def __exit__(self, *_: object) -> None:
        with self.lock:
            self.active -= 1


def test_delivery_send_threads_drain_queued_mails_at_most_senders_at_once(
    file_db: Database, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 20 mails, 3 slots: each send thread takes mail after mail from the queue
    # (no thread call per mail), never more than 3 at once, every mail once.
    ids = _email_rows(file_db, 20)
    at_once = _Concurrency()
    send_blocking = EmailTransport.send_blocking

    def counting_send(self: EmailTransport, destination: str, rendered: Rendered) -> None:
        with at_once:
            time.sleep(0.01)
            send_blocking(self, destination, rendered)

    started: list[int] = []
    start_drain = Senders._start_drain

    def counting_start_drain(self: Senders, *args: Any) -> None:
        started.append(1)
        start_drain(self, *args)

    monkeypatch.setattr(EmailTransport, "send_blocking", counting_send)
    monkeypatch.setattr(Senders, "_start_drain", counting_start_drain)
    metrics = Metrics()
    delivery = Senders(file_db, make_config(file_db, smtp_server, senders=3), metrics, LiveHub())
    assert drain(delivery) == 20
    mails = smtp_server.wait_for(20)
    assert sorted(m.rcpt_tos[0] for m in mails) == sorted(f"u{n}@example.org" for n in range(20))
    time.sleep(0.2)
    assert len(smtp_server.messages) == 20
    assert {state_of(file_db, i).state for i in ids} == {"sent"}
    assert metrics.get("notifications_sent") == 20
    assert 1 <= at_once.peak <= 3
    assert len(started) < 20
    transport = delivery.transports["email"]
    assert isinstance(transport, EmailTransport) and transport.opened <= 3


def test_delivery_send_threads_and_push_tasks_have_slots_of_their_own(
    file_db: Database, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # E-mail (send threads) and push (tasks on the event loop) in one round: at
    # most ``delivery.senders`` sends of each at once, in slots of their own (a push
    # server that keeps its sends to their deadline must hold up no mail).
    with file_db.begin() as session:
        for n in range(6):
            add_notification(session, add_user(session, f"m{n}", addresses=(f"m{n}@example.org",)))
            add_notification(session, add_user(session, f"p{n}", "push", (f"ok-{n}",)), "push")
    mails_at_once = _Concurrency()
    send_blocking = EmailTransport.send_blocking

    def counting_send(self: EmailTransport, destination: str, rendered: Rendered) -> None:
        with mails_at_once:
            time.sleep(0.03)
            send_blocking(self, destination, rendered)

    monkeypatch.setattr(EmailTransport, "send_blocking", counting_send)
    config = make_config(file_db, smtp_server, senders=2)
    email = EmailTransport(config.smtp)
    gate = _Gate()
    delivery = Senders(file_db, config, Metrics(), transports={"email": email, "push": gate})
    assert drain(delivery) == 12
    assert len(smtp_server.wait_for(6)) == 6
    assert sorted(gate.sent) == sorted(f"ok-{n}" for n in range(6))
    assert mails_at_once.peak == 2
    assert gate.peak == 2


def test_delivery_stop_releases_mails_no_send_thread_took(
    file_db: Database, smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One slot, the first mail held in its thread past the grace period: the
    # mails still queued are released (pending, no attempt) and never sent.
    ids = _email_rows(file_db, 3)
    holding = threading.Event()
    release = threading.Event()
    send_blocking = EmailTransport.send_blocking

    def held_send(self: EmailTransport, destination: str, rendered: Rendered) -> None:
        holding.set()
        release.wait(10)
        send_blocking(self, destination, rendered)

    monkeypatch.setattr(EmailTransport, "send_blocking", held_send)
    config = make_config(file_db, smtp_server, senders=1, shutdown_grace_seconds=0.2)
    delivery = Senders(file_db, config, Metrics(), LiveHub())

    async def scenario() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(delivery.run(stop))
        assert await asyncio.to_thread(holding.wait, 10)
        stop.set()
        await asyncio.wait_for(runner, 10)

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    time.sleep(0.3)
    # The held thread sent its mail after the senders stopped: its session too.
    transport = delivery.transports["email"]
    assert isinstance(transport, EmailTransport)
    transport.close()
    rows = [state_of(file_db, i) for i in ids]
    untouched = [r for r in rows if r.state == "pending" and r.attempts == 0]
    assert len(untouched) >= 2
    assert len(smtp_server.messages) <= 1


def test_outcomes_recorded_from_threads_cost_only_themselves(file_db: Database) -> None:
    # The send threads' group commit: an outcome that cannot be written fails
    # alone; the others of its group are recorded.
    ids, claimed = _claimed_with_the_second_gone(file_db, 6)
    metrics = Metrics()
    recorder = OutcomeRecorder(file_db, DeliveryConfig(), metrics)
    gate = threading.Barrier(6)

    def record(n: int) -> BaseException | None:
        accepted = 0 if n == 1 else 1
        outcome = Outcome(
            rows=(claimed[n],),
            digest=False,
            accepted=accepted,
            errors=() if accepted else ("down",),
            refused=(),
        )
        gate.wait(10)
        try:
            recorder.record_blocking(outcome)
        except Exception as exc:
            return exc
        return None

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(record, range(6)))
    assert [r is None for r in results] == [True, False, True, True, True, True]
    assert {state_of(file_db, i).state for i in ids if i != ids[1]} == {"sent"}
    assert metrics.get("notifications_sent") == 5


def test_delivery_send_threads_wake_the_loop_once_for_calls_that_wait_together() -> None:
    # A send thread tells the event loop of each mail it finished; calls made while
    # earlier ones still wait for the loop go with them on one wake-up, in order,
    # and a call that raises is reported without stopping the others.
    from fmn_daemon.delivery import _LoopCalls

    async def scenario() -> tuple[list[int], int, list[Any]]:
        loop = asyncio.get_running_loop()
        calls = _LoopCalls(loop)
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal wakeups
            wakeups += callback == calls._run
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        errors: list[Any] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))
        seen: list[int] = []

        def boom() -> None:
            raise RuntimeError("a callback's bug")

        def from_a_thread(first: int) -> None:
            calls.call(seen.append, first)
            calls.call(boom)
            calls.call(seen.append, first + 1)

        for first in (1, 3):
            # The loop is busy (here: waiting for the thread) while the thread calls.
            thread = threading.Thread(target=from_a_thread, args=(first,))
            thread.start()
            thread.join()
            await asyncio.sleep(0)
        return seen, wakeups, errors

    seen, wakeups, errors = asyncio.run(scenario())
    assert seen == [1, 2, 3, 4]
    assert wakeups == 2  # three calls each time, one wake-up
    assert [str(e) for e in errors] == ["a callback's bug"] * 2


def test_delivery_a_forced_stop_during_the_grace_period_cancels_and_releases_at_once(
    file_db: Database,
) -> None:
    """A forced stop (the second Ctrl-C: ``Service.handle_exit`` cancels the delivery
    task) while the sends have their grace cancels them and releases their rows at
    once. It used to cancel only the wait: the sends ran on and their rows stayed
    ``sending`` until the lease ran out."""
    with file_db.begin() as session:
        row_id = add_notification(session, add_user(session, "jo", "push", ("held",)), "push").id
    push = Held()
    config = make_config(file_db, shutdown_grace_seconds=60)
    senders = Senders(file_db, config, Metrics(), transports={"push": push})

    async def scenario() -> int:
        stop = asyncio.Event()
        runner = asyncio.create_task(senders.run(stop))
        await push.until_started(1)
        stop.set()  # the first Ctrl-C: the sends get their 60 s of grace
        await asyncio.sleep(0.3)
        runner.cancel()  # the second: stop now
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(runner, 10)
        return len(senders._inflight)

    left_running = asyncio.run(scenario())
    row = state_of(file_db, row_id)
    assert (left_running, row.state, row.claimed_by) == (0, "pending", None)
