"""One user, or one slow push service, costs only itself: nobody else's rows wait.

Push servers are the users' own: one that drips its answer keeps a send to its
deadline. A user's push jobs hold at most a share of the push send slots at once,
push never holds a slot or the claim-ahead room e-mail needs, and no more push rows
are claimed than the slots can send before the claim's lease ends.
"""

from __future__ import annotations

import asyncio
import time

from core.test_outbox import add_notification, add_user, state_of

from daemon.conftest import PushReceiver, SmtpServer
from daemon.test_push import answering, drip_body, ntfy_url
from daemon.test_transport_pacing import Held
from fmn_core.config import Config, DeliveryConfig, HttpConfig, PushConfig, SmtpConfig
from fmn_core.db import Database
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports import Transport
from fmn_daemon.transports.email import EmailTransport
from fmn_daemon.transports.push import SEND_DEADLINE_TIMEOUTS, PushTransport

#: Each send to a dripping server lasts its deadline: 3 x 2 s.
PUSH = PushConfig(allow_private_hosts=True, timeout_seconds=2)
DEADLINE = PUSH.timeout_seconds * SEND_DEADLINE_TIMEOUTS
#: A good row goes within this; behind the hostile rows it would wait a deadline or more.
PROMPT = 1.5


def _config(db: Database, smtp: SmtpServer) -> Config:
    return db.config.replace(
        smtp=SmtpConfig(host=smtp.host, port=smtp.port, timeout_seconds=5),
        push=PUSH,
        http=HttpConfig(public_url="https://fmn.example.org", secret_key="k"),
        delivery=DeliveryConfig(senders=4, idle_poll_seconds=0.05, shutdown_grace_seconds=0),
    )


def _senders(db: Database, config: Config) -> Senders:
    transports: dict[str, Transport] = {
        "email": EmailTransport(config.smtp),
        "push": PushTransport(config.push, threads=4 * 5 + 1),
    }
    return Senders(db, config, Metrics(), transports=transports)


def _good_rows(db: Database, receiver: PushReceiver) -> None:
    with db.begin() as session:
        jo = add_user(session, "jo", "push", (f"ntfy://127.0.0.1:{receiver.port}/jo",))
        add_notification(session, jo, "push")
        add_notification(session, add_user(session, "ann", "email", ("ann@example.org",)))


async def _until_good_rows_went(
    receiver: PushReceiver, smtp: SmtpServer, since: float
) -> tuple[float, float]:
    """When the good push row and the mail arrived, in seconds after ``since``."""

    async def arrival(wait: object) -> float:
        await asyncio.to_thread(wait, 1, 4 * DEADLINE)  # type: ignore[arg-type]
        return time.monotonic() - since

    push_after, mail_after = await asyncio.gather(
        arrival(receiver.wait_for), arrival(smtp.wait_for)
    )
    return push_after, mail_after


def test_transport_fairness_a_users_dripping_push_servers_hold_up_no_one_else(
    committed: Database, push_receiver: PushReceiver, smtp_server: SmtpServer
) -> None:
    """4 send slots; a user with 10 push rows to a server that drips every answer
    until the send's deadline (6 s), then another user's push row and a mail: both go
    at once. They used to wait behind the hostile rows in the shared slots (the mail
    a deadline, the push row three)."""
    db = committed
    with answering(drip_body) as (server, _):
        with db.begin() as session:
            mallory = add_user(session, "mallory", "push", (ntfy_url(server, "m"),))
            for _ in range(10):
                add_notification(session, mallory, "push")
        _good_rows(db, push_receiver)
        senders = _senders(db, _config(db, smtp_server))

        async def scenario() -> tuple[float, float]:
            stop = asyncio.Event()
            started = time.monotonic()
            runner = asyncio.create_task(senders.run(stop))
            try:
                return await _until_good_rows_went(push_receiver, smtp_server, started)
            finally:
                stop.set()
                await asyncio.wait_for(runner, 30)

        push_after, mail_after = asyncio.run(scenario())
    waited = f"the good push row waited {push_after:.1f}s, the mail {mail_after:.1f}s"
    assert max(push_after, mail_after) < PROMPT, waited


def test_transport_fairness_push_in_flight_stops_no_claim_of_mail(
    committed: Database, push_receiver: PushReceiver, smtp_server: SmtpServer
) -> None:
    """Two users' 5 push rows each, all kept to their deadline by a dripping server, are
    in flight (more than twice the 4 slots) when a mail and another user's push row
    come: both are claimed and sent at once. Push sends in flight used to count
    against the one claim-ahead bound, which stopped every claim until they ended."""
    db = committed
    with answering(drip_body) as (server, _):
        with db.begin() as session:
            for name in ("mallory", "trent"):
                user = add_user(session, name, "push", (ntfy_url(server, name),))
                for _ in range(5):
                    add_notification(session, user, "push")
        senders = _senders(db, _config(db, smtp_server))

        async def scenario() -> tuple[float, float]:
            stop = asyncio.Event()
            runner = asyncio.create_task(senders.run(stop))
            try:
                for _ in range(100):
                    if len(senders._inflight) == 10 and server.request_lines():
                        break
                    await asyncio.sleep(0.05)
                assert len(senders._inflight) == 10
                await asyncio.to_thread(_good_rows, db, push_receiver)
                return await _until_good_rows_went(push_receiver, smtp_server, time.monotonic())
            finally:
                stop.set()
                await asyncio.wait_for(runner, 30)

        push_after, mail_after = asyncio.run(scenario())
    waited = f"the good push row waited {push_after:.1f}s, the mail {mail_after:.1f}s"
    assert max(push_after, mail_after) < PROMPT, waited


def test_transport_fairness_no_more_push_is_claimed_than_goes_before_the_lease(
    db: Database,
) -> None:
    """A 24 s lease, sends of up to 3 s (1 s timeouts), 4 slots, 1 a user: a quarter
    of the lease is 2 sends of one user's and 8 of everyone's. The user's other rows
    are put off a deadline (pending, no attempt counted), the others' beyond 8 given
    back at once, and the next claim leaves push out. All used to be claimed at once
    and wait past their lease, to be claimed and sent again."""
    with db.begin() as session:
        mallory = add_user(session, "mallory", "push", ("m",))
        hostile = [add_notification(session, mallory, "push").id for _ in range(10)]
        others = [
            add_notification(session, add_user(session, f"u{n}", "push", (f"u{n}",)), "push").id
            for n in range(11)
        ]
    push_config = PushConfig(timeout_seconds=1)
    config = db.config.replace(
        push=push_config, delivery=DeliveryConfig(senders=4, claim_lease_seconds=24)
    )
    push = Held()
    senders = Senders(db, config, Metrics(), transports={"push": push})

    async def scenario() -> tuple[list[str], list[str]]:
        await senders._start_round(codes=False)
        first = [state_of(db, i).state for i in [*hostile, *others]]
        await senders._start_round(codes=False)
        await push.until_started(4)
        second = [state_of(db, i).state for i in [*hostile, *others]]
        await senders._finish(0.0)
        return first, second

    first, second = asyncio.run(scenario())
    expected = ["sending"] * 2 + ["pending"] * 8 + ["sending"] * 6 + ["pending"] * 5
    assert first == expected
    assert second == expected
    # One slot for her, the other three for the others: her second job waits its turn.
    assert push.started.count("m") == 1 and len(push.started) == 4
    rows = [state_of(db, i) for i in [*hostile, *others]]
    assert all(r.attempts == 0 for r in rows)
    later = [r.next_attempt_at for r in rows[2:10]]
    assert all(at is not None for at in later)
