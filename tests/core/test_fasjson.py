"""The FASJSON directory (fmn_core.fasjson) against a FASJSON-compatible server on loopback."""

from __future__ import annotations

import gzip
import json
import socket
import time
from pathlib import Path

import pytest
from fasjson_server import FasjsonServer
from hostile_http import Answer, head, hostile_server, reply

from fmn_core import fasjson as fasjson_module
from fmn_core.accounts import (
    LocalDirectory,
    Profile,
    account_directory,
    account_of_irc,
    account_of_login,
    directory_changes,
    is_admin,
    parse_chat_nicks,
)
from fmn_core.catalog.people import member_of_group_involved
from fmn_core.config import AccountsConfig, Config, load_config
from fmn_core.errors import (
    AccountDirectoryUnavailable,
    AmbiguousChatAccount,
    ConfigError,
    UnknownAccount,
    UnmappedChatAccount,
)
from fmn_core.fasjson import FasjsonDirectory
from fmn_core.messages import MessageFacts
from fmn_core.rules import RuleContext
from fmn_core.text import irc_fold

LIBERA = ("irc.libera.chat",)


def _directory(server: FasjsonServer, cache_seconds: float = 900.0) -> FasjsonDirectory:
    return FasjsonDirectory(server.url, auth="none", timeout=5, cache_seconds=cache_seconds)


def test_chat_nicks_are_parsed_like_noggin_stores_them() -> None:
    irc, matrix = parse_chat_nicks(
        [
            "irc:/Alice_W",
            "irc://irc.oftc.net/alice",
            "matrix://fedora.im/alice",
            "matrix:/al",
            "legacy",
            "mailto:/x",
            "irc:/has space",
            7,
            "irc:/",
            "matrix://bad host/x",
        ]
    )
    assert irc == (("", "Alice_W"), ("irc.oftc.net", "alice"), ("", "legacy"))
    assert matrix == ("@alice:fedora.im", "@al:fedora.im")
    assert irc_fold("Alice[W]") == irc_fold("alice{w}")
    # ASCII only, as servers fold: the Kelvin sign is not a k.
    assert irc_fold("\u212aevin") != irc_fold("kevin") == "kevin"


def test_fasjson_directory_reads_users_profiles_and_groups(fasjson: FasjsonServer) -> None:
    fasjson.add_user(
        "alice",
        emails=["alice@example.org", "a.l@example.com"],
        ircnicks=["irc:/Alice_W", "matrix://fedora.im/alice"],
    )
    fasjson.set_groups("packager", ["alice", "bob"])
    directory = _directory(fasjson)
    assert directory.exists("alice")
    assert not directory.exists("nobody")
    assert not directory.exists("Not_Valid")  # never sent
    profile = directory.profile("alice")
    assert profile == Profile(
        "alice", ("alice@example.org", "a.l@example.com"), (("", "Alice_W"),), ("@alice:fedora.im",)
    )
    assert "example" not in repr(profile)
    assert directory.profile("nobody") is None
    assert directory.groups_of("alice") == {"packager"}
    assert directory.groups_of("nobody-here") == frozenset()  # FASJSON answers 404
    assert directory.members_of("packager") == {"alice", "bob"}
    assert directory.members_of("no-such-group") == frozenset()
    assert all(not p.startswith("/v1/users/Not_Valid") for p in fasjson.paths())


def test_fasjson_directory_follows_pages(fasjson: FasjsonServer) -> None:
    members = [f"user{n:03d}" for n in range(95)]
    for name in members:
        fasjson.add_user(name)
    fasjson.set_groups("big", members)
    for n in range(45):
        fasjson.set_groups(f"group{n:02d}", ["user001"])
    directory = _directory(fasjson)
    assert directory.members_of("big") == frozenset(members)
    assert len(fasjson.paths("/v1/groups/big/members/")) == 3  # 40 + 40 + 15
    assert len(directory.groups_of("user001")) == 46
    assert len(fasjson.paths("/v1/users/user001/groups/")) == 2


def test_fasjson_directory_caches_and_forgets(fasjson: FasjsonServer) -> None:
    fasjson.add_user("alice")
    fasjson.set_groups("infra", [])
    directory = _directory(fasjson)
    assert directory.groups_of("alice") == frozenset()
    fasjson.set_groups("infra", ["alice"])
    assert directory.groups_of("alice") == frozenset()  # remembered
    asked = len(fasjson.requests)
    directory.forget(accounts=["alice"])
    assert directory.groups_of("alice") == {"infra"}
    assert len(fasjson.requests) == asked + 1


def test_fasjson_directory_expires_answers(fasjson: FasjsonServer) -> None:
    fasjson.add_user("alice")
    directory = _directory(fasjson, cache_seconds=0)
    assert directory.exists("alice")
    del fasjson.users["alice"]
    assert not directory.exists("alice")


