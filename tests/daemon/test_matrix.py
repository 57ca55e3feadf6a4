"""The matrix context against a real Synapse on loopback: DMs from the bot, read by real clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import replace
from typing import Any

import pytest
from core.test_outbox import add_notification, add_user, state_of
from fasjson_server import running_fasjson
from matrix_server import SERVER_NAME, MatrixUser, Synapse

from fmn_core import preferences
from fmn_core.chat import notification_line
from fmn_core.config import Config, DeliveryConfig, MatrixConfig
from fmn_core.db import Database
from fmn_core.fasjson import FasjsonDirectory
from fmn_core.models import utcnow
from fmn_core.outbox import claim_due
from fmn_core.preferences import Actor
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LiveHub
from fmn_daemon.transports.matrix import MatrixClient, MatrixTransport


def unique(name: str) -> str:
    """A localpart no other test (or parametrization) uses on the shared homeserver."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def matrix_config(
    db: Database, synapse: Synapse, bot: MatrixUser, *, token: bool = False, **matrix: Any
) -> Config:
    delivery: dict[str, Any] = {"senders": 1, "idle_poll_seconds": 0.05}
    delivery.update(matrix.pop("delivery", {}))
    credentials: dict[str, Any] = (
        {"access_token": bot.access_token} if token else {"password": bot.password}
    )
    return db.config.replace(
        matrix=MatrixConfig(
            homeserver_url=synapse.base_url,
            user_id=bot.user_id,
            timeout_seconds=10,
            **credentials,
            **matrix,
        ),
        delivery=DeliveryConfig(**delivery),
    )


def drain(delivery: Senders, timeout: float = 30) -> int:
    return asyncio.run(delivery.drain(timeout))


def matrix_client(delivery: Senders) -> MatrixClient:
    transport = delivery.transports["matrix"]
    assert isinstance(transport, MatrixTransport)
    return transport.client


def invited_as_direct(user: MatrixUser, room: str) -> bool:
    """Whether the invite the user got for ``room`` marks it as a direct chat."""
    state = user.invites()[room]["invite_state"]["events"]
    member = [e for e in state if e["type"] == "m.room.member" and e["state_key"] == user.user_id]
    return bool(member and member[0]["content"].get("is_direct"))


def test_matrix_notification_reaches_the_users_dm_and_the_room_is_reused(
    db: Database, synapse: Synapse
) -> None:
    bot, alice = synapse.register(unique("fmnbot")), synapse.register(unique("alice"))
    with db.begin() as session:
        user = add_user(session, "alice", "matrix", (alice.user_id,))
        first = add_notification(session, user, "matrix").id
    config = matrix_config(db, synapse, bot)
    delivery = Senders(db, config, Metrics(), LiveHub())
    with db.begin() as session:
        (claimed,) = claim_due(session, worker="peek", limit=1, lease_seconds=0.001)
    expected_line = notification_line(claimed)
    assert drain(delivery) == 1
    assert state_of(db, first).state == "sent"

    room = alice.wait_for_invite()
    assert invited_as_direct(alice, room)
    alice.join(room)
    assert alice.wait_for_texts(room, 1) == [expected_line]
    assert alice.joined_members(room) == {bot.user_id, alice.user_id}
    assert bot.direct_rooms() == {alice.user_id: [room]}

    with db.begin() as session:
        second = add_notification(session, user, "matrix").id
    assert drain(delivery) == 1
    assert state_of(db, second).state == "sent"
    assert alice.wait_for_texts(room, 2) == [expected_line, expected_line]
    # Still the one room, and the one login: nothing was made again.
    assert bot.direct_rooms() == {alice.user_id: [room]}
    assert matrix_client(delivery).logins == 1

    # A fresh daemon (a restart) finds the room in m.direct instead of making one.
    with db.begin() as session:
        third = add_notification(session, user, "matrix").id
    drain(Senders(db, config, Metrics(), LiveHub()))
    assert state_of(db, third).state == "sent"
    assert len(alice.wait_for_texts(room, 3)) == 3
    assert bot.direct_rooms() == {alice.user_id: [room]}


