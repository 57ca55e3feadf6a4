"""``fmn-daemon gateway``: the preference gateway on a real Unix socket, callers known by uid.

A second real Unix user is the sshd test's job (tests/tui/test_sshd_guide.py);
here the calling uid is this process's, and the resolver maps it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import database_locked  # tests/conftest.py (tests/ is on sys.path)

from fmn_core import preferences
from fmn_core.config import Config, GatewayConfig
from fmn_core.db import Database, make_engine
from fmn_core.errors import DatabaseBusy, GatewayUnavailable, PermissionDenied, RateLimited
from fmn_core.gateway import GatewayClient, PreferenceCall
from fmn_core.gateway_serving import PreferenceGateway
from fmn_core.models import Base
from fmn_core.preferences import Actor
from fmn_daemon import cli
from fmn_daemon.gateway import GatewayServer, RefusalLog, account_for_uid, peer_uid


@pytest.fixture
def serve(db: Database, tmp_path: Path) -> Iterator[Callable[..., GatewayServer]]:
    servers: list[tuple[GatewayServer, threading.Thread]] = []

    def start(resolve: Callable[[int], str], per_account: int = 8) -> GatewayServer:
        server = GatewayServer(
            PreferenceGateway(db),
            str(tmp_path / "gw.sock"),
            resolve=resolve,
            per_account=per_account,
        )
        server.bind()
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.stop()
        thread.join(timeout=5)
        assert not thread.is_alive()


def test_gateway_server_learns_the_caller_from_the_kernel(serve, db):
    seen: list[int] = []

    def resolve(uid: int) -> str:
        seen.append(uid)
        return "alice"

    server = serve(resolve)
    mode = os.stat(server.path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o666
    client = GatewayClient.connect(server.path)
    try:
        assert client.hello().account == "alice"
        client.run([PreferenceCall.of(preferences.add_filter, "email", "over the socket")])
        with pytest.raises(PermissionDenied):
            client.run([PreferenceCall("list_filters", ("email",), {"user": "bob"})], trial=True)
    finally:
        client.close()
    assert seen == [os.getuid()]
    with db.begin() as session:
        names = [f.name for f in preferences.list_filters(session, Actor("alice"), "email")]
    assert names == ["over the socket"]


def test_gateway_server_refuses_an_unknown_uid(serve):
    def resolve(uid: int) -> str:
        raise LookupError(f"uid {uid} is not in the directory")

    server = serve(resolve)
    client = GatewayClient.connect(server.path)
    try:
        with pytest.raises(PermissionDenied, match="not an fmn account"):
            client.hello()
    finally:
        client.close()


def test_gateway_server_bounds_connections_per_account(serve):
    server = serve(lambda uid: "alice", per_account=2)
    first, second = GatewayClient.connect(server.path), GatewayClient.connect(server.path)
    try:
        first.hello(), second.hello()
        third = GatewayClient.connect(server.path)
        with pytest.raises((RateLimited, GatewayUnavailable)):
            third.hello()
        third.close()
    finally:
        first.close()
        second.close()


def test_gateway_server_removes_its_socket_and_never_other_files(serve, tmp_path):
    (tmp_path / "gw.sock").write_text("not a socket")
    with pytest.raises(GatewayUnavailable, match="cannot listen on"):
        serve(lambda uid: "alice")
    assert (tmp_path / "gw.sock").read_text() == "not a socket"


def test_gateway_client_names_a_missing_service(tmp_path):
    with pytest.raises(GatewayUnavailable, match="not running"):
        GatewayClient.connect(str(tmp_path / "nothing.sock"))


def test_gateway_peer_uid_and_account_for_uid():
    ours, theirs = socket.socketpair()
    try:
        assert peer_uid(ours) == os.getuid()
    finally:
        ours.close()
        theirs.close()
    import pwd

    assert account_for_uid(os.getuid()) == pwd.getpwuid(os.getuid()).pw_name
    with pytest.raises(LookupError):
        account_for_uid(2**31 - 7)


def test_gateway_command_is_in_fmn_daemon():
    args = cli.build_parser().parse_args(["gateway", "--socket", "/tmp/x.sock"])
    assert (args.command, args.socket) == ("gateway", "/tmp/x.sock")


def test_gateway_resolver_refuses_logins_the_directory_does_not_know() -> None:
    """``fmn-daemon gateway`` maps a caller's uid through the account directory: a
    login that is no Fedora account is refused, one that is passes."""
    from fasjson_server import running_fasjson

    from fmn_core.accounts import account_directory
    from fmn_core.config import AccountsConfig, Config
    from fmn_core.errors import UnknownAccount
    from fmn_daemon.gateway import directory_resolver

    login = pwd.getpwuid(os.getuid()).pw_name
    with running_fasjson() as server:
        config = Config(
            accounts=AccountsConfig(
                provider="fasjson", fasjson_url=server.url, fasjson_auth="none", cache_seconds=0
            )
        )
        resolve = directory_resolver(account_directory(config))
        with pytest.raises(UnknownAccount):
            resolve(os.getuid())
        server.add_user(login)  # the fas_user shape the real FASJSON answers with
        assert resolve(os.getuid()) == login


def test_gateway_server_answers_busy_within_the_configured_bound(tmp_path):
    # The real socket, a database another connection holds: the configured bound,
    # a DatabaseBusy the client can act on, and the same connection saves on retry.
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    config = Config(database_url=url, gateway=GatewayConfig(busy_timeout_seconds=0.5))
    database = Database(config, engine)
    server = GatewayServer(
        PreferenceGateway(database), str(tmp_path / "gw.sock"), resolve=lambda uid: "alice"
    )
    server.bind()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    client = GatewayClient.connect(server.path)
    change = [PreferenceCall.of(preferences.add_filter, "email", "builds")]
    try:
        with database_locked(database):
            started = time.monotonic()
            with pytest.raises(DatabaseBusy):
                client.run(change)
            assert 0.4 <= time.monotonic() - started < 3
        client.run(change)
    finally:
        client.close()
        server.stop()
        thread.join(timeout=5)
        engine.dispose()
    with database.begin() as session:
        names = [f.name for f in preferences.list_filters(session, Actor("alice"), "email")]
    assert names == ["builds"]


def test_gateway_server_starts_no_thread_for_a_caller_over_their_limit(serve):
    # A flood of connections from one uid while the directory is slow: only the
    # caller's own slots get a thread, the rest are refused from the accept loop.
    directory_answers = threading.Event()

    def slow_directory(uid: int) -> str:
        directory_answers.wait(10)
        return "mallory"

    before = threading.active_count()
    server = serve(slow_directory, per_account=2)
    flood = [socket.socket(socket.AF_UNIX) for _ in range(40)]
    try:
        for sock in flood:
            sock.connect(server.path)
        time.sleep(0.5)
        assert threading.active_count() - before <= 1 + 2  # the accept loop, two slots
    finally:
        directory_answers.set()
        for sock in flood:
            sock.close()


def test_gateway_server_names_the_overall_limit_apart_from_the_accounts(db, tmp_path):
    names = iter(["alice", "bob", "carol"])
    server = GatewayServer(
        PreferenceGateway(db),
        str(tmp_path / "gw.sock"),
        resolve=lambda uid: next(names),
        max_connections=1,
    )
    server.bind()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    first = GatewayClient.connect(server.path)
    try:
        first.hello()
        second = GatewayClient.connect(server.path)
        with pytest.raises(RateLimited, match="as many sessions as it can"):
            second.hello()
        second.close()
    finally:
        first.close()
        server.stop()
        thread.join(timeout=5)


def test_gateway_server_says_when_the_account_directory_is_down(serve):
    from fmn_core.errors import AccountDirectoryUnavailable, UserError

    def directory_down(uid: int) -> str:
        raise AccountDirectoryUnavailable("https://fasjson.example", "timed out")

    server = serve(directory_down)
    client = GatewayClient.connect(server.path, reply_timeout=3)
    try:
        with pytest.raises(UserError, match="account directory did not answer"):
            client.hello()
    finally:
        client.close()


def test_gateway_server_stop_waits_once_for_threads_it_cannot_hang_up(db, tmp_path):
    directory_answers = threading.Event()

    def stuck_directory(uid: int) -> str:
        directory_answers.wait(10)
        return "alice"

    server = GatewayServer(
        PreferenceGateway(db),
        str(tmp_path / "gw.sock"),
        resolve=stuck_directory,
        stop_grace=0.5,
        max_connections=8,
    )
    server.bind()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    waiting = [socket.socket(socket.AF_UNIX) for _ in range(4)]
    try:
        for sock in waiting:
            sock.connect(server.path)
        time.sleep(0.3)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.5  # not half a second per thread
        thread.join(timeout=5)
        assert not thread.is_alive()
    finally:
        directory_answers.set()
        for sock in waiting:
            sock.close()


def test_gateway_server_outlives_running_out_of_descriptors(serve):
    import resource

    server = serve(lambda uid: "alice")
    client_sock = socket.socket(socket.AF_UNIX)  # its descriptor exists before the limit
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)  # a new descriptor gets the lowest number
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        client_sock.connect(server.path)  # waits in the backlog: accept() gets EMFILE
        time.sleep(0.3)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    client = GatewayClient(client_sock, reply_timeout=3)
    try:
        assert client.hello().account == "alice"
    finally:
        client.close()


def test_gateway_server_logs_a_caller_refused_in_a_loop_once(serve, caplog):
    """A local user connecting in a loop past their limit gets a refusal each time, and
    the journal one line: a line an attempt would reach journald's limit for the
    service, which then drops the gateway's other lines too."""
    caplog.set_level(logging.WARNING, logger="fmn_daemon.gateway")
    server = serve(lambda uid: "alice", per_account=1)
    holder = GatewayClient.connect(server.path)
    try:
        holder.hello()
        for _ in range(40):
            refused = GatewayClient.connect(server.path)
            with pytest.raises((RateLimited, GatewayUnavailable)):
                refused.hello()
            refused.close()
    finally:
        holder.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "fmn_daemon.gateway"]
    assert lines == [
        f"refused a connection from uid {os.getuid()}: Too many fmn sessions are open for "
        "this account; close one and try again. (0 more since the last such line, 1 in all)"
    ]