def test_fasjson_directory_uses_old_answers_during_an_outage(
    fasjson: FasjsonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fasjson.add_user("alice")
    fasjson.set_groups("infra", ["alice"])
    directory = _directory(fasjson, cache_seconds=0)
    assert directory.groups_of("alice") == {"infra"}
    monkeypatch.setattr(fasjson_module, "RETRY_AFTER_SECONDS", 0.3)
    fasjson.failing = 503
    assert directory.groups_of("alice") == {"infra"}
    asked = len(fasjson.requests)
    with pytest.raises(AccountDirectoryUnavailable, match="HTTP 503"):
        directory.exists("bob")
    # A failure is remembered for a while: nobody waits on FASJSON again meanwhile.
    fasjson.failing = None
    with pytest.raises(AccountDirectoryUnavailable, match="not asked again"):
        directory.exists("bob")
    assert directory.groups_of("alice") == {"infra"}
    assert len(fasjson.requests) == asked
    time.sleep(0.35)
    assert directory.exists("bob") is False  # asked again, and answered


def test_fasjson_directory_reports_refusals_and_garbage(
    fasjson: FasjsonServer, closed_port: int
) -> None:
    fasjson.failing = 401
    with pytest.raises(ConfigError, match=r"accounts\.fasjson_auth"):
        _directory(fasjson).exists("alice")
    fasjson.failing = None
    with pytest.raises(AccountDirectoryUnavailable, match="ConnectionError"):
        FasjsonDirectory(f"http://127.0.0.1:{closed_port}", auth="none").exists("alice")
    with pytest.raises(ConfigError, match=r"accounts\.fasjson_url"):
        FasjsonDirectory("ftp://example.org", auth="none")


def test_fasjson_directory_leaves_locked_accounts_out(fasjson: FasjsonServer) -> None:
    fasjson.add_user("mallory", locked=True, ircnicks=["irc:/mallory"])
    directory = _directory(fasjson)
    assert not directory.exists("mallory")
    with pytest.raises(UnmappedChatAccount):
        account_of_irc(directory, "mallory", LIBERA)


def test_irc_account_maps_through_exactly_one_profile(fasjson: FasjsonServer) -> None:
    fasjson.add_user("alice", ircnicks=["irc:/Alice_W"])
    fasjson.add_user("malice", ircnicks=["irc:/malice_w", "irc://irc.oftc.net/bob"])
    fasjson.add_user("bob", ircnicks=["bob"])  # a legacy bare nick
    fasjson.add_user("hidden", ircnicks=["irc:/hidden"], private=True)
    fasjson.add_user("al", ircnicks=["irc:/al"])
    directory = _directory(fasjson)
    # Capitals and "_" in the services account, and substring neighbours (malice_w).
    assert account_of_irc(directory, "alice_w", LIBERA) == "alice"
    assert account_of_irc(directory, "ALICE_W", LIBERA) == "alice"
    assert account_of_irc(directory, "bob", LIBERA) == "bob"  # oftc's bob is not ours
    assert account_of_irc(directory, "al", LIBERA) == "al"  # short: an exact search
    with pytest.raises(UnmappedChatAccount, match=r"add irc:/nobody.*accounts\.fedoraproject"):
        account_of_irc(directory, "nobody", LIBERA)
    with pytest.raises(UnmappedChatAccount):  # a private profile hides its nicks
        account_of_irc(directory, "hidden", LIBERA)
    fasjson.add_user("mallory", ircnicks=["irc:/alice_w"])
    directory.forget(accounts=["mallory"])
    with pytest.raises(AmbiguousChatAccount, match="2 Fedora accounts"):
        account_of_irc(directory, "Alice_W", LIBERA)


def test_login_must_be_an_account_and_admins_come_from_the_group(fasjson: FasjsonServer) -> None:
    fasjson.add_user("alice")
    fasjson.add_user("bob")
    fasjson.set_groups("fmn-admins", ["bob"])
    directory = _directory(fasjson)
    assert account_of_login(directory, "alice") == "alice"
    with pytest.raises(UnknownAccount, match="no Fedora account named 'carol'"):
        account_of_login(directory, "carol")
    config = Config(admin_group="fmn-admins", admins=("alice",))
    assert is_admin(config, directory, "bob")
    assert is_admin(config, directory, "alice")  # named in admins
    assert not is_admin(Config(), directory, "bob")
    assert not is_admin(Config(admin_group="fmn-admins"), directory, "alice")


def test_local_directory_maps_only_given_profiles() -> None:
    directory = LocalDirectory(profiles=[Profile("alice", irc=(("", "Alice"),))])
    assert account_of_irc(directory, "alice", LIBERA) == "alice"
    with pytest.raises(UnmappedChatAccount):
        account_of_irc(directory, "bob", LIBERA)
    assert directory.profile("bob") == Profile("bob")


def test_account_directory_shares_one_fasjson_directory(fasjson: FasjsonServer) -> None:
    accounts = AccountsConfig(provider="fasjson", fasjson_url=fasjson.url, fasjson_auth="none")
    first = account_directory(Config(accounts=accounts))
    assert isinstance(first, FasjsonDirectory)
    assert account_directory(Config(accounts=accounts, admins=("x",))) is first


def test_gssapi_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "requests_gssapi", None)
    with pytest.raises(ConfigError, match=r"fmn\[fasjson\]"):
        FasjsonDirectory("https://fasjson.example.org/", auth="gssapi")


