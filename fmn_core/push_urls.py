"""Push URLs: which Apprise URLs fmn will fetch, and which addresses it may connect to.

The daemon fetches a push URL, so it gets the most suspicion of all destinations:
only the operator's schemes, no loopback, private, link-local or otherwise
non-public hosts (in any spelling, and after DNS resolution), no local files in
arguments, no user-info tricks. The daemon calls :func:`address_problem` again at
send time, because a name that resolved to a public address today may resolve
elsewhere tomorrow. :mod:`fmn_core.destinations` dispatches every kind of
destination and calls :func:`check_push_url` for push URLs.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

from .config import PushConfig
from .errors import InvalidDestination
from .text import has_control

__all__ = [
    "FIXED_ENDPOINT_SCHEMES",
    "MAX_PUSH_URL_LENGTH",
    "SCHEME_RE",
    "Resolver",
    "address_problem",
    "check_push_url",
    "is_public_address",
]

MAX_PUSH_URL_LENGTH = 1024

#: ``getaddrinfo``-shaped: ``resolver(host, port)`` returns tuples whose last item
#: is a socket address starting with the IP. Tests pass their own.
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

_HOST_CHARS_RE = re.compile(r"^[a-z0-9._-]+$")

_NUMERIC_PART_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")

_HOSTLIKE_USERINFO_RE = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+(?::\d*)?$")

_FILESCHEME_RE = re.compile(r"(?<![a-z0-9])file:", re.IGNORECASE)

_WINDOWS_PATH_RE = re.compile(r"^[A-Za-z]:[\\/]")

#: Host names that mean "this machine" without ever reaching a resolver.
_LOCAL_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "localhost4",
        "localhost4.localdomain4",
        "localhost6",
        "localhost6.localdomain6",
        "ip6-localhost",
        "ip6-loopback",
    }
)

#: Schemes whose URL names credentials, not a host: Apprise always sends them to
#: the service's fixed public API, so the "host" part is never connected to.
FIXED_ENDPOINT_SCHEMES = frozenset({"tgram", "pover", "pbul", "discord", "slack"})

#: Query arguments through which some Apprise plugins read local files.
_FILE_ARGUMENTS = frozenset(
    {
        "file",
        "files",
        "path",
        "filepath",
        "filename",
        "cert",
        "certfile",
        "keyfile",
        "key_file",
        "cafile",
        "capath",
        "config",
        "include",
    }
)

_NAT64_PREFIXES = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)

SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches through a translation scheme."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        # Teredo's client address is the one packets end up at.
        return ip.teredo[1]
    if any(ip in network for network in _NAT64_PREFIXES):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:
        # Deprecated IPv4-compatible addresses (::a.b.c.d).
        return ipaddress.IPv4Address(int(ip))
    return None


def address_problem(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why fmn must not connect to this IP (``"a loopback address"``...), or None."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0] if isinstance(ip, str) else ip)
    except ValueError:
        return "not an IP address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_problem(embedded)
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def is_public_address(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether fmn may connect to this IP: globally routable, not loopback, private,
    link-local, multicast, reserved or unspecified (also through IPv4-mapped, 6to4,
    Teredo and NAT64 forms). The daemon re-checks every connection with this.
    """
    return address_problem(ip) is None


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """Read the numeric forms ``inet_aton`` accepts (``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``), which resolvers and HTTP libraries turn into addresses.

    Returns None when the host is not numeric; raises ``ValueError`` when it is
    numeric but out of range.
    """
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART_RE.match(p) for p in parts):
        return None
    numbers = []
    for part in parts:
        if part.startswith("0x"):
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if any(c in "89" for c in part):
                raise ValueError(part)
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    # Every part but the last is one byte; the last fills the remaining bytes.
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise ValueError(host)
    value = last
    for index, number in enumerate(head):
        value |= number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _refuse(reason: str) -> InvalidDestination:
    return InvalidDestination(f"This push URL is refused: {reason}.")