def test_matrix_a_user_who_left_the_dm_gets_a_new_one(db: Database, synapse: Synapse) -> None:
    bot, alice = synapse.register(unique("fmnbot")), synapse.register(unique("alice"))
    with db.begin() as session:
        user = add_user(session, "alice", "matrix", (alice.user_id,))
        add_notification(session, user, "matrix")
    config = matrix_config(db, synapse, bot, token=True)
    drain(Senders(db, config, Metrics(), LiveHub()))
    old = alice.wait_for_invite()
    alice.join(old)
    alice.leave(old)
    with db.begin() as session:
        row = add_notification(session, user, "matrix").id
    drain(Senders(db, config, Metrics(), LiveHub()))
    assert state_of(db, row).state == "sent"
    new = alice.wait_for_invite()
    assert new != old
    alice.join(new)
    assert len(alice.wait_for_texts(new, 1)) == 1
    assert bot.direct_rooms()[alice.user_id][0] == new


def test_matrix_profile_id_needs_no_code_other_ids_confirm_with_one_sent_by_dm(
    db: Database, synapse: Synapse
) -> None:
    bot = synapse.register(unique("fmnbot"))
    alice, other = synapse.register(unique("alice")), synapse.register(unique("alice-alt"))
    # The test homeserver stands for the accounts' own (fedora.im): alice's Fedora
    # account name is her localpart there.
    account = alice.user_id[1:].split(":")[0]
    config = matrix_config(db, synapse, bot, accounts_server=SERVER_NAME)
    # The preference service reads the configuration from its session: the bot is set up.
    db.config = config
    db.sessionmaker.configure(info=db.session_info())
    actor = Actor(account)
    with running_fasjson() as fasjson:
        # Noggin's form for a Matrix ID on a given server.
        fasjson.add_user(account, ircnicks=[f"matrix://localhost/{account}"])
        directory = FasjsonDirectory(fasjson.url, auth="none")
        with db.begin() as session:
            session.info["directory"] = directory
            assert preferences.profile_addresses(session, actor)["matrix"] == (alice.user_id,)
            listed = preferences.set_destination(session, actor, "matrix", alice.user_id)
            unlisted = preferences.set_destination(session, actor, "matrix", other.user_id)
    assert (listed.destination.confirmed, listed.code) == (True, None)
    assert not unlisted.destination.confirmed and unlisted.code

    delivery = Senders(db, config, Metrics(), LiveHub())
    assert drain(delivery) == 1  # the code
    room = other.wait_for_invite()
    assert invited_as_direct(other, room)
    other.join(room)
    (message,) = other.wait_for_texts(room, 1)
    # Set through the preference service as the TUI does: the code, with the TUI's steps.
    assert f"Your confirmation code: {unlisted.code}" in message
    # The profile's own ID got nothing: it needed no code.
    assert alice.invites() == {}
    with db.begin() as session:
        code = message.split("Your confirmation code: ")[1].split()[0]
        result = preferences.confirm(session, actor, code)
    confirmed = result.destination
    assert confirmed is not None and confirmed.confirmed and confirmed.address == other.user_id
    assert drain(delivery) == 0  # nothing else waits