def _facts(
    topic: str,
    usernames: set[str],
    groups: frozenset[str] | set[str] = frozenset(),
    body: object = None,
) -> MessageFacts:
    return MessageFacts(
        id="m",
        topic=topic,
        app_name="FAS",
        agent_name=None,
        usernames=frozenset(usernames),
        packages=frozenset(),
        groups=frozenset(groups),
        containers=frozenset(),
        modules=frozenset(),
        flatpaks=frozenset(),
        severity=20,
        summary="",
        url=None,
        body=body if body is not None else {},
        headers={},
        schema="x",
    )


def test_directory_changes_come_from_account_and_group_messages() -> None:
    changes = directory_changes(
        [
            _facts(
                "org.fedoraproject.prod.fas.group.member.sponsor", {"alice", "admin"}, {"infra"}
            ),
            _facts("org.fedoraproject.prod.fas.user.update", {"bob"}),
            _facts("org.fedoraproject.prod.fas.group.member.apply", {"carol"}, {"infra"}),
            _facts("org.fedoraproject.prod.bodhi.update.comment", {"dave"}),
            _facts("fas.group.member.removed", {"erin", "Bad Name"}, {"qa"}),
        ]
    )
    assert changes.accounts == {"alice", "admin", "bob", "erin"}
    assert changes.groups == {"infra", "qa"}
    # Without a schema, the body's names (FAS's and Noggin's shapes).
    legacy = directory_changes(
        [
            _facts(
                "org.fedoraproject.stg.fas.group.member.remove",
                set(),
                body={
                    "agent": {"username": "toshio"},
                    "group": {"name": "ambassadors"},
                    "user": {"username": "ralph"},
                },
            ),
            _facts(
                "org.fedoraproject.prod.fas.user.update",
                set(),
                body={"msg": {"agent": "x", "user": "zoe", "fields": ["ircnicks"]}},
            ),
            _facts("org.fedoraproject.prod.fas.user.update", set(), body=["not", "a", "mapping"]),
        ]
    )
    assert legacy.accounts == {"ralph", "zoe"}
    assert legacy.groups == {"ambassadors"}
    assert not directory_changes([_facts("org.fedoraproject.prod.fas.group.member.apply", {"x"})])


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[accounts]\nprovider = "ldap"\n', "accounts.provider"),
        ('[accounts]\nfasjson_url = "fasjson.example.org"\n', "accounts.fasjson_url"),
        ('[accounts]\nfasjson_auth = "kerberos"\n', "accounts.fasjson_auth"),
        ("[accounts]\ncache_seconds = -1\n", "accounts.cache_seconds"),
        ("[accounts]\ntimeout_seconds = 0\n", "accounts.timeout_seconds"),
        ('[bot]\nidentity = "nick"\n', "bot.identity"),
        ("admin_group = 3\n", "admin_group"),
    ],
)
def test_identity_settings_are_validated(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "fmn.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.key == key


def test_identity_defaults_are_safe() -> None:
    config = Config()
    assert config.accounts.provider == "local"
    assert config.bot.identity == "directory"
    assert config.admin_group == "" and config.admins == ()
    assert "s3cret" not in repr(AccountsConfig(fas_password="s3cret"))


# --- hostile replies (a raw-socket server: tests/hostile_http.py) ---------------------

GROUPS_PAGE = json.dumps(
    {"result": [{"groupname": "infra"}], "page": {"page_number": 1, "total_pages": 1}}
).encode()
JSON_TYPE = "Content-Type: application/json"


def _gzip_cut_short(body: bytes) -> bytes:
    whole = gzip.compress(body)
    return whole[: len(whole) // 2]


def _broken_answer(kind: str) -> Answer:
    """An answer whose headers are fine and whose body breaks."""

    def answer(conn: socket.socket, request: bytes) -> None:
        if kind in ("short", "stall"):
            # Says 100 bytes, sends 10; then closes ("short") or sends nothing more.
            conn.sendall(head(200, JSON_TYPE, "Content-Length: 100") + GROUPS_PAGE[:10])
            if kind == "stall":
                conn.recv(1)  # until fmn hangs up (or the test's server stops)
        else:
            body = (
                b"this is not gzip at all" if kind == "bad-gzip" else _gzip_cut_short(GROUPS_PAGE)
            )
            reply(conn, 200, body, JSON_TYPE, "Content-Encoding: gzip")

    return answer


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("short", "FASJSON's reply broke off"),
        ("stall", "FASJSON did not answer within 0.5 s"),
        ("bad-gzip", "FASJSON's reply broke off"),
        ("gzip-cut-short", "the answer is not JSON"),
    ],
)
def test_fasjson_directory_group_rule_uses_the_remembered_answer_when_a_body_breaks(
    kind: str, problem: str
) -> None:
    """A body that breaks is FASJSON not answering: the group rule still matches on the
    remembered groups (the message is not lost), and FASJSON is paused for everyone."""
    broken = _broken_answer(kind)
    mode = {"broken": False}

    def answer(conn: socket.socket, request: bytes) -> None:
        if mode["broken"]:
            broken(conn, request)
        else:
            reply(conn, 200, GROUPS_PAGE, JSON_TYPE)

    with hostile_server(answer) as server:
        directory = FasjsonDirectory(server.url, auth="none", timeout=0.5, cache_seconds=0)
        context = RuleContext("alice", membership=directory)
        message = _facts("org.fedoraproject.prod.fas.group.update", set(), {"infra"})
        assert member_of_group_involved(message, context)
        mode["broken"] = True
        # cache_seconds=0: FASJSON is asked again, its body breaks, the old answer counts.
        assert member_of_group_involved(message, context)
        asked = len(server.requests)
        with pytest.raises(AccountDirectoryUnavailable) as caught:
            directory.groups_of("bob")  # nothing remembered about bob
        assert problem in str(caught.value) and "not asked again" in str(caught.value)
        assert len(server.requests) == asked


