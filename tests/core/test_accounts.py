"""The account directory (fmn_core.accounts): name syntax, the local directory, FAS2."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import pytest
from hostile_http import Answer, head, hostile_server, reply

import fmn_core.accounts as accounts_module
from fmn_core.accounts import (
    AccountDirectoryUnavailable,
    Fas2Directory,
    LocalDirectory,
    Profile,
    account_directory,
    check_account_name,
)
from fmn_core.config import AccountsConfig, Config
from fmn_core.db import Database
from fmn_core.errors import ConfigError, InvalidArgument
from fmn_core.models import User

from .conftest import Exchange, LocalServer

# --- name syntax ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("kevin", "kevin"),
        ("  adamwill ", "adamwill"),
        ("mjg59", "mjg59"),
        ("dummy-user", "dummy-user"),
        ("ke", "ke"),
        ("x", "x"),
        ("a" * 32, "a" * 32),
        ("4thelement", "4thelement"),
    ],
)
def test_check_account_name_accepts_fedora_names(given: str, expected: str) -> None:
    assert check_account_name(given) == expected


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("Kevin", "capital letters"),
        ("a" * 33, "longer than 32 characters"),
        ("jane doe", "only lowercase letters, digits and hyphens"),
        ("-dash", "start and end with a letter or a digit"),
        ("dash-", "start and end with a letter or a digit"),
        ("under_score", "only lowercase letters, digits and hyphens"),
        ("@group", "only lowercase letters"),
        ("bob\n", None),
    ],
)
def test_check_account_name_says_what_is_wrong(name: str, why: str | None) -> None:
    if why is None:  # surrounding blanks are stripped: "bob\n" is bob
        assert check_account_name(name) == "bob"
        return
    with pytest.raises(InvalidArgument) as caught:
        check_account_name(name)
    assert why in str(caught.value)
    assert caught.value.argument == "user"


# --- the local directory ----------------------------------------------------------------------


def test_local_directory_accepts_any_valid_name() -> None:
    directory = LocalDirectory()
    assert directory.exists("someone-new")
    assert not directory.exists("Not Valid")
    assert not directory.exists("")
    assert directory.groups_of("someone-new") == frozenset()


def test_local_directory_knows_users_in_the_database(db: Database) -> None:
    with db.begin() as session:
        session.add_all([User(name="alice"), User(name="Legacy_Name")])
    strict = LocalDirectory(db.sessionmaker, accept_any=False)
    assert strict.exists("alice")
    assert strict.exists("Legacy_Name")  # known to fmn, whatever its syntax
    assert not strict.exists("bob")
    lenient = LocalDirectory(db.sessionmaker)
    assert lenient.exists("bob")
    assert lenient.exists("Legacy_Name")
    assert not lenient.exists("Other_Name")


def test_local_directory_reads_inside_the_callers_session(db: Database) -> None:
    with db.begin() as session:
        session.add(User(name="carol"))
        session.flush()
        directory = LocalDirectory(session, accept_any=False)
        assert directory.exists("carol")  # not committed yet: same transaction
        assert not directory.exists("dave")


def test_local_directory_groups_come_from_its_configuration() -> None:
    directory = LocalDirectory(groups={"alice": ["packager", "python-sig"]})
    assert directory.groups_of("alice") == {"packager", "python-sig"}
    assert directory.groups_of("bob") == frozenset()


def test_account_directory_is_local_by_default(db: Database) -> None:
    directory = account_directory(Config(), db.sessionmaker)
    assert isinstance(directory, LocalDirectory)
    assert directory.exists("anyone")


# --- FAS2 -------------------------------------------------------------------------------------

PEOPLE: dict[str, dict[str, Any]] = {
    "alice": {
        "id": 100200,
        "username": "alice",
        "human_name": "Alice",
        "email": "alice@example.org",
        "ircnick": "Alice_W",
        "status": "active",
        "approved_memberships": [{"name": "packager", "id": 1}, {"name": "python-sig", "id": 2}],
        "unapproved_memberships": [{"name": "sysadmin", "id": 3}],
    },
    "bob": {
        "id": 100201,
        "username": "bob",
        "email": "bob@example.org",
        "approved_memberships": [],
    },
}
PERSON_PATH = "/accounts/json/person_by_username"


def fas2_route(exchange: Exchange) -> tuple[int, str, bytes]:
    """What FAS2 answers to python-fedora's person_by_username: POSTed form, JSON back."""
    form = {key: values[0] for key, values in parse_qs(exchange.body.decode()).items()}
    if exchange.method != "POST" or form.get("login") != "Login":
        return 400, "text/plain", b"bad request"
    if (form.get("user_name"), form.get("password")) != ("fmn-bot", "s3cret"):
        return 403, "text/plain", b"forbidden"
    person = PEOPLE.get(form.get("username", ""))
    answer = {"success": True, "person": person} if person else {"success": False}
    return 200, "application/json", json.dumps(answer).encode()


