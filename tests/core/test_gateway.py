"""The preference gateway's protocol and serving side, over a real socketpair, on both databases."""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import logging
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from conftest import database_locked  # tests/conftest.py (tests/ is on sys.path)
from sqlalchemy import select, update

from fmn_core import preferences
from fmn_core.config import Config, GatewayConfig, PushConfig
from fmn_core.db import Database, make_engine
from fmn_core.errors import (
    ConfigError,
    ConfirmationFailed,
    DatabaseBusy,
    GatewayInternalError,
    InvalidArgument,
    MalformedRequest,
    NotFound,
    PermissionDenied,
    UnknownContext,
)
from fmn_core.explain import ContextExplanation, Explanation, FilterExplanation, RuleExplanation
from fmn_core.gateway import (
    MAX_DEPTH,
    MAX_REQUEST,
    OPERATIONS,
    READ_OPERATIONS,
    TRIAL_FORBIDDEN,
    GatewayClient,
    PreferenceCall,
    decode,
    encode,
    read_frame,
    write_frame,
)
from fmn_core.gateway_serving import (
    PreferenceGateway,
    Principal,
    argument_kinds,
    serve_in_process,
)
from fmn_core.models import Base, Confirmation, Rule, User
from fmn_core.preferences import Actor, DestinationView, FilterView, RuleView

ALICE = Actor("alice")


@pytest.fixture
def alice(db: Database) -> Iterator[GatewayClient]:
    """alice's connection to an in-process gateway."""
    sock, thread = serve_in_process(PreferenceGateway(db), Principal(Actor("alice")))
    client = GatewayClient(sock)
    try:
        yield client
    finally:
        client.close()
        thread.join(timeout=5)


def witness(db: Database, function, *args, user: str = "alice", **kwargs):
    with db.begin() as session:
        return function(session, Actor(user), *args, **kwargs)


def sqlite_with_a_koji_filter(tmp_path) -> Database:
    """A SQLite database of the test's own where alice has an email filter "koji"."""
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    database = Database(Config(database_url=url), engine)
    witness(database, preferences.add_filter, "email", "koji")
    witness(database, preferences.add_rule, "email", "koji", "app_is", {"app": "koji"})
    return database


def test_gateway_codec_round_trips_views():
    moment = dt.datetime(2024, 5, 6, 7, 8, tzinfo=dt.UTC)
    view = FilterView(
        1,
        "email",
        "koji",
        True,
        False,
        1,
        (RuleView(1, "app_is", "App is", {"app": "koji", "$view": "x"}, False, "app_is app=koji"),),
    )
    destination = DestinationView(
        3, "email", "a@example.org", "a…@example.org", False, True, moment
    )
    data = encode([view, destination, PushConfig(), ("a", 1)])
    assert decode(data) == [view, destination, PushConfig(), ("a", 1)]


@pytest.mark.parametrize(
    "data",
    [
        {"plain": "dict"},
        {"$view": "Actor", "fields": {"$map": {"name": "root", "is_admin": True}}},
        {"$view": "Config", "fields": {"$map": {}}},
        {"$dt": "2024-05-06T07:08:00"},
        {"$tuple": "abc"},
        {"$map": {}, "$tuple": []},
    ],
)
def test_gateway_decode_refuses_what_encode_never_makes(data):
    with pytest.raises(MalformedRequest):
        decode(data)


def test_gateway_encode_refuses_other_objects():
    with pytest.raises(TypeError):
        encode(Actor("alice", is_admin=True))


def test_gateway_runs_calls_for_the_connected_account_only(db, alice):
    info = alice.hello()
    assert (info.account, info.actor, info.is_own) == ("alice", "alice", True)
    assert info.contexts == db.config.contexts
    alice.run([PreferenceCall.of(preferences.add_filter, "email", "mine")])
    witness(db, preferences.add_filter, "email", "his", user="bob")
    (view,) = alice.run([PreferenceCall.of(preferences.get_context, "email")], trial=True)
    assert [f.name for f in view.filters] == ["mine"]
    with pytest.raises(PermissionDenied, match="only see and change your own"):
        alice.run([PreferenceCall("get_context", ("email",), {"user": "bob"})], trial=True)
    with pytest.raises(PermissionDenied):
        alice.run([PreferenceCall("remove_filter", ("email", "his"), {"user": "bob"})])
    assert [f.name for f in witness(db, preferences.list_filters, "email", user="bob")] == ["his"]