def test_matrix_someone_elses_id_in_a_profile_still_needs_a_code(
    db: Database, synapse: Synapse
) -> None:
    """mallory writes bob's Matrix ID into her own profile: bob must not get her
    notifications unasked. Only the ID the accounts' homeserver gives mallory herself
    is hers without a code."""
    bot = synapse.register(unique("fmnbot"))
    bob = synapse.register(unique("bob"))
    mallory = synapse.register(unique("mallory"))
    bob_account = bob.user_id[1:].split(":")[0]
    mallory_account = mallory.user_id[1:].split(":")[0]
    db.config = matrix_config(db, synapse, bot, accounts_server=SERVER_NAME)
    db.sessionmaker.configure(info=db.session_info())
    actor = Actor(mallory_account)
    with running_fasjson() as fasjson:
        # bob lists his own ID too: two profiles naming it prove nothing either way.
        fasjson.add_user(bob_account, ircnicks=[f"matrix://localhost/{bob_account}"])
        fasjson.add_user(
            mallory_account,
            ircnicks=[f"matrix://localhost/{bob_account}", f"matrix://localhost/{mallory_account}"],
        )
        with db.begin() as session:
            session.info["directory"] = FasjsonDirectory(fasjson.url, auth="none")
            offered = preferences.profile_addresses(session, actor)["matrix"]
            claimed = preferences.set_destination(session, actor, "matrix", bob.user_id)
            own = preferences.set_destination(session, actor, "matrix", mallory.user_id)
    assert offered == (mallory.user_id,)
    assert not claimed.destination.confirmed and claimed.code
    assert (own.destination.confirmed, own.code) == (True, None)
    # Nobody trusted: every profile ID gets a code, one's own too.
    carol = synapse.register(unique("carol"))
    carol_account = carol.user_id[1:].split(":")[0]
    db.config = db.config.replace(matrix=replace(db.config.matrix, accounts_server=""))
    db.sessionmaker.configure(info=db.session_info())
    with running_fasjson() as fasjson:
        fasjson.add_user(carol_account, ircnicks=[f"matrix://localhost/{carol_account}"])
        with db.begin() as session:
            session.info["directory"] = FasjsonDirectory(fasjson.url, auth="none")
            assert "matrix" not in preferences.profile_addresses(session, Actor(carol_account))
            again = preferences.set_destination(
                session, Actor(carol_account), "matrix", carol.user_id
            )
    assert not again.destination.confirmed and again.code


def test_matrix_digests_and_mutes_work_as_for_every_context(db: Database, synapse: Synapse) -> None:
    bot = synapse.register(unique("fmnbot"))
    alice, bob = synapse.register(unique("alice")), synapse.register(unique("bob"))
    with db.begin() as session:
        # alice collects 3 notifications into one digest; bob muted fmn for an hour.
        al = add_user(session, "alice", "matrix", (alice.user_id,), digest_count=3)
        bo = add_user(session, "bob", "matrix", (bob.user_id,))
        bo.muted_until = utcnow() + dt.timedelta(hours=1)
        digest = [add_notification(session, al, "matrix").id for _ in range(3)]
        muted = add_notification(session, bo, "matrix").id
    drain(Senders(db, matrix_config(db, synapse, bot), Metrics(), LiveHub()))
    assert {state_of(db, i).state for i in digest} == {"sent"}
    room = alice.wait_for_invite()
    alice.join(room)
    (line,) = alice.wait_for_texts(room, 1)
    assert line.startswith("Digest: 3 notifications, bodhi (3): ")
    held = state_of(db, muted)
    assert (held.state, held.attempts) == ("pending", 0)
    assert held.last_error is not None and "muted" in held.last_error
    assert bob.invites() == {}