@pytest.fixture
def fas(http_server: LocalServer) -> LocalServer:
    http_server.routes[PERSON_PATH] = fas2_route
    return http_server


def _directory(server: LocalServer, password: str = "s3cret") -> Fas2Directory:
    return Fas2Directory(f"{server.url}/accounts/", "fmn-bot", password, timeout=5)


def test_fas2_directory_asks_the_account_system(fas: LocalServer) -> None:
    directory = _directory(fas)
    assert directory.exists("alice")
    assert directory.groups_of("alice") == {"packager", "python-sig"}
    assert directory.exists("bob")
    assert directory.groups_of("bob") == frozenset()
    assert not directory.exists("carol")
    assert directory.groups_of("carol") == frozenset()
    assert {exchange.path for exchange in fas.received} == {PERSON_PATH}


def test_fas2_directory_gives_profiles_and_forgets(fas: LocalServer) -> None:
    directory = _directory(fas)
    alice = Profile("alice", ("alice@example.org",), (("", "Alice_W"),))
    assert directory.profile("alice") == alice
    assert directory.profile("bob") == Profile("bob", ("bob@example.org",))
    assert directory.profile("carol") is None
    assert directory.profiles_listing_irc("Alice_W") == []  # FAS2 can't search by nick
    asked = len(fas.received)
    directory.forget(accounts=["alice"])
    assert directory.exists("alice")
    assert len(fas.received) == asked + 1


def test_fas2_directory_remembers_answers(fas: LocalServer) -> None:
    directory = _directory(fas)
    for _ in range(3):
        assert directory.exists("alice")
        assert directory.groups_of("alice")
        assert not directory.exists("carol")
    assert len(fas.received) == 2  # one question per account


def test_fas2_directory_never_looks_up_malformed_names(fas: LocalServer) -> None:
    directory = _directory(fas)
    assert not directory.exists("Alice Smith")
    assert not directory.exists("")
    assert fas.received == []


def test_fas2_directory_reports_rejected_credentials(fas: LocalServer) -> None:
    with pytest.raises(ConfigError) as caught:
        _directory(fas, password="wrong").exists("alice")
    assert caught.value.key == "accounts.fas_username"


def test_fas2_directory_reports_server_errors(http_server: LocalServer) -> None:
    http_server.routes[PERSON_PATH] = lambda e: (500, "text/plain", b"oops")
    with pytest.raises(AccountDirectoryUnavailable) as caught:
        _directory(http_server).exists("alice")
    assert http_server.url in str(caught.value)


def test_fas2_directory_reports_answers_that_are_not_fas2(http_server: LocalServer) -> None:
    http_server.routes[PERSON_PATH] = lambda e: (200, "application/json", b'{"people": []}')
    with pytest.raises(AccountDirectoryUnavailable, match="not a FAS2 person"):
        _directory(http_server).exists("alice")
    http_server.routes[PERSON_PATH] = lambda e: (200, "text/html", b"<html>login</html>")
    with pytest.raises(AccountDirectoryUnavailable):
        _directory(http_server).exists("alice")