def test_gateway_trial_is_rolled_back_and_unit_is_committed(db, alice):
    calls = [
        PreferenceCall.of(preferences.add_filter, "email", "draft"),
        PreferenceCall.of(preferences.add_rule, "email", "draft", "app_is", {"app": "koji"}),
        PreferenceCall.of(preferences.get_filter, "email", "draft"),
    ]
    *_, view = alice.run(calls, trial=True)
    assert [r.text for r in view.rules] == ["app_is app=koji"]
    assert witness(db, preferences.list_filters, "email") == []
    alice.run(calls)
    assert [f.name for f in witness(db, preferences.list_filters, "email")] == ["draft"]


def test_gateway_user_errors_keep_their_class_and_sentence(db, alice):
    with pytest.raises(NotFound) as caught:
        alice.run([PreferenceCall.of(preferences.get_filter, "email", "nope")], trial=True)
    with pytest.raises(NotFound) as direct:
        witness(db, preferences.get_filter, "email", "nope")
    assert str(caught.value) == str(direct.value)
    with pytest.raises(UnknownContext) as unknown:
        alice.run([PreferenceCall.of(preferences.list_filters, "pager")], trial=True)
    assert isinstance(unknown.value, InvalidArgument) and unknown.value.argument == "context"
    # A refused call in a unit leaves nothing of the calls before it.
    with pytest.raises(NotFound):
        alice.run(
            [
                PreferenceCall.of(preferences.add_filter, "email", "x"),
                PreferenceCall.of(preferences.remove_filter, "email", "y"),
            ]
        )
    assert witness(db, preferences.list_filters, "email") == []


def test_gateway_never_sends_a_confirmation_code(db, alice):
    (pending,) = alice.run(
        [PreferenceCall.of(preferences.set_destination, "email", "alice@example.org")]
    )
    assert pending.code is None and pending.destination.pending
    with db.begin() as session:
        assert session.scalars(select(Confirmation)).one() is not None


def test_gateway_counts_a_wrong_code_and_refuses_trial_guesses(db, alice):
    alice.run([PreferenceCall.of(preferences.set_destination, "email", "alice@example.org")])
    with pytest.raises(MalformedRequest, match="cannot be tried"):
        alice.run([PreferenceCall.of(preferences.confirm, "WRONG")], trial=True)
    (result,) = alice.run([PreferenceCall.of(preferences.confirm, "WRONG")])
    assert result.outcome is preferences.ConfirmOutcome.WRONG
    assert isinstance(result.error(), ConfirmationFailed)
    assert "'WRONG' is wrong or was already used" in result.message
    with db.begin() as session:
        assert session.scalars(select(User.confirm_failures).where(User.name == "alice")).one() == 1


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (
            {
                "mode": "unit",
                "calls": [{"op": "pending_confirmation_codes", "args": [], "kwargs": {"$map": {}}}],
            },
            "not a preference call",
        ),
        (
            {
                "mode": "unit",
                "calls": [{"op": "mark_code_sent", "args": [1], "kwargs": {"$map": {}}}],
            },
            "not a preference call",
        ),
        ({"mode": "commit", "calls": []}, "no mode"),
        ({"mode": "unit", "calls": []}, "1 to"),
        (
            {"mode": "unit", "calls": [{"op": "get_context", "args": [], "kwargs": {"$map": {}}}]},
            "wrong arguments",
        ),
        (
            {
                "mode": "unit",
                "calls": [{"op": "get_context", "args": ["email"], "kwargs": {"evil": 1}}],
            },
            "unknown tag",
        ),
    ],
)
def test_gateway_refuses_malformed_requests(db, request_, match):
    gateway = PreferenceGateway(db)
    reply = gateway.handle(request_, Principal(Actor("alice")))
    assert reply["ok"] is False and reply["error"]["class"] == "MalformedRequest"
    assert match in reply["error"]["message"]


def nested(value: Any, depth: int) -> Any:
    """``value`` inside ``depth`` lists."""
    for _ in range(depth):
        value = [value]
    return value


