"""A context whose sends stall costs only itself: the others' rows are still claimed.

An SMTP relay that accepts connections and never answers keeps every mail to
``smtp.timeout_seconds``: e-mail fills the claim-ahead bound it shares with the fast
contexts, and claims then leave e-mail out rather than stop. A context left out of the
claims (its room full) is claimed again as soon as one of its sends ends, not at the
next poll.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from core.test_outbox import add_notification, add_user, state_of

from daemon.conftest import PushReceiver
from fmn_core.config import DeliveryConfig, PushConfig, SmtpConfig
from fmn_core.db import Database
from fmn_core.rendering import Rendered
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports import Transport
from fmn_daemon.transports.email import EmailTransport
from fmn_daemon.transports.feed import FeedTransport
from fmn_daemon.transports.push import PushTransport

#: A row that is not held up goes within this.
PROMPT = 1.5
SMTP_TIMEOUT = 2.0


@pytest.fixture
def silent_smtp() -> Iterator[int]:
    """A port on 127.0.0.1 whose server accepts every connection and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    held: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, name="silent-smtp", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        closing.set()
        listener.close()
        for conn in held:
            conn.close()
        thread.join(timeout=5)


@pytest.mark.parametrize("senders", [2, 4])
def test_transport_claims_a_silent_mail_server_stops_no_claim_of_other_contexts(
    committed: Database,
    silent_smtp: int,
    push_receiver: PushReceiver,
    senders: int,
) -> None:
    """Twice as many mails as send slots wait on a relay that never answers (the claim-
    ahead bound full) when a push row and an rss row come: both go at once, and the
    mails fail once their timeout is up, as before. Claims used to stop until a mail
    ended, so every other context waited for the SMTP timeout."""
    db = committed
    config = db.config.replace(
        smtp=SmtpConfig(host="127.0.0.1", port=silent_smtp, timeout_seconds=SMTP_TIMEOUT),
        push=PushConfig(allow_private_hosts=True, timeout_seconds=2),
        delivery=DeliveryConfig(senders=senders, idle_poll_seconds=0.05, shutdown_grace_seconds=0),
    )
    mails = 2 * senders
    with db.begin() as session:
        mail_ids = [
            add_notification(session, add_user(session, f"u{n}", "email", (f"u{n}@ex.org",))).id
            for n in range(mails)
        ]
    transports: dict[str, Transport] = {
        "email": EmailTransport(config.smtp),
        "push": PushTransport(config.push, threads=4),
        "rss": FeedTransport(),
    }
    sender = Senders(db, config, Metrics(), transports=transports)

    def other_rows() -> tuple[int, int]:
        with db.begin() as session:
            jo = add_user(session, "jo", "push", (f"ntfy://127.0.0.1:{push_receiver.port}/jo",))
            push = add_notification(session, jo, "push").id
            al = add_user(session, "al", "rss", ("rss-token-aaaaaaaaaaaaaaaa",))
            return push, add_notification(session, al, "rss").id

    async def scenario() -> tuple[float, float]:
        stop = asyncio.Event()
        runner = asyncio.create_task(sender.run(stop))
        try:
            await _until(lambda: len(sender._inflight) == mails, 5)
            assert len(sender._inflight) == mails
            started = time.monotonic()
            _, rss = await asyncio.to_thread(other_rows)
            pushed = asyncio.create_task(_until_pushed(push_receiver))
            rss_after = await _until(lambda: state_of(db, rss).state == "sent", 10) - started
            push_after = await pushed - started
            # Every mail goes on to fail at its timeout, a slot's one after the other.
            await _until(lambda: all(state_of(db, i).state == "failed" for i in mail_ids), 30)
            return push_after, rss_after
        finally:
            stop.set()
            await asyncio.wait_for(runner, 30)

    push_after, rss_after = asyncio.run(scenario())
    assert push_receiver.requests
    waited = f"the push row waited {push_after:.1f}s, the rss row {rss_after:.1f}s"
    assert max(push_after, rss_after) < PROMPT, waited
    rows = [state_of(db, i) for i in mail_ids]
    assert [r.state for r in rows] == ["failed"] * mails
    assert all(r.attempts == 1 for r in rows)


async def _until_pushed(receiver: PushReceiver) -> float:
    """When the receiver got its first request (or gave up waiting, 10 s on)."""
    await asyncio.to_thread(receiver.wait_for, 1, 10)
    return time.monotonic()


async def _until(condition: Callable[[], bool], seconds: float) -> float:
    """Poll ``condition`` until it holds or ``seconds`` passed; when it was last polled."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return time.monotonic()


class _Gated:
    """A Matrix-like paced transport whose sends end when the test says so."""

    lines_per_second = 1.0

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gate = asyncio.Semaphore(0)

    async def send(self, destination: str, rendered: Rendered) -> None:
        self.started.append(destination)
        await self.gate.acquire()


def test_transport_claims_a_context_left_out_is_claimed_again_when_a_send_ends(
    committed: Database,
) -> None:
    """Matrix's room holds 2 lines (1 line/s, an 8 s lease): 2 of 3 users' lines are
    claimed, the third given back, and claims leave Matrix out. Once one line went, the
    third is claimed and sent at once; it used to wait for the next poll (30 s here) or
    new rows."""
    db = committed
    config = db.config.replace(
        delivery=DeliveryConfig(
            senders=4, idle_poll_seconds=30, claim_lease_seconds=8, shutdown_grace_seconds=0
        ),
    )
    with db.begin() as session:
        for n in range(3):
            add_notification(
                session, add_user(session, f"m{n}", "matrix", (f"@m{n}:hs",)), "matrix"
            )
    matrix = _Gated()
    sender = Senders(db, config, Metrics(), transports={"matrix": matrix})

    async def scenario() -> float:
        stop = asyncio.Event()
        runner = asyncio.create_task(sender.run(stop))
        try:
            await _until(lambda: len(matrix.started) == 2, 5)
            assert sorted(matrix.started) == ["@m0:hs", "@m1:hs"]
            await asyncio.sleep(0.3)  # the claimer is idle now, Matrix left out
            assert len(matrix.started) == 2
            matrix.gate.release()
            went = time.monotonic()
            return await _until(lambda: len(matrix.started) == 3, 5) - went
        finally:
            stop.set()
            await asyncio.wait_for(runner, 30)

    waited = asyncio.run(scenario())
    assert waited < PROMPT, f"the third line waited {waited:.1f}s"