def test_fasjson_directory_ends_a_dripping_answer_at_its_timeout() -> None:
    """The timeout covers the whole body, not each read: one byte every 0.1 s (8 s in
    all) ends after about a second, not when the last byte comes."""
    body = json.dumps({"result": [], "page": {"total_pages": 1}}).encode() + b" " * 40

    def drip(conn: socket.socket, request: bytes) -> None:
        conn.sendall(head(200, f"Content-Length: {len(body)}"))
        for byte in body:
            conn.sendall(bytes([byte]))
            time.sleep(0.1)

    timeout = 1.0
    with hostile_server(drip) as server:
        directory = FasjsonDirectory(server.url, auth="none", timeout=timeout)
        started = time.monotonic()
        with pytest.raises(AccountDirectoryUnavailable, match="FASJSON did not answer within 1 s"):
            directory.groups_of("alice")
        elapsed = time.monotonic() - started
    # Well short of the 8 s the whole body takes, with room for a loaded machine.
    assert elapsed < 5 * timeout


def test_fasjson_directory_refuses_a_page_longer_than_it_asked_for() -> None:
    """Every page longer than PAGE_SIZE, with a billion pages to follow, would make one
    lookup hold millions of names: the first such page is refused."""
    page = {
        "result": [{"groupname": f"group{n}"} for n in range(fasjson_module.PAGE_SIZE + 1)],
        "page": {"page_number": 1, "total_pages": 10**9},
    }
    body = json.dumps(page).encode()
    with hostile_server(lambda conn, request: reply(conn, 200, body, JSON_TYPE)) as server:
        directory = FasjsonDirectory(server.url, auth="none", timeout=5)
        with pytest.raises(AccountDirectoryUnavailable, match="more than the 40 items asked for"):
            directory.groups_of("alice")
        assert len(server.requests) == 1


def test_fasjson_directory_asks_uncompressed_and_caps_a_gzip_answer_it_gets_anyway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fmn asks for answers as they are; a server that gzips them anyway is still read,
    and a small gzip that inflates past MAX_ANSWER_BYTES is refused at the cap."""
    monkeypatch.setattr(fasjson_module, "MAX_ANSWER_BYTES", 64 * 1024)
    bomb = gzip.compress(b'{"result": [], "pad": "' + b" " * (8 * 1024 * 1024) + b'"}')
    mode = {"body": gzip.compress(GROUPS_PAGE)}

    def answer(conn: socket.socket, request: bytes) -> None:
        reply(conn, 200, mode["body"], JSON_TYPE, "Content-Encoding: gzip")

    with hostile_server(answer) as server:
        directory = FasjsonDirectory(server.url, auth="none", timeout=5)
        assert directory.groups_of("alice") == {"infra"}
        assert b"\r\naccept-encoding: identity\r\n" in server.requests[0].lower()
        mode["body"] = bomb
        with pytest.raises(AccountDirectoryUnavailable, match="reply is larger than 64 KiB"):
            directory.groups_of("bob")