def test_fas2_directory_reports_an_unreachable_server(closed_port: int) -> None:
    directory = Fas2Directory(
        f"http://127.0.0.1:{closed_port}/accounts/", "fmn-bot", "s3cret", timeout=5
    )
    with pytest.raises(AccountDirectoryUnavailable, match=str(closed_port)):
        directory.exists("alice")


def test_fas2_directory_needs_credentials_and_a_url() -> None:
    with pytest.raises(ConfigError) as caught:
        Fas2Directory("https://fas.example.org/accounts/", "", "")
    assert caught.value.key == "accounts.fas_username"
    with pytest.raises(ConfigError) as caught:
        Fas2Directory("fas.example.org", "fmn-bot", "s3cret")
    assert caught.value.key == "accounts.fas_url"


def test_fas2_directory_without_python_fedora_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail, as on a machine without python-fedora.
    monkeypatch.setitem(sys.modules, "fedora.client.fas2", None)
    with pytest.raises(ConfigError) as caught:
        Fas2Directory("https://fas.example.org/accounts/", "fmn-bot", "s3cret")
    assert caught.value.key == "accounts.provider"
    assert "fmn[fas]" in str(caught.value)


def fas2_config(server_url: str, **accounts: Any) -> Config:
    """fmn's configuration for the FAS2 service at ``server_url``/accounts/."""
    return Config(
        accounts=AccountsConfig(
            provider="fas2",
            fas_url=f"{server_url}/accounts/",
            fas_username="fmn-bot",
            fas_password="s3cret",
            **accounts,
        )
    )


def test_account_directory_builds_fas2_from_the_configuration(fas: LocalServer) -> None:
    directory = account_directory(fas2_config(fas.url))
    assert isinstance(directory, Fas2Directory)
    assert directory.groups_of("alice") == {"packager", "python-sig"}


# --- FAS2 against hostile replies (a raw-socket server: tests/hostile_http.py) -------------


def _person_answer(conn: socket.socket, request: bytes) -> None:
    """FAS2's answer about whoever the form names, from PEOPLE."""
    form = parse_qs(request.partition(b"\r\n\r\n")[2].decode())
    person = PEOPLE.get(form.get("username", [""])[0])
    answer = {"success": True, "person": person} if person else {"success": False}
    reply(conn, 200, json.dumps(answer).encode(), "Content-Type: application/json")


@pytest.mark.parametrize("status", [307, 308])
def test_fas2_directory_sends_its_password_to_no_other_host(status: int) -> None:
    """A redirect that keeps the POST (307, 308) would carry the form, password and
    all, to whatever host it names: no redirect is followed."""
    with hostile_server(_person_answer) as elsewhere:
        # Another host name for this machine: requests keeps the form across hosts.
        target = elsewhere.url.replace("127.0.0.1", "localhost") + "/steal"
        with hostile_server(
            lambda conn, request: reply(conn, status, b"", f"Location: {target}")
        ) as fas:
            directory = Fas2Directory(
                f"{fas.url}/accounts/", "fmn-bot", "S3CRET-PASSWORD", timeout=5
            )
            with pytest.raises(
                AccountDirectoryUnavailable, match=f"HTTP {status}\\); fmn follows none"
            ):
                directory.exists("alice")
            assert fas.request_lines() == [f"POST {PERSON_PATH} HTTP/1.1"]
            assert b"password=S3CRET-PASSWORD" in fas.requests[0]  # FAS itself gets it
    assert elsewhere.requests == []


def _too_deep(conn: socket.socket, request: bytes) -> None:
    reply(conn, 200, b"[" * 100_000 + b"]" * 100_000, "Content-Type: application/json")


def _too_large(conn: socket.socket, request: bytes) -> None:
    reply(conn, 200, b'{"success": false, "pad": "' + b" " * (5 * 1024 * 1024) + b'"}')


