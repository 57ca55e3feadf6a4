"""Checking, masking and proving destinations (fmn_core.destinations)."""

from __future__ import annotations

import socket

import pytest

from fmn_core.config import MatrixConfig, PushConfig
from fmn_core.destinations import (
    CODE_ALPHABET,
    CODE_LENGTH,
    check_destination,
    check_email,
    check_feed_token,
    check_irc_nick,
    check_matrix_id,
    hash_code,
    mask_address,
    new_code,
    new_feed_token,
    normalize_code,
)
from fmn_core.errors import InvalidDestination

#: An operator who added json/jsons (off by default): the catalogue below uses json
#: URLs, whose host is connected to as given, to exercise every host check.
PUSH = PushConfig(allowed_schemes=(*PushConfig().allowed_schemes, "json", "jsons"))

#: A stand-in for DNS: the internet is not reachable from tests.
FAKE_DNS = {
    "ntfy.example.org": ["93.184.216.34"],
    "push.example.org": ["2606:4700::1111", "93.184.216.34"],
    "intranet.example.org": ["10.1.2.3"],
    "sneaky.example.org": ["93.184.216.34", "127.0.0.1"],
    "metadata.example.org": ["169.254.169.254"],
    "v6local.example.org": ["fe80::1%eth0"],
    "mapped.example.org": ["::ffff:192.168.0.1"],
}


def fake_resolver(
    host: str, port: object, *args: object, **kwargs: object
) -> list[tuple[object, ...]]:
    if host not in FAKE_DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [
        (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0))
        for ip in FAKE_DNS[host]
    ]


# --- e-mail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("alice@example.org", "alice@example.org"),
        ("  alice@Example.ORG ", "alice@example.org"),
        ("Alice.B+fmn@mail.example.co.uk", "Alice.B+fmn@mail.example.co.uk"),
        ("o'brien@xn--bcher-kva.example", "o'brien@xn--bcher-kva.example"),
    ],
)
def test_check_email_accepts_plain_addresses(given: str, expected: str) -> None:
    assert check_email(given) == expected


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("", "empty"),
        ("Alice <alice@example.org>", "without a name"),
        ('"alice"@example.org', "without a name"),
        ("alice@example.org\nBcc: eve@example.org", "control characters"),
        ("alice@example.org,eve@example.org", "without a name"),
        ("alice example@example.org", "spaces"),
        ("alice", "exactly one @"),
        ("alice@@example.org", "exactly one @"),
        ("a@b@example.org", "exactly one @"),
        ("alice@localhost", "not a valid mail domain"),
        ("alice@-example.org", "not a valid mail domain"),
        ("alice@example..org", "not a valid mail domain"),
        ("alice@1.2.3.4", "not a valid mail domain"),
        ("alice@[1.2.3.4]", "without a name"),
        (".alice@example.org", "before the @"),
        ("al..ice@example.org", "before the @"),
        ("a&cc=eve@example.org", "before the @"),
        ("a?to=eve@example.org", "before the @"),
        ("a" * 65 + "@example.org", "before the @"),
        ("a@" + "b" * 250 + ".org", "too long"),
        ("älice@example.org", "non-ASCII"),
    ],
)
def test_check_email_refuses_with_reason(address: str, reason: str) -> None:
    with pytest.raises(InvalidDestination, match=reason):
        check_email(address)


# --- IRC ---------------------------------------------------------------------------


@pytest.mark.parametrize("nick", ["alice", "Alice_", "[m]bob", "x-y|away", "`q^"])
def test_check_irc_nick_accepts_valid_nicks(nick: str) -> None:
    assert check_irc_nick(f" {nick} ") == nick


@pytest.mark.parametrize(
    "nick", ["", "1alice", "-alice", "al ice", "alice!u@h", "a" * 31, "#channel", "alice\r\nQUIT"]
)
def test_check_irc_nick_refuses_invalid_nicks(nick: str) -> None:
    with pytest.raises(InvalidDestination, match="IRC nick"):
        check_irc_nick(nick)


# --- dispatch, masking, codes ------------------------------------------------------


def test_check_destination_dispatches_by_context() -> None:
    assert check_destination("email", "Alice@Example.org", PUSH) == "Alice@example.org"
    assert check_destination("irc", "alice", PUSH) == "alice"
    assert check_destination("android", "ntfys://ntfy.sh/t", PUSH, resolver=fake_resolver)
    with pytest.raises(InvalidDestination, match="push URL"):
        check_destination("desktop", "json://127.0.0.1/", PUSH)
    token = new_feed_token()
    assert check_destination("rss", token, PUSH) == token
    with pytest.raises(InvalidDestination, match="feed token"):
        check_feed_token("short")