def test_gateway_refusal_log_counts_what_it_did_not_log():
    now = [1000.0]
    log = RefusalLog(every=60.0, clock=lambda: now[0])
    with _captured("fmn_daemon.gateway") as lines:
        log.refused(1000, "too many")
        for _ in range(5):
            log.refused(1000, "too many")
        log.refused(1001, "not an fmn account")  # another caller: a line of its own
        now[0] += 61
        log.refused(1000, "too many")
        log.refused(1000, "too many")  # within the new minute: counted
        now[0] += 61
        log.refused(1000, "too many")
    assert lines == [
        "refused a connection from uid 1000: too many (0 more since the last such line, 1 in all)",
        "refused a connection from uid 1001: not an fmn account (0 more since the last such "
        "line, 1 in all)",
        "refused a connection from uid 1000: too many (5 more since the last such line, 7 in all)",
        "refused a connection from uid 1000: too many (1 more since the last such line, 9 in all)",
    ]


def test_gateway_refusal_log_forgets_quiet_callers():
    now = [0.0]
    log = RefusalLog(every=60.0, clock=lambda: now[0])
    with _captured("fmn_daemon.gateway"):
        for uid in range(1024):
            log.refused(uid, "x")
        now[0] += 61
        log.refused(5000, "x")
    assert len(log._callers) == 1


@contextlib.contextmanager
def _captured(name: str) -> Iterator[list[str]]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger(name)
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
