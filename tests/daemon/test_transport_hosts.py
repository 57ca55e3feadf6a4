"""One push host that hangs for everyone costs only its own users.

Many users may have their push URLs on one server (everybody's ntfy on one host).
When it stops answering, each of its users' jobs waits within its user's share of the
push slots, but together they would fill every slot and keep other hosts' pushes
waiting a send deadline each. The jobs of one host hold at most a share of the push
slots; the host's others wait their turn holding none, and go once it is free. Nor do
they fill push's claim-ahead room: a host's jobs beyond its own room are put off a
send deadline, and claims leave push out only when it is full by the users' measure
and by the hosts' both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from core.test_outbox import add_notification, add_user, state_of
from hostile_http import HostileServer, hostile_server, json_reply

from daemon.conftest import PushReceiver
from daemon.test_push import ntfy_url
from daemon.test_transport_pacing import Held
from fmn_core.config import Config, DeliveryConfig, HttpConfig, PushConfig
from fmn_core.db import Database
from fmn_core.models import utcnow
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.send_room import push_host
from fmn_daemon.transports.push import SEND_DEADLINE_TIMEOUTS, PushTransport

#: Sends time out after 3 s unanswered: the held server answers before that.
PUSH = PushConfig(allow_private_hosts=True, timeout_seconds=3)
SENDERS = 4
#: A push to a healthy host goes within this; behind the held host's jobs it would
#: wait until they are answered.
PROMPT = 1.5


@contextmanager
def held_server() -> Iterator[tuple[HostileServer, threading.Event]]:
    """A push server that holds every request, answering only once the event is set
    (or the test ends)."""
    release = threading.Event()

    def answer(conn: socket.socket, request: bytes) -> None:
        release.wait(10)
        json_reply(conn, {"id": "x"})

    with hostile_server(answer) as server:
        try:
            yield server, release
        finally:
            release.set()


def _config(db: Database) -> Config:
    return db.config.replace(
        push=PUSH,
        http=HttpConfig(public_url="https://fmn.example.org", secret_key="k"),
        delivery=DeliveryConfig(senders=SENDERS, idle_poll_seconds=0.05, shutdown_grace_seconds=0),
    )


def _senders(db: Database) -> Senders:
    push = PushTransport(PUSH, threads=SENDERS * 5 + 1)
    return Senders(db, _config(db), Metrics(), transports={"push": push})


def _held_rows(db: Database, server: HostileServer, users: int, each: int) -> list[int]:
    with db.begin() as session:
        owners = [
            add_user(session, f"h{n}", "push", (ntfy_url(server, f"h{n}"),)) for n in range(users)
        ]
        return [add_notification(session, o, "push").id for _ in range(each) for o in owners]


def _good_row(db: Database, receiver: PushReceiver) -> int:
    with db.begin() as session:
        jo = add_user(session, "jo", "push", (f"ntfy://127.0.0.1:{receiver.port}/jo",))
        return add_notification(session, jo, "push").id


async def _until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


def test_transport_hosts_a_held_host_fills_its_share_and_other_hosts_push_at_once(
    committed: Database, push_receiver: PushReceiver
) -> None:
    """4 push slots, a user's share 1, a host's 2: 4 users with 2 push rows each on one
    server that holds every request. Its jobs hold 2 slots, the other 6 wait their
    turn; another user's push to another server goes at once (it used to wait until
    the held ones were answered: 4 users' jobs filled all 4 slots). Once the server
    answers, every one of its rows is sent."""
    db = committed
    with held_server() as (server, release):
        held = _held_rows(db, server, users=4, each=2)
        senders = _senders(db)

        async def scenario() -> tuple[int, float, int]:
            stop = asyncio.Event()
            runner = asyncio.create_task(senders.run(stop))
            try:
                assert await _until(lambda: len(server.request_lines()) >= 2, 5)
                await asyncio.sleep(0.3)  # room for more to arrive, were they let through
                holding = len(server.request_lines())
                good = await asyncio.to_thread(_good_row, db, push_receiver)
                started = time.monotonic()
                await asyncio.to_thread(push_receiver.wait_for, 1, PROMPT)
                good_after = time.monotonic() - started
                still_holding = len(server.request_lines())
                release.set()
                rows = [*held, good]
                assert await _until(
                    lambda: all(state_of(db, i).state == "sent" for i in rows), 10
                ), [state_of(db, i).state for i in rows]
                return holding, good_after, still_holding
            finally:
                release.set()
                stop.set()
                await asyncio.wait_for(runner, 30)

        holding, good_after, still_holding = asyncio.run(scenario())
    assert good_after < PROMPT, f"the push to the healthy host waited {good_after:.1f}s"
    assert (holding, still_holding) == (2, 2), "the held host's jobs took more than half the slots"
    assert len(server.request_lines()) == len(held)
    assert all(state_of(db, i).attempts == 0 for i in held), "a held row failed on the way"
    assert not senders._host_turns._turns, "a host's bookkeeping outlived its jobs"


def test_transport_hosts_a_held_host_for_many_users_stops_no_claim_of_other_hosts_push(
    committed: Database, push_receiver: PushReceiver
) -> None:
    """A 72 s lease and 9 s deadlines: push's claim-ahead room is 8 send deadlines, a
    host's 4, a user's counted up to 2. As many users as the room holds, one push row
    each, all on one server that holds every request: 4 of their jobs are claimed, the
    other 4 put off a deadline (pending, no attempt counted). A push row for a user of
    another server, committed after them, is claimed and sent at once. The held users'
    jobs used to fill push's room (each user within the cap), and claims left push out
    until they ended. Once the server answers, each held row is sent once."""
    db = committed
    shift = [dt.timedelta(0)]
    config = _config(db).replace(
        delivery=DeliveryConfig(
            senders=SENDERS,
            claim_lease_seconds=72,
            idle_poll_seconds=0.05,
            shutdown_grace_seconds=0,
        )
    )
    push = PushTransport(PUSH, threads=SENDERS * 5 + 1)
    senders = Senders(
        db, config, Metrics(), transports={"push": push}, clock=lambda: utcnow() + shift[0]
    )
    room, host_room = senders._push_room, senders._host_room
    # Enough users to fill the room (more than half of it leaves push out), each within
    # the user's cap; a host's room is at most half of it.
    assert (room, host_room, senders._user_cap) == (8, 4, 2)
    with held_server() as (server, release):
        held = _held_rows(db, server, users=room, each=1)

        async def scenario() -> tuple[float, list[tuple[str, int]]]:
            stop = asyncio.Event()
            runner = asyncio.create_task(senders.run(stop))
            try:
                assert await _until(lambda: len(server.request_lines()) >= 2, 5)
                await asyncio.sleep(0.3)  # room for the claims to settle
                good = await asyncio.to_thread(_good_row, db, push_receiver)
                started = time.monotonic()
                await asyncio.to_thread(push_receiver.wait_for, 1, PROMPT)
                good_after = time.monotonic() - started
                while_held = [(state_of(db, i).state, state_of(db, i).attempts) for i in held]
                release.set()
                first = held[:host_room]
                assert await _until(
                    lambda: all(state_of(db, i).state == "sent" for i in first), 10
                ), [state_of(db, i).state for i in held]
                # The put-off rows are due a deadline later: move the senders' clock there.
                shift[0] = dt.timedelta(seconds=PUSH.timeout_seconds * SEND_DEADLINE_TIMEOUTS)
                rows = [*held, good]
                assert await _until(
                    lambda: all(state_of(db, i).state == "sent" for i in rows), 10
                ), [state_of(db, i).state for i in rows]
                return good_after, while_held
            finally:
                release.set()
                stop.set()
                await asyncio.wait_for(runner, 30)

        good_after, while_held = asyncio.run(scenario())
    assert good_after < PROMPT, f"the push to the healthy host waited {good_after:.1f}s"
    put_off = len(held) - host_room
    assert while_held == [("sending", 0)] * host_room + [("pending", 0)] * put_off
    assert len(server.request_lines()) == len(held), "a held row was sent more than once"
    assert all(state_of(db, i).attempts == 0 for i in held)
    assert not senders._push_rounds and not senders._host_rounds
    assert (senders._push_counted, senders._host_counted) == (0, 0)
    assert not senders._host_turns._turns, "a host's bookkeeping outlived its jobs"


def test_transport_hosts_one_users_job_to_many_hosts_stops_no_claim_of_push(
    db: Database,
) -> None:
    """A 24 s lease, 3 s deadlines, 4 slots: push's room is 8 send deadlines, a user's
    counted up to 2, a host's up to 4. One user's job to 10 destinations on 9 hosts
    (two deadlines: 5 go at once) counts its 2 on each host once: 18 by the hosts'
    measure, 2 by the users'. Push is full only when both are over half the room, so
    the next claim still takes another user's push row; once the jobs end, nothing is
    left counted."""
    urls = (*(f"json://h{n}.example/x" for n in range(9)), "json://h0.example/y")
    with db.begin() as session:
        add_notification(session, add_user(session, "wide", "push", urls), "push")
    config = db.config.replace(
        push=PushConfig(timeout_seconds=1),
        delivery=DeliveryConfig(senders=SENDERS, claim_lease_seconds=24),
    )
    push = Held()
    senders = Senders(db, config, Metrics(), transports={"push": push})
    assert (senders._push_room, senders._user_cap, senders._host_cap) == (8, 2, 4)

    async def scenario() -> None:
        await senders._start_round(codes=False)
        assert senders._host_rounds == {f"h{n}.example": 2 for n in range(9)}
        assert (senders._push_counted, senders._host_counted) == (2, 18)
        with db.begin() as session:
            jo = add_user(session, "jo", "push", ("json://other.example/jo",))
            row = add_notification(session, jo, "push").id
        await senders._start_round(codes=False)
        await asyncio.sleep(0.05)
        assert state_of(db, row).state == "sending"
        assert "json://other.example/jo" in push.started
        await senders._finish(0.0)

    asyncio.run(scenario())
    assert not senders._push_rounds and not senders._host_rounds
    assert (senders._push_counted, senders._host_counted) == (0, 0)


def test_transport_hosts_a_host_that_never_answers_fails_each_of_its_rows_once(
    committed: Database, push_receiver: PushReceiver
) -> None:
    """The same server never answers, and sends time out after 0.5 s: its 6 rows go 2
    at a time and each fails once (``failed``, 1 attempt, retried later), none left
    waiting for a turn; the other host's row is sent."""
    db = committed
    push = PushConfig(allow_private_hosts=True, timeout_seconds=0.5)
    with held_server() as (server, _):
        held = _held_rows(db, server, users=3, each=2)
        good = _good_row(db, push_receiver)
        config = _config(db).replace(push=push)
        transport = PushTransport(push, threads=SENDERS * 5 + 1)
        senders = Senders(db, config, Metrics(), transports={"push": transport})

        async def scenario() -> None:
            stop = asyncio.Event()
            runner = asyncio.create_task(senders.run(stop))
            try:
                assert await _until(
                    lambda: all(state_of(db, i).state == "failed" for i in held), 10
                ), [state_of(db, i).state for i in held]
            finally:
                stop.set()
                await asyncio.wait_for(runner, 30)

        asyncio.run(scenario())
    assert [state_of(db, i).attempts for i in held] == [1] * len(held)
    assert len(server.request_lines()) == len(held)
    assert state_of(db, good).state == "sent"
    assert not senders._host_turns._turns, "a host's bookkeeping outlived its jobs"