@pytest.mark.parametrize(
    ("context", "address", "masked"),
    [
        ("email", "alice@example.org", "a***e@example.org"),
        ("email", "al@example.org", "a***@example.org"),
        ("email", "a@example.org", "a***@example.org"),
        ("push", "ntfys://ntfy.sh/abcdef", "ntfys://ntfy.sh/ab***"),
        ("android", "json://user:secret@push.example.org/hook", "json://push.example.org/ho***"),
        ("push", "pover://userkey@apptoken", "pover://ap***"),
        ("push", "tgram://123456789:ABCdef/12345", "tgram://12***"),
        ("push", "ntfy://mytopic", "ntfy://my***"),
        ("irc", "alice", "a***"),
        ("rss", "abcdefghijklmnopqrstuvwx", "ab***"),
    ],
)
def test_mask_address_hides_most_of_it(context: str, address: str, masked: str) -> None:
    result = mask_address(context, address)
    assert result == masked
    assert "secret" not in result and "userkey" not in result


def test_new_code_uses_the_unambiguous_alphabet() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert len(code) == CODE_LENGTH
        assert set(code) <= set(CODE_ALPHABET)
    assert not set("0O1IL") & set(CODE_ALPHABET)


def test_hash_code_ignores_case_spaces_and_dashes() -> None:
    assert normalize_code(" abcd-efgh\t") == "ABCDEFGH"
    assert hash_code("abcd efgh") == hash_code("ABCDEFGH")
    assert hash_code("ABCDEFGH") != hash_code("ABCDEFGJ")
    assert "ABCDEFGH" not in hash_code("ABCDEFGH")


def test_check_destination_accepts_fcm_token_only_where_fcm_is_configured() -> None:
    from fmn_core.config import FcmConfig, PushConfig
    from fmn_core.destinations import check_destination
    from fmn_core.errors import InvalidDestination

    token = "fcm:" + "dQw4w9WgXcQ:APA91bH" + "x" * 120
    with pytest.raises(InvalidDestination, match="no Firebase"):
        check_destination("android", token, PushConfig())
    with pytest.raises(InvalidDestination, match="no Firebase"):
        check_destination("android", token, PushConfig(), fcm=FcmConfig())
    configured = FcmConfig(project="fedora-notify", keyfile="/etc/fmn/fcm.json")
    assert check_destination("android", token, PushConfig(), fcm=configured) == token
    with pytest.raises(InvalidDestination, match="malformed"):
        check_destination("android", "fcm:short", PushConfig(), fcm=configured)
    with pytest.raises(InvalidDestination, match="malformed"):
        check_destination("android", "fcm:" + "a" * 30 + "/../etc", PushConfig(), fcm=configured)


# -- Matrix IDs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("@alice:fedora.im", "@alice:fedora.im"),
        ("  @a.b=c/d+e-f_9:Fedora.IM:8448 ", "@a.b=c/d+e-f_9:fedora.im:8448"),
        ("@alice:[2001:db8::1]:8448", "@alice:[2001:db8::1]:8448"),
        ("@alice:192.0.2.1", "@alice:192.0.2.1"),
    ],
)
def test_check_matrix_id_accepts_the_grammar(given: str, normalized: str) -> None:
    assert check_matrix_id(given) == normalized


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("", "empty"),
        ("alice:fedora.im", "not a Matrix ID"),
        ("@alice", "not a Matrix ID"),
        ("@:fedora.im", "not a Matrix ID"),
        ("@Alice:fedora.im", "lowercase"),
        ("@al ice:fedora.im", "spaces or control"),
        ("@alice:fedora.im\r\nX", "spaces or control"),
        ("@ali\u202ece:fedora.im", "spaces or control"),
        ("@alice:fedora..im", "not a Matrix server name"),
        ("@alice:fedora.im:99999", "not a Matrix server name"),
        ("@alice:fedora.im/path", "not a Matrix server name"),
        ("@" + "a" * 250 + ":fedora.im", "too long"),
    ],
)
def test_check_matrix_id_refuses_with_the_reason(given: str, why: str) -> None:
    with pytest.raises(InvalidDestination, match=why):
        check_matrix_id(given)


def test_matrix_ids_are_masked_and_refused_where_no_bot_is_set_up() -> None:
    assert mask_address("matrix", "@alice:fedora.im") == "@a***:fedora.im"
    with pytest.raises(InvalidDestination, match="no Matrix bot"):
        check_destination("matrix", "@alice:fedora.im", PUSH, matrix=MatrixConfig())
    bot = MatrixConfig(
        homeserver_url="https://m.example.org", user_id="@fmn:example.org", access_token="t"
    )
    assert check_destination("matrix", "@alice:Fedora.im", PUSH, matrix=bot) == "@alice:fedora.im"