@pytest.mark.slow  # about 5 s: it waits for the pacing it measures
def test_matrix_flood_control_paces_a_burst_and_collapses_the_rest(
    db: Database, synapse: Synapse
) -> None:
    bot = synapse.register(unique("fmnbot"))
    people = [synapse.register(unique(name)) for name in ("alice", "bob", "carol")]
    with db.begin() as session:
        users = [
            add_user(session, name, "matrix", (person.user_id,))
            for name, person in zip(("alice", "bob", "carol"), people, strict=True)
        ]
        # Above the burst of 2, alice's 4 rows are 1 line and one "3 more" line.
        for _ in range(4):
            add_notification(session, users[0], "matrix")
        for user in users[1:]:
            add_notification(session, user, "matrix")
    config = matrix_config(db, synapse, bot, lines_per_second=4.0, burst=2)
    assert drain(Senders(db, config, Metrics(), LiveHub())) == 6
    rooms = []
    for person in people:
        room = person.wait_for_invite()
        person.join(room)
        rooms.append(room)
    first = people[0].wait_for_texts(rooms[0], 2)
    assert len(first) == 2
    assert first[1].startswith("3 more notifications: ")

    # Rooms exist now; a fresh sender (a full bucket) sends 6 lines to 3 users: 2 at
    # once, then 4 per second, so the last goes at least a second after the first.
    with db.begin() as session:
        for user in users:
            for _ in range(2):
                add_notification(session, user, "matrix")
    assert drain(Senders(db, config, Metrics(), LiveHub())) == 6
    already = {0: 2, 1: 1, 2: 1}
    stamps: list[int] = []
    for index, (person, room) in enumerate(zip(people, rooms, strict=True)):
        events = person.messages(room)
        deadline = 50
        while len(events) < already[index] + 2 and deadline:
            deadline -= 1
            events = person.messages(room)
        stamps += [e["origin_server_ts"] for e in events[already[index] :]]
    stamps.sort()
    assert len(stamps) == 6
    # The homeserver's clock stamps them; some slack for the requests' own latency.
    assert stamps[-1] - stamps[0] >= 850


def test_matrix_a_bad_homeserver_answer_costs_only_that_row(db: Database, synapse: Synapse) -> None:
    bot, alice = synapse.register(unique("fmnbot")), synapse.register(unique("alice"))
    stranger = f"@{unique('bob')}:remote.invalid"  # no federation: the homeserver refuses
    with db.begin() as session:
        al = add_user(session, "alice", "matrix", (alice.user_id,))
        good = add_notification(session, al, "matrix")
        bad = add_notification(session, add_user(session, "bob", "matrix", (stranger,)), "matrix")
        good_id, bad_id = good.id, bad.id
    config = matrix_config(
        db,
        synapse,
        bot,
        token=True,
        delivery={"max_attempts": 3, "backoff_seconds": 0.0, "backoff_max_seconds": 0.0},
    )
    metrics = Metrics()
    drain(Senders(db, config, metrics, LiveHub()))
    assert state_of(db, good_id).state == "sent", state_of(db, good_id).last_error
    row = state_of(db, bad_id)
    assert (row.state, row.attempts) == ("dead", 3)
    assert row.last_error is not None
    assert "M_FORBIDDEN" in row.last_error and "Federation denied" in row.last_error
    assert stranger not in row.last_error  # masked
    assert metrics.get("notifications_failed") == 2
    assert metrics.get("notifications_dead") == 1
    room = alice.wait_for_invite()
    alice.join(room)
    assert len(alice.wait_for_texts(room, 1)) == 1


def test_matrix_bot_with_a_wrong_password_fails_the_rows_with_a_reason(
    db: Database, synapse: Synapse
) -> None:
    bot, alice = synapse.register(unique("fmnbot")), synapse.register(unique("alice"))
    with db.begin() as session:
        user = add_user(session, "alice", "matrix", (alice.user_id,))
        row_id = add_notification(session, user, "matrix").id
    config = db.config.replace(
        matrix=MatrixConfig(
            homeserver_url=synapse.base_url, user_id=bot.user_id, password="not-the-password"
        ),
        delivery=DeliveryConfig(senders=1, max_attempts=5, backoff_seconds=60),
    )
    drain(Senders(db, config, Metrics(), LiveHub()))
    row = state_of(db, row_id)
    assert (row.state, row.attempts) == ("failed", 1)
    assert row.last_error is not None and "could not log in" in row.last_error
    assert "M_FORBIDDEN" in row.last_error
    assert "not-the-password" not in row.last_error
    assert alice.invites() == {}