def test_transport_hosts_a_forced_stop_gives_every_turn_back(db: Database) -> None:
    """A job to two hosts holds a turn of each; jobs waiting for a host's turn, cancelled
    by a forced stop, leave no turn taken and no host's bookkeeping behind, and their
    rows go back to ``pending`` with no attempt counted."""

    with db.begin() as session:
        rows = [
            add_notification(
                session,
                add_user(session, f"u{n}", "push", ("json://b.example/x", "json://a.example/y")),
                "push",
            ).id
            for n in range(4)
        ]
    push = Held()
    config = db.config.replace(push=PUSH, delivery=DeliveryConfig(senders=SENDERS))
    senders = Senders(db, config, Metrics(), transports={"push": push})

    async def scenario() -> None:
        await senders._start_round(codes=False)
        await push.until_started(4)
        turns = senders._host_turns
        # Two jobs at a time hold a turn of each host; the others wait for a.example's.
        assert len(push.started) == 4
        assert {h: s.free for h, s in turns._turns.items()} == {"a.example": 0, "b.example": 0}
        await senders._finish(0.0)
        assert not turns._turns
        assert not senders._turns._turns
        assert senders._push_slots.free == SENDERS

    asyncio.run(scenario())
    assert [(state_of(db, i).state, state_of(db, i).attempts) for i in rows] == [("pending", 0)] * 4