def test_gateway_decodes_its_deepest_replies_with_room_to_spare():
    rule = RuleExplanation(1, "app_is", {"app": "koji"}, False, True, "app_is app=koji", "app")
    filter_ = FilterExplanation("koji", 1, True, True, "", (rule,))
    context = ContextExplanation("email", "sent", "koji", (filter_,))
    explanation = Explanation("alice", "m-1", "t", "s", True, {"app": ("koji",)}, (context,))
    # A reply's results are a list: one level more than the explanation itself.
    deep = nested(encode([explanation]), MAX_DEPTH // 2)
    assert decode(deep) == nested([explanation], MAX_DEPTH // 2)
    assert decode(nested("x", MAX_DEPTH)) == nested("x", MAX_DEPTH)
    with pytest.raises(MalformedRequest, match=f"nested more than {MAX_DEPTH} levels"):
        decode(nested("x", MAX_DEPTH + 1))


def test_gateway_refuses_values_nested_too_deep_and_keeps_the_connection(db, caplog):
    sock, thread = serve_in_process(PreferenceGateway(db), Principal(Actor("alice")))
    try:
        for depth in (MAX_DEPTH + 1, 900):
            # Written by hand: Python's own encoder refuses to nest this deep.
            args = b"[" * depth + b"]" * depth
            body = b'{"mode":"trial","calls":[{"op":"list_contexts","args":%s,"kwargs":{}}]}'
            sock.sendall(struct.pack(">I", len(body % args)) + body % args)
            reply = read_frame(sock, 1 << 20)
            assert reply["ok"] is False and reply["error"]["class"] == "MalformedRequest"
            assert f"nested more than {MAX_DEPTH} levels" in reply["error"]["message"]
        # Still served: a bad request costs only itself.
        write_frame(sock, {"hello": True})
        assert read_frame(sock, 1 << 20)["session"]["account"] == "alice"
        # Past what JSON itself reads, the frame is unreadable: said once, then hung up.
        sock.sendall(struct.pack(">I", 200_000) + b"[" * 100_000 + b"]" * 100_000)
        reply = read_frame(sock, 1 << 20)
        assert "could not read the request" in reply["error"]["message"]
        assert read_frame(sock, 1 << 20) is None
    finally:
        sock.close()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


#: A value of each kind a request can carry, and the kinds it passes for.
VALUES_BY_KIND: list[tuple[Any, set[type]]] = [
    ("email", {str}),
    (1, {int}),
    (True, {bool}),
    (1.5, set()),
    (None, {type(None)}),
    (["email"], set()),
    ({"app": "koji"}, {Mapping}),
    (("email",), set()),
    (dt.datetime(2030, 1, 1, tzinfo=dt.UTC), {dt.datetime}),
]


def fitting(kinds: tuple[type, ...]) -> Any:
    return next(value for value, passes in VALUES_BY_KIND if passes & set(kinds))


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_gateway_refuses_every_argument_of_the_wrong_kind_by_name(db, op, caplog):
    """The annotations of the preference call are the contract: a value of another kind
    is refused before the call runs, naming the call and the argument, never a bug."""
    gateway = PreferenceGateway(db)
    mode = "unit" if op in TRIAL_FORBIDDEN else "trial"
    kinds = argument_kinds(op)
    parameters = inspect.signature(getattr(preferences, op)).parameters
    assert set(kinds) == set(parameters) - {"session", "actor", "user"}
    refused = 0
    for name in kinds:
        for value, passes in VALUES_BY_KIND:
            if passes & set(kinds[name]):
                continue
            args = {other: fitting(wanted) for other, wanted in kinds.items()}
            args[name] = value
            call = PreferenceCall(op, (), args)
            reply = gateway.handle({"mode": mode, "calls": [call.to_wire()]}, Principal(ALICE))
            assert reply["ok"] is False and "internal" not in reply, (name, value)
            assert reply["error"]["class"] == "MalformedRequest", (name, value)
            assert f"{op}'s {name} must be " in reply["error"]["message"], (name, value)
            refused += 1
    assert refused >= 5 * len(kinds)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_gateway_refused_argument_leaves_the_whole_unit_unwritten(db, alice):
    calls = [
        PreferenceCall.of(preferences.add_filter, "email", "kept?"),
        PreferenceCall("move_filter", ("email", "kept?", "1")),
    ]
    with pytest.raises(MalformedRequest, match="move_filter's position must be a whole number"):
        alice.run(calls)
    with pytest.raises(MalformedRequest, match="must be true or false, not int"):
        alice.run([PreferenceCall("set_filter_active", ("email", "kept?", 1))])
    with pytest.raises(MalformedRequest, match="plan_action's action must be text, not dict"):
        alice.run([PreferenceCall("plan_action", ("m-1", {"a": 1}))], trial=True)
    assert witness(db, preferences.list_filters, "email") == []


def test_gateway_hangs_up_on_an_oversized_or_broken_frame(db):
    for frame in (struct.pack(">I", MAX_REQUEST + 1), struct.pack(">I", 3) + b"{{{"):
        ours, theirs = socket.socketpair()
        gateway = PreferenceGateway(db)
        import threading

        thread = threading.Thread(
            target=gateway.serve_connection, args=(ours, Principal(Actor("alice")))
        )
        thread.start()
        theirs.sendall(frame)
        reply = read_frame(theirs, 1 << 20)
        assert reply["ok"] is False and "could not read the request" in reply["error"]["message"]
        assert read_frame(theirs, 1 << 20) is None  # and hung up
        thread.join(timeout=5)
        assert not thread.is_alive()
        theirs.close()


def test_gateway_unencodable_reply_is_an_internal_error_and_keeps_the_connection(tmp_path, caplog):
    """A reply that UTF-8 cannot carry costs only itself: each is logged once, under the
    reference the client gets, and the same connection answers the next call.

    The lone surrogate is in a rule's stored arguments, which anything with access to
    the database may have written: SQLite's JSON keeps it as ``\\ud800`` (PostgreSQL's
    ``json`` type refuses it), and the view carries it back as it was stored.
    """
    database = sqlite_with_a_koji_filter(tmp_path)
    with database.begin() as session:
        session.execute(update(Rule).values(arguments={"app": "koji\ud800"}))
    sock, thread = serve_in_process(PreferenceGateway(database), Principal(ALICE))
    client = GatewayClient(sock)
    try:
        get_filter = PreferenceCall.of(preferences.get_filter, "email", "koji")
        for _ in range(2):
            with pytest.raises(GatewayInternalError) as caught:
                client.run([get_filter], trial=True)
            # The same connection, still in step, answers the next call.
            assert client.run([PreferenceCall.of(preferences.list_filters, "irc")]) == [[]]
        assert client.hello().account == "alice"
    finally:
        client.close()
        thread.join(timeout=5)
        database.dispose()
    assert not thread.is_alive()
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 2, [r.getMessage() for r in logged]
    assert f"reference {caught.value.reference}" in logged[-1].getMessage()
    assert "encoding the reply to alice" in logged[-1].getMessage()


def test_gateway_client_refuses_text_it_cannot_send_as_core_would(tmp_path):
    """A lone surrogate (an undecodable byte pasted into the terminal) in an argument is
    the user's to fix, as in-process, where core refuses it: the client says so
    without sending anything, and the connection goes on."""
    database = sqlite_with_a_koji_filter(tmp_path)
    sock, thread = serve_in_process(PreferenceGateway(database), Principal(ALICE))
    client = GatewayClient(sock)
    try:
        with pytest.raises(InvalidArgument, match="not text"):
            client.run([PreferenceCall.of(preferences.add_filter, "email", "bad\udcff")])
        with database.begin() as session, pytest.raises(InvalidArgument):
            preferences.add_filter(session, ALICE, "email", "bad\udcff")
        listed = client.run([PreferenceCall.of(preferences.list_filters, "email")])
        assert [f.name for f in listed[0]] == ["koji"]
    finally:
        client.close()
        thread.join(timeout=5)
        database.dispose()


def test_gateway_admin_in_process_edits_the_named_account(db):
    sock, thread = serve_in_process(
        PreferenceGateway(db), Principal(Actor("carol", is_admin=True), user="bob")
    )
    client = GatewayClient(sock)
    try:
        info = client.hello()
        assert (info.account, info.actor, info.is_own) == ("bob", "carol", False)
        client.run([PreferenceCall.of(preferences.add_filter, "email", "set by carol")])
        with pytest.raises(PermissionDenied, match="owner"):
            client.run([PreferenceCall.of(preferences.confirm, "ABC")])
    finally:
        client.close()
        thread.join(timeout=5)
    assert [f.name for f in witness(db, preferences.list_filters, "email", user="bob")] == [
        "set by carol"
    ]


def test_gateway_answers_busy_within_its_bound_and_saves_nothing(db):
    sock, thread = serve_in_process(
        PreferenceGateway(db, busy_timeout=0.5), Principal(Actor("alice"))
    )
    client = GatewayClient(sock)
    change = [
        PreferenceCall.of(preferences.add_filter, "email", "builds"),
        PreferenceCall.of(preferences.set_digest, "email", 30, 5),
    ]
    try:
        with database_locked(db):
            started = time.monotonic()
            with pytest.raises(DatabaseBusy, match=r"busy .* nothing was saved — try again"):
                client.run(change)
            waited = time.monotonic() - started
            # The bound, not the engine's 30 s (nor an internal error).
            assert 0.4 <= waited < 3, waited
        # Nothing half-written: the filter and the digest went back together.
        assert witness(db, preferences.list_filters, "email") == []
        # Retrying once the lock is gone saves the whole unit.
        client.run(change)
    finally:
        client.close()
        thread.join(timeout=5)
    assert [f.name for f in witness(db, preferences.list_filters, "email")] == ["builds"]
    assert witness(db, preferences.get_context, "email").digest_minutes == 30


def test_gateway_short_busy_wait_is_only_the_gateways(tmp_path):
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    database = Database(Config(database_url=url), engine)
    try:
        sock, thread = serve_in_process(PreferenceGateway(database), Principal(Actor("alice")))
        client = GatewayClient(sock)
        client.run([PreferenceCall.of(preferences.set_digest, "email", 30, 5)])
        client.close()
        thread.join(timeout=5)
        # The one pooled connection goes back to the daemons' long wait.
        with database.begin() as session:
            waits = session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar()
        assert waits == 30_000
    finally:
        engine.dispose()


def test_gateway_busy_timeout_comes_from_the_configuration(tmp_path):
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    config = Config(database_url=url, gateway=GatewayConfig(busy_timeout_seconds=1.5))
    database = Database(config, make_engine(url))
    try:
        assert PreferenceGateway(database).busy_timeout == 1.5
    finally:
        database.dispose()
    with pytest.raises(ConfigError, match=r"gateway\.busy_timeout_seconds"):
        GatewayConfig(busy_timeout_seconds=0)


def test_gateway_reads_while_another_change_holds_the_database(tmp_path):
    database = sqlite_with_a_koji_filter(tmp_path)
    reads = {
        "explain": ("2024-no-such-message",),
        "get_context": ("email",),
        "get_filter": ("email", "koji"),
        "list_contexts": (),
        "list_filters": ("email",),
        "list_templates": (),
        "pending_notifications": (),
        "plan_action": ("2024-no-such-message", "mute-app"),
        "preview": ("email", "koji"),
        "recent_notifications": (),
    }
    assert set(reads) == READ_OPERATIONS
    sock, thread = serve_in_process(
        PreferenceGateway(database, busy_timeout=2.0), Principal(Actor("alice"))
    )
    client = GatewayClient(sock)
    try:
        with database_locked(database):
            for op, args in reads.items():
                started = time.monotonic()
                with contextlib.suppress(NotFound):  # an unknown message id
                    client.run([PreferenceCall(op, args)], trial=True)
                # Read at once: no wait for the write lock.
                assert time.monotonic() - started < 1.0, op
            # A trial that writes (a draft replayed) still needs the lock.
            with pytest.raises(DatabaseBusy):
                client.run([PreferenceCall.of(preferences.add_filter, "email", "x")], trial=True)
    finally:
        client.close()
        thread.join(timeout=5)
        database.dispose()


def test_gateway_client_gives_up_on_a_gateway_that_never_answers(tmp_path):
    # A hung gateway (it accepted, then nothing): the person is told within the
    # bound, and the connection is given up so a late reply is never read as the
    # answer to the next request.
    from fmn_core.errors import GatewayUnavailable

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "hung.sock"))
    listener.listen(1)
    client = GatewayClient.connect(str(tmp_path / "hung.sock"), reply_timeout=0.5)
    hung, _ = listener.accept()
    try:
        started = time.monotonic()
        with pytest.raises(GatewayUnavailable, match=r"did not answer within 0\.5 seconds"):
            client.hello()
        assert time.monotonic() - started < 3
        with contextlib.suppress(OSError):  # the late reply to the hello, if it can go
            write_frame(hung, {"ok": True, "results": []})
        with pytest.raises(GatewayUnavailable, match="connection was closed"):
            client.run([PreferenceCall.of(preferences.list_templates)], trial=True)
    finally:
        client.close()
        hung.close()
        listener.close()


def test_gateway_client_names_an_unreadable_reply_as_the_gateways(tmp_path):
    from fmn_core.errors import GatewayUnavailable

    ours, theirs = socket.socketpair()
    client = GatewayClient(theirs, reply_timeout=3)
    try:
        ours.sendall(struct.pack(">I", 2**31) + b"garbage")
        with pytest.raises(GatewayUnavailable, match="sent a reply fmn cannot read"):
            client.hello()
        with pytest.raises(GatewayUnavailable, match="connection was closed"):
            client.hello()
    finally:
        client.close()
        ours.close()