@pytest.mark.parametrize("answer", ["redirect", "huge"])
def test_matrix_client_follows_no_redirect_and_reads_no_huge_answer(answer: str) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from fmn_daemon.transports import TransportError
    from fmn_daemon.transports.matrix import MAX_ANSWER_BYTES

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if answer == "redirect":
                self.send_response(307)
                self.send_header("Location", "http://169.254.169.254/_matrix/client/v3/login")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b'{"x": "' + b"a" * (MAX_ANSWER_BYTES + 10) + b'"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        config = MatrixConfig(
            homeserver_url=f"http://127.0.0.1:{server.server_address[1]}",
            user_id="@fmn:localhost",
            password="secret",
        )
        client = MatrixClient(config)
        with pytest.raises(TransportError) as caught:
            asyncio.run(client.send_text("@alice:localhost", "hello"))
        expected = "redirect" if answer == "redirect" else "larger than"
        assert expected in caught.value.reason
        assert "secret" not in caught.value.reason
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _rate_limited(retry_after_ms: bytes) -> bytes:
    return (
        b'{"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": '
        + retry_after_ms
        + b"}"
    )


@pytest.mark.parametrize(
    ("status", "body", "reason", "requests"),
    [
        pytest.param(
            200, b"[" * 100_000 + b"]" * 100_000, "HTTP 200 the answer is not JSON", 1, id="deep"
        ),
        pytest.param(
            429, _rate_limited(b"1" + b"0" * 400), "HTTP 429 M_LIMIT_EXCEEDED", 1, id="huge"
        ),
        pytest.param(429, _rate_limited(b"NaN"), "HTTP 429 M_LIMIT_EXCEEDED", 1, id="nan"),
        pytest.param(429, _rate_limited(b"-5000"), "HTTP 429 M_LIMIT_EXCEEDED", 1, id="negative"),
        pytest.param(429, _rate_limited(b"31000"), "HTTP 429 M_LIMIT_EXCEEDED", 1, id="too-long"),
        # Within range: waited for once, asked again, then given up with the reason.
        pytest.param(429, _rate_limited(b"10"), "HTTP 429 M_LIMIT_EXCEEDED", 2, id="short"),
    ],
)
def test_matrix_client_reads_a_hostile_answer_as_the_homeservers_error(
    status: int, body: bytes, reason: str, requests: int
) -> None:
    """100,000 nested lists, or a ``retry_after_ms`` of 10**400 (no float holds it), NaN,
    a negative or an overlong wait: a TransportError with the homeserver's status and
    reason, not a RecursionError or OverflowError reported as an internal error."""
    from hostile_http import hostile_server, reply

    from fmn_daemon.transports import TransportError

    def answer(conn: Any, request: bytes) -> None:
        reply(conn, status, body, "Content-Type: application/json")

    with hostile_server(answer) as server:
        config = MatrixConfig(
            homeserver_url=server.url,
            user_id="@fmn:localhost",
            password="secret",
            timeout_seconds=5,
        )
        with pytest.raises(TransportError) as caught:
            asyncio.run(MatrixClient(config).send_text("@alice:localhost", "hello"))
        assert len(server.requests) == requests
    assert "could not log in" in caught.value.reason and reason in caught.value.reason
    assert "secret" not in caught.value.reason


def test_matrix_retry_after_is_used_only_within_its_range() -> None:
    from fmn_daemon.transports.matrix import MAX_RETRY_AFTER_SECONDS, _json_object, _retry_after

    most = MAX_RETRY_AFTER_SECONDS * 1000
    assert _retry_after({"retry_after_ms": 1500}) == 1.5
    assert _retry_after({"retry_after_ms": most}) == MAX_RETRY_AFTER_SECONDS
    for value in (
        most + 1,
        10**400,
        -(10**400),
        -1,
        float("nan"),
        float("inf"),
        True,
        "5000",
        None,
    ):
        assert _retry_after({"retry_after_ms": value}) is None, value
    assert _json_object(b"[" * 100_000 + b"]" * 100_000) == {"error": "the answer is not JSON"}