def test_transport_hosts_jobs_to_two_hosts_in_opposite_orders_never_wait_for_each_other(
    db: Database,
) -> None:
    """2 push slots, a host's share 1. Jobs to h.example and to g.example are held; then
    one user's job to h and g, and another's to g and h. Once the held ones end, both
    go. Had each taken its hosts' turns in its own order, the first would hold h and
    wait for g, the second hold g and wait for h, for ever."""

    class Gated:
        def __init__(self) -> None:
            self.gates: dict[str, asyncio.Event] = {}
            self.sent: list[str] = []

        async def send(self, destination: str, rendered: object) -> None:
            gate = self.gates.get(destination)
            if gate is not None:
                await gate.wait()
            self.sent.append(destination)

    h, g = "json://h.example/", "json://g.example/"
    with db.begin() as session:
        rows = [
            add_notification(session, add_user(session, name, "push", urls), "push").id
            for name, urls in [
                ("x", (h + "x",)),
                ("y", (g + "y",)),
                ("a", (h + "a", g + "a")),
                ("b", (g + "b", h + "b")),
            ]
        ]
    push = Gated()
    config = db.config.replace(push=PUSH, delivery=DeliveryConfig(senders=2))
    senders = Senders(db, config, Metrics(), transports={"push": push})

    async def scenario() -> None:
        push.gates = {h + "x": asyncio.Event(), g + "y": asyncio.Event()}
        await senders._start_round(codes=False)
        await asyncio.sleep(0.05)
        assert push.sent == []
        push.gates[h + "x"].set()
        await asyncio.sleep(0.05)
        push.gates[g + "y"].set()
        try:
            await asyncio.wait_for(asyncio.wait(list(senders._inflight)), 2)
        finally:
            await senders._finish(0.0)

    asyncio.run(scenario())
    assert sorted(push.sent) == sorted([h + "x", g + "y", h + "a", g + "a", g + "b", h + "b"])
    assert [state_of(db, i).state for i in rows] == ["sent"] * 4