def _cut_short(conn: socket.socket, request: bytes) -> None:
    conn.sendall(head(200, "Content-Length: 100") + b'{"success": ')


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (_too_deep, "the answer is not JSON"),
        (_too_large, "reply is larger than 4096 KiB"),
        (_cut_short, "reply broke off"),
    ],
)
def test_fas2_directory_reports_an_answer_it_cannot_read(answer: Answer, problem: str) -> None:
    """100,000 nested lists, 5 MiB, a body cut short: the directory could not answer
    (not an internal error from deep inside the parser or urllib3)."""
    with hostile_server(answer) as fas:
        directory = Fas2Directory(f"{fas.url}/accounts/", "fmn-bot", "s3cret", timeout=5)
        with pytest.raises(AccountDirectoryUnavailable, match=problem):
            directory.exists("alice")


def test_fas2_directory_gives_a_dripping_answer_the_configured_timeout() -> None:
    """``accounts.timeout_seconds`` reaches the provider, and covers the whole body: an
    answer dripping one byte every 0.05 s (about 6 s in all) ends after about 0.5 s."""
    body = b'{"success": false}' + b" " * 100

    def drip(conn: socket.socket, request: bytes) -> None:
        conn.sendall(head(200, f"Content-Length: {len(body)}"))
        for byte in body:
            conn.sendall(bytes([byte]))
            time.sleep(0.05)

    with hostile_server(drip) as fas:
        directory = account_directory(fas2_config(fas.url, timeout_seconds=0.5))
        started = time.monotonic()
        with pytest.raises(AccountDirectoryUnavailable, match=r"did not answer within 0\.5 s"):
            directory.exists("alice")
        elapsed = time.monotonic() - started
    # Well short of the 6 s the whole answer takes (and of python-fedora's 30 s).
    assert elapsed < 4


def test_fas2_directory_answers_about_others_while_one_answer_is_slow() -> None:
    """A slow answer about alice holds up nobody asking about bob (the cache's lock is
    not held across the question)."""
    alice_asked, bob_answered = threading.Event(), threading.Event()

    def answer(conn: socket.socket, request: bytes) -> None:
        if b"username=alice&" in request:
            alice_asked.set()
            bob_answered.wait(4)
        _person_answer(conn, request)

    with hostile_server(answer) as fas:
        directory = Fas2Directory(f"{fas.url}/accounts/", "fmn-bot", "s3cret", timeout=10)
        slow = threading.Thread(target=directory.exists, args=("alice",), daemon=True)
        slow.start()
        assert alice_asked.wait(5)
        started = time.monotonic()
        assert directory.groups_of("bob") == frozenset() and directory.exists("bob")
        elapsed = time.monotonic() - started
        bob_answered.set()
        slow.join(10)
    # Not the 4 s alice's answer is held for.
    assert elapsed < 3.5
    assert directory.groups_of("alice") == {"packager", "python-sig"}  # remembered


def test_fas2_directory_fails_fast_while_a_silent_server_is_down_and_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A FAS2 server that takes connections and never answers costs one timeout, not
    one per question: after that, questions fail at once until it is asked again."""
    monkeypatch.setattr(accounts_module, "RETRY_AFTER_SECONDS", 1.5)
    answering = threading.Event()

    def answer(conn: socket.socket, request: bytes) -> None:
        if answering.is_set():
            _person_answer(conn, request)
        else:
            answering.wait(10)  # silent: the connection stays open, and nothing comes

    with hostile_server(answer) as fas:
        directory = Fas2Directory(f"{fas.url}/accounts/", "fmn-bot", "s3cret", timeout=0.5)
        with pytest.raises(AccountDirectoryUnavailable, match=r"did not answer within 0\.5 s"):
            directory.exists("alice")
        asked = len(fas.requests)
        started = time.monotonic()
        for name in ("bob", "carol", "alice"):
            with pytest.raises(AccountDirectoryUnavailable, match="not asked again for 2s"):
                directory.groups_of(name)
        assert time.monotonic() - started < 0.3  # not 3 timeouts of 0.5 s
        assert len(fas.requests) == asked
        answering.set()
        time.sleep(1.6)
        assert directory.groups_of("alice") == {"packager", "python-sig"}
        assert not directory.exists("carol")
