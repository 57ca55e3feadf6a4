"""Which push URLs fmn fetches, and which addresses it connects to (fmn_core.push_urls)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from conftest import service_missing  # tests/conftest.py (tests/ is on sys.path)

from core.test_destinations import PUSH, fake_resolver
from fmn_core.config import PushConfig
from fmn_core.errors import InvalidDestination
from fmn_core.push_urls import check_push_url, is_public_address


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
    # digits to str.isdigit() that int() refuses ("²") or reads as another port ("٣")
    ("json://ntfy.example.org:\u00b2/", "port number"),
    ("json://ntfy.example.org:\u0663\u0664\u0663/", "port number"),
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
        service_missing("a resolvable host name", f"this machine's name {name!r} does not resolve")
    if all(is_public_address(a) for a in addresses):
        service_missing(
            "a host name with a private address", f"{name!r} resolves to public addresses only"
        )
    if name == "localhost" or name.endswith(".localhost"):
        service_missing("a host name other than localhost", "localhost is refused by name")
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