@pytest.mark.parametrize(
    ("context", "destination", "host"),
    [
        ("push", "ntfys://ntfy.example.org/topic", "ntfy.example.org"),
        (
            "push",
            "ntfys://User:Pass@NTFY.example.org:8443/t?priority=high",
            "ntfy.example.org:8443",
        ),
        ("push", "ntfy://my-topic", "ntfy.sh"),
        ("push", "ntfys://ntfy.sh/my-topic", "ntfy.sh"),
        ("push", "ntfy://ntfy.example.org/t?mode=cloud", "ntfy.sh"),
        ("push", "ntfy://ntfy.example.org?mode=private", "ntfy.example.org"),
        ("desktop", "gotify://push.example.org/token", "push.example.org"),
        ("push", "json://[2001:db8::1]:8080/hook", "[2001:db8::1]:8080"),
        ("android", "ntfys://ntfy.example.org/phone", "ntfy.example.org"),
        ("android", "fcm:abcdefghijklmnopqrstuvwxyz", "fcm.googleapis.com"),
        ("android", "abcdefghijklmnopqrstuvwxyz", "fcm.googleapis.com"),
        ("push", "not-a-url", "not-a-url"),
        ("push", "tgram://123:token/chat", "tgram://"),
    ],
)
def test_transport_hosts_a_destination_counts_against_the_host_it_goes_to(
    context: str, destination: str, host: str
) -> None:
    assert push_host(context, destination) == host


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # The same server, spelled with its scheme's default port.
        ("ntfys://ntfy.example.org/a", "ntfys://ntfy.example.org:443/b"),
        ("ntfy://ntfy.example.org/a", "ntfy://ntfy.example.org:80/b"),
        ("json://hooks.example.org/a", "json://hooks.example.org:80/b"),
        # The same server, its name fully qualified (a trailing dot): check_push_url
        # takes both, and both reach the same addresses.
        ("ntfys://ntfy.example.org/a", "ntfys://ntfy.example.org./b"),
    ],
)
def test_transport_hosts_one_server_spelled_two_ways_is_one_host(one: str, other: str) -> None:
    """One server however its URL spells it: spelled two ways, it would have two halves
    of push's slots, all of them when it hangs."""
    assert push_host("push", one) == push_host("push", other)