def _split_host_port(hostport: str) -> tuple[str, int | None]:
    """Host and port of an authority without user info; IPv6 keeps no brackets."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise _refuse("the IPv6 address has no closing ]")
        host, rest = hostport[1:end], hostport[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _refuse("text follows the IPv6 address")
        port_text = rest[1:] if rest else None
        if "%" in host:
            raise _refuse("IPv6 zone indices point at the local network")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _refuse(f"[{host[:60]}] is not a valid IPv6 address") from None
    elif hostport.count(":") > 1:
        raise _refuse("the host has several colons; write IPv6 addresses in [brackets]")
    else:
        host, _, port_text = hostport.partition(":")
        port_text = port_text if ":" in hostport else None
    port: int | None = None
    if port_text is not None:
        # ASCII digits only: int() reads "٣" as 3 (a port the URL does not spell for
        # the sender that parses it again) and refuses "²", which isdigit() accepts.
        if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
            raise _refuse(f"{port_text[:20]!r} is not a port number from 1 to 65535")
        port = int(port_text)
    return host, port


def _check_host(host: str, push: PushConfig, resolve: bool, resolver: Resolver | None) -> None:
    if not host:
        raise _refuse("it names no host")
    if not host.isascii():
        raise _refuse("the host has non-ASCII characters; write it in its xn-- form")
    lowered = host.lower()
    if ":" in lowered:
        problem = address_problem(lowered)
        if problem and not push.allow_private_hosts:
            raise _refuse(f"the host {host} is {problem}; use a public server")
        return
    if "%" in lowered:
        raise _refuse("the host is percent-encoded; write it plainly")
    if not _HOST_CHARS_RE.match(lowered):
        raise _refuse(f"{host[:60]!r} is not a valid host name")
    name = lowered[:-1] if lowered.endswith(".") else lowered
    if not all(name.split(".")):
        raise _refuse(f"{host[:60]!r} is not a valid host name (empty label)")
    try:
        numeric = _legacy_ipv4(name)
    except ValueError:
        raise _refuse(f"{host[:60]!r} is not a valid IPv4 address") from None
    if push.allow_private_hosts:
        return
    if numeric is not None:
        problem = address_problem(numeric)
        if problem:
            raise _refuse(f"the host {host} is {problem} ({numeric}); use a public server")
        return
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        raise _refuse(f"the host {host} is a loopback address (localhost); use a public server")
    if resolve:
        _check_resolved(name, resolver)


def _check_resolved(name: str, resolver: Resolver | None) -> None:
    lookup = resolver if resolver is not None else socket.getaddrinfo
    try:
        results = lookup(name, None)
    except (OSError, UnicodeError):
        # Names that don't resolve can't be connected to either; some schemes
        # (ntfy://topic) put a non-host there. The daemon re-checks at send time.
        return
    for result in results:
        address = str(result[-1][0])
        problem = address_problem(address)
        if problem:
            raise _refuse(
                f"the host {name} resolves to {problem} ({address.split('%')[0]}); "
                "use a public server"
            )


def _check_arguments(query: str) -> None:
    for key, value in parse_qsl(query, keep_blank_values=True):
        bare = key.lower().lstrip("+-:")
        if "attach" in bare or bare in _FILE_ARGUMENTS:
            raise _refuse(f"the argument {key[:40]!r} can read local files")
        text = value.strip()
        if (
            text.startswith(("/", "~", "./", "../", "\\"))
            or _WINDOWS_PATH_RE.match(text)
            or _FILESCHEME_RE.search(text)
        ):
            raise _refuse(f"the argument {key[:40]!r} holds a local file path")


def _fully_unquoted(text: str) -> str:
    for _ in range(5):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return text


def check_push_url(
    url: str,
    push: PushConfig,
    *,
    resolve: bool = True,
    resolver: Resolver | None = None,
) -> str:
    """Check an Apprise push URL a user gave; return it (stripped) or raise
    ``InvalidDestination`` naming the reason.

    ``resolve`` looks the host name up (with ``resolver``, default
    ``socket.getaddrinfo``) and refuses names that lead to non-public addresses.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidDestination(
            "The push URL is empty; give an Apprise URL like ntfys://ntfy.sh/topic."
        )
    url = url.strip()
    if len(url) > MAX_PUSH_URL_LENGTH:
        raise _refuse(f"it is too long ({len(url)} characters; at most {MAX_PUSH_URL_LENGTH})")
    if has_control(url) or any(c.isspace() for c in url):
        raise _refuse("it contains spaces or control characters")
    if "\\" in url:
        raise _refuse("it contains a backslash")
    match = SCHEME_RE.match(url)
    if not match:
        raise _refuse("it is not a URL of the form scheme://...")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in push.allowed_schemes:
        raise _refuse(
            f"the scheme {scheme[:20]!r} is not allowed here; use one of "
            f"{', '.join(push.allowed_schemes)}"
        )
    if _FILESCHEME_RE.search(_fully_unquoted(url)):
        raise _refuse("it refers to a local file (file:)")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    query = rest.split("?", 1)[1] if "?" in rest else ""
    _check_arguments(query.split("#", 1)[0])
    if authority.count("@") > 1:
        raise _refuse("it has more than one @ before the host (a user-info trick)")
    userinfo, _, hostport = authority.rpartition("@")
    if "@" in authority and _HOSTLIKE_USERINFO_RE.match(userinfo):
        raise _refuse(
            f"the part before @ ({userinfo[:40]}) looks like a host (a user-info trick); "
            "put the real host after the @"
        )
    if scheme in FIXED_ENDPOINT_SCHEMES:
        # The authority holds tokens (a Telegram token has a colon); the service's
        # own API host is fixed, so there is no host to check.
        pass
    else:
        host, _port = _split_host_port(hostport)
        _check_host(host, push, resolve, resolver)
        _check_apprise_agrees(url, hostport)
    _check_apprise_accepts(url, scheme)
    return url


def _check_apprise_agrees(url: str, hostport: str) -> None:
    """Refuse URLs that Apprise would read with a different host than we checked."""
    from apprise.utils.parse import parse_url

    parsed = parse_url(url, verify_host=False)  # type: ignore[no-untyped-call]
    if not parsed:
        raise _refuse("Apprise cannot read it")
    theirs = str(parsed.get("host") or "").lower()
    if parsed.get("port") is not None:
        theirs = f"{theirs}:{parsed['port']}"
    if theirs != hostport.lower():
        raise _refuse("Apprise would read a different host from it than fmn checked")


def _check_apprise_accepts(url: str, scheme: str) -> None:
    import apprise

    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        raise _refuse(
            f"Apprise cannot use it; check it against Apprise's documentation for {scheme}://"
        )
