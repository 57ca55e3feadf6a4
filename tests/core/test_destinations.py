"""Checking, masking and proving destinations (fmn_core.destinations)."""

from __future__ import annotations

import ipaddress
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
    check_push_url,
    hash_code,
    is_public_address,
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


# --- push URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ntfys://ntfy.sh/fmn-alice",
        "ntfy://fmn-alice",  # the topic on ntfy.sh; the "host" is not a host
        "ntfys://ntfy.example.org/topic",
        "gotifys://push.example.org/AbCdEf123",
        "json://user:secret@ntfy.example.org:8080/hook?+X-Token=abc",
        "ntfys://93.184.216.34/topic",
        "jsons://[2606:4700::1111]/hook",
        "tgram://123456789:ABCdefGHI/12345",
        "pover://userkey@apptoken",
    ],
)
def test_check_push_url_accepts_public_urls(url: str) -> None:
    assert check_push_url(url, PUSH, resolver=fake_resolver) == url


HOSTILE_URLS = [
    # schemes
    ("http://ntfy.example.org/x", "scheme 'http' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("mailto://eve@example.org", "scheme 'mailto' is not allowed"),
    ("ntfy.sh/topic", "not a URL of the form"),
    # loopback in every spelling
    ("json://127.0.0.1/", "loopback"),
    ("json://127.0.0.1:8080/", "loopback"),
    ("json://localhost/", "loopback"),
    ("json://LOCALHOST./", "loopback"),
    ("json://api.localhost/", "loopback"),
    ("json://ip6-localhost/", "loopback"),
    ("json://2130706433/", "loopback"),
    ("json://0x7f000001/", "loopback"),
    ("json://0x7f.1/", "loopback"),
    ("json://0177.0.0.1/", "loopback"),
    ("json://127.1/", "loopback"),
    ("json://[::1]/", "loopback"),
    ("json://[::ffff:127.0.0.1]/", "loopback"),
    ("json://[::ffff:7f00:1]/", "loopback"),
    ("json://[0:0:0:0:0:ffff:127.0.0.1]/", "loopback"),
    ("json://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("json://[64:ff9b::7f00:1]/", "loopback"),  # NAT64 of 127.0.0.1
    # private, link-local, multicast, reserved, unspecified, shared
    ("json://10.0.0.1/", "private"),
    ("json://172.16.5.4/", "private"),
    ("json://192.168.1.1/", "private"),
    ("json://3232235777/", "private"),  # 192.168.1.1 as an integer
    ("json://[fd00::1]/", "private"),
    ("json://[::ffff:10.0.0.1]/", "private"),
    ("json://169.254.169.254/latest/meta-data", "link-local"),
    ("json://[fe80::1]/", "link-local"),
    ("json://[fe80::1%25eth0]/", "zone"),
    ("json://224.0.0.1/", "multicast"),
    ("json://[ff02::1]/", "multicast"),
    ("json://240.0.0.1/", "reserved"),
    ("json://0.0.0.0/", "unspecified"),
    ("json://0/", "unspecified"),
    ("json://[::]/", "unspecified"),
    ("json://100.64.0.1/", "not a public address"),
    ("json://4294967296/", "not a valid IPv4 address"),
    ("json://08.1.2.3/", "not a valid IPv4 address"),
    # names that resolve to non-public addresses
    ("json://intranet.example.org/", "resolves to a private address"),
    ("json://sneaky.example.org/", "resolves to a loopback address"),
    ("json://metadata.example.org/", "resolves to a link-local address"),
    ("json://v6local.example.org/", "resolves to a link-local address"),
    ("json://mapped.example.org/", "resolves to a private address"),
    # local files in arguments
    ("json://ntfy.example.org/?attach=/etc/passwd", "can read local files"),
    ("ntfys://ntfy.sh/topic?attach=file:///etc/shadow", "local file"),
    ("json://ntfy.example.org/?Attachment=x", "can read local files"),
    ("json://ntfy.example.org/?x=%2Fetc%2Fpasswd", "local file path"),
    ("json://ntfy.example.org/?x=~/.ssh/id_rsa", "local file path"),
    ("json://ntfy.example.org/?x=..%2F..%2Fsecret", "local file path"),
    ("json://ntfy.example.org/?x=C:%5Cboot.ini", "local file path"),
    ("json://ntfy.example.org/?x=FILE%253A%252F%252Fetc", "local file"),
    ("json://ntfy.example.org/?cafile=x", "can read local files"),
    # user-info and parser tricks
    ("json://ntfy.example.org@10.0.0.1/", "looks like a host"),
    ("json://ntfy.example.org:443@127.0.0.1/", "looks like a host"),
    ("json://a@ntfy.example.org@127.0.0.1/", "more than one @"),
    ("json://ntfy.example.org\\@127.0.0.1/", "backslash"),
    ("json://ntfy.example.org%2F@127.0.0.1/", "loopback"),
    ("json://%31%32%37.0.0.1/", "percent-encoded"),
    ("json://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", "non-ASCII"),  # fullwidth
    ("json://ntfy.example.org:0/", "port number"),
    ("json://ntfy.example.org:99999/", "port number"),
    ("json://1:2:3/", "several colons"),
    ("json://[::1/", "closing"),
    ("json:///path-only", "names no host"),
    ("json://localhost../", "empty label"),
    ("json://.localhost/", "empty label"),
    ("json://ntfy.example.org/ x", "spaces"),
    ("json://ntfy.example.org/\x00", "control characters"),
    # size
    ("ntfys://ntfy.sh/" + "a" * 1100, "too long"),
]


@pytest.mark.parametrize(("url", "reason"), HOSTILE_URLS)
def test_check_push_url_refuses_hostile_urls(url: str, reason: str) -> None:
    with pytest.raises(InvalidDestination, match=reason) as caught:
        check_push_url(url, PUSH, resolver=fake_resolver)
    message = str(caught.value)
    assert message.startswith("This push URL is refused: ") and message.endswith(".")
    assert "\n" not in message


def test_check_push_url_refuses_localhost_by_name_without_asking_dns() -> None:
    def boom(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
        raise AssertionError("resolver called")

    with pytest.raises(InvalidDestination, match="loopback"):
        check_push_url("ntfys://localhost/topic", PUSH, resolver=boom)


def test_check_push_url_refuses_the_machines_own_name_with_the_real_resolver() -> None:
    # The machine's host name usually resolves (through /etc/hosts) to a loopback
    # or private address: the default resolver must catch that.
    name = socket.gethostname().lower()
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve here")
    if all(is_public_address(a) for a in addresses):
        pytest.skip(f"this machine's name {name!r} resolves to public addresses only")
    if name == "localhost" or name.endswith(".localhost"):
        pytest.skip("the machine is called localhost, which is refused by name")
    with pytest.raises(InvalidDestination, match="resolves to"):
        check_push_url(f"json://{name}/hook", PUSH)


def test_check_push_url_names_that_do_not_resolve_pass() -> None:
    # ntfy://topic puts a topic where a host would be; it can't resolve.
    assert check_push_url("ntfy://no-such-topic-name", PUSH, resolver=fake_resolver)


def test_check_push_url_without_resolution_skips_dns() -> None:
    def boom(*args: object, **kwargs: object) -> list[tuple[object, ...]]:
        raise AssertionError("resolver called")

    url = "json://intranet.example.org/"
    assert check_push_url(url, PUSH, resolve=False, resolver=boom) == url


def test_check_push_url_allow_private_hosts_lets_loopback_through() -> None:
    open_push = PushConfig(allowed_schemes=PUSH.allowed_schemes, allow_private_hosts=True)
    for url in (
        "json://127.0.0.1:8080/hook",
        "json://localhost/",
        "json://[::1]/",
        "json://intranet.example.org/",
    ):
        assert check_push_url(url, open_push, resolver=fake_resolver) == url
    # The other checks still apply.
    with pytest.raises(InvalidDestination, match="can read local files"):
        check_push_url("json://127.0.0.1/?attach=/etc/passwd", open_push)


def test_check_push_url_scheme_list_comes_from_config() -> None:
    only_ntfy = PushConfig(allowed_schemes=("ntfys",))
    assert check_push_url("ntfys://ntfy.sh/t", only_ntfy, resolver=fake_resolver)
    with pytest.raises(InvalidDestination, match="use one of ntfys"):
        check_push_url("gotify://ntfy.example.org/token", only_ntfy, resolver=fake_resolver)


@pytest.mark.parametrize("scheme", ["json", "jsons", "xml", "xmls", "form", "forms"])
def test_check_push_url_json_scheme_refused_by_default(scheme: str) -> None:
    """Their URLs pick the HTTP method, headers and query fired at any public host."""
    url = f"{scheme}://ntfy.example.org/hook?method=DELETE&+X-Token=abc"
    with pytest.raises(InvalidDestination, match=f"the scheme '{scheme}' is not allowed"):
        check_push_url(url, PushConfig(), resolver=fake_resolver)


def test_check_push_url_json_scheme_allowed_when_configured() -> None:
    allowed = PushConfig(allowed_schemes=("ntfys", "json", "jsons"))
    for url in ("json://ntfy.example.org/hook", "jsons://ntfy.example.org:8443/hook?+X-A=b"):
        assert check_push_url(url, allowed, resolver=fake_resolver) == url


def test_check_push_url_refuses_urls_apprise_cannot_use() -> None:
    with pytest.raises(InvalidDestination, match="Apprise cannot use it"):
        check_push_url("pover://", PUSH, resolver=fake_resolver)


@pytest.mark.parametrize(
    ("ip", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        (ipaddress.ip_address("8.8.8.8"), True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("100.64.0.1", False),
        ("169.254.169.254", False),
        ("224.0.0.251", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("2002:c0a8:101::", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo: client is private
        ("64:ff9b::a00:1", False),
        ("fe80::1%eth0", False),
        ("fc00::1", False),
        ("2001:db8::1", False),
        ("not an address", False),
    ],
)
def test_is_public_address_table(ip: str, public: bool) -> None:
    assert is_public_address(ip) is public


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
