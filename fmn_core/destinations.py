"""Where notifications go: checking, masking and proving destinations.

Destinations are untrusted user input that fmn later connects to or mails, so
every kind is checked here and nowhere else: e-mail addresses (plain
``local@domain``, nothing a mail header or an Apprise URL could be tricked
with), IRC nicks, Matrix IDs, and Apprise push URLs. Push URLs get the most suspicion,
because the daemon fetches them: only the operator's schemes, no loopback,
private, link-local or otherwise non-public hosts (in any spelling, and after
DNS resolution), no local files in arguments, no user-info tricks. The daemon
calls :func:`is_public_address` again at send time, because a name that
resolved to a public address today may resolve elsewhere tomorrow.

Confirmation codes are made and hashed here too; the preference service stores
and checks them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import socket
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

from .config import FcmConfig, MatrixConfig, PushConfig
from .errors import InvalidDestination

__all__ = [
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "FCM_PREFIX",
    "FEED_CONTEXTS",
    "MAX_PUSH_URL_LENGTH",
    "PUSH_CONTEXTS",
    "Resolver",
    "address_key",
    "address_problem",
    "check_destination",
    "check_email",
    "check_fcm_token",
    "check_feed_token",
    "check_irc_nick",
    "check_matrix_id",
    "check_push_url",
    "hash_code",
    "is_public_address",
    "mask_address",
    "new_code",
    "new_feed_token",
    "normalize_code",
]

#: Contexts whose destination is an Apprise push URL.
PUSH_CONTEXTS = frozenset({"push", "desktop", "android"})
#: Contexts whose destination is a secret token fmn makes (feeds, the live feed).
FEED_CONTEXTS = frozenset({"rss", "live"})

MAX_PUSH_URL_LENGTH = 1024
MAX_EMAIL_LENGTH = 254
MAX_LOCAL_PART_LENGTH = 64
MAX_NICK_LENGTH = 30
#: The Matrix specification's bound on a user ID, in bytes.
MAX_MATRIX_ID_LENGTH = 255

#: No 0/O, 1/I/L lookalikes: people copy these codes by eye from a mail or a phone.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8

#: ``getaddrinfo``-shaped: ``resolver(host, port)`` returns tuples whose last item
#: is a socket address starting with the IP. Tests pass their own.
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

# A local part deliberately narrower than RFC 5322 allows: these characters cannot
# start a header, a second recipient or an Apprise URL argument.
_LOCAL_ATOM = r"[A-Za-z0-9_+'-]+"
_LOCAL_RE = re.compile(rf"^{_LOCAL_ATOM}(?:\.{_LOCAL_ATOM})*$")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Matrix user IDs as the specification (appendix "Identifier Grammar") has them
# today: a lowercase localpart of a-z 0-9 . _ = - / +, and a server name that is
# a DNS name, an IPv4 address or a bracketed IPv6 address, with an optional port.
_MATRIX_LOCALPART_RE = re.compile(r"^[a-z0-9._=/+-]+$")
_MATRIX_SERVER_RE = re.compile(
    r"^(?:\[[0-9a-f:.]{2,45}\]|[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*)"
    r"(?::[0-9]{1,5})?$"
)
_NICK_RE = re.compile(r"^[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*$")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_HOST_CHARS_RE = re.compile(r"^[a-z0-9._-]+$")
_NUMERIC_PART_RE = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_HOSTLIKE_USERINFO_RE = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+(?::\d*)?$")
_FILE_SCHEME_RE = re.compile(r"(?<![a-z0-9])file:", re.IGNORECASE)
_WINDOWS_PATH_RE = re.compile(r"^[A-Za-z]:[\\/]")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")

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
_FIXED_ENDPOINT_SCHEMES = frozenset({"tgram", "pover", "pbul", "discord", "slack"})

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


# --- addresses ---------------------------------------------------------------------


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


# --- e-mail and IRC ----------------------------------------------------------------


def _has_control(text: str) -> bool:
    # Lone surrogates (Cs) too: they are no text and can't be stored or sent.
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)


def check_email(address: str) -> str:
    """A plain e-mail address (``local@domain``), normalized; ``InvalidDestination`` if not."""
    address = address.strip() if isinstance(address, str) else ""
    if not address:
        raise InvalidDestination(
            "The e-mail address is empty; give an address like alice@example.org."
        )
    if _has_control(address):
        raise InvalidDestination(
            "The e-mail address contains control characters; give only the address, "
            "like alice@example.org."
        )
    if any(c in address for c in '<>",;()[]:'):
        raise InvalidDestination(
            "Give the bare e-mail address without a name, quotes or brackets, "
            "like alice@example.org."
        )
    if any(c.isspace() for c in address):
        raise InvalidDestination(
            "The e-mail address contains spaces; give only the address, like alice@example.org."
        )
    if not address.isascii():
        raise InvalidDestination(
            "The e-mail address has non-ASCII characters; write the domain in its xn-- form."
        )
    if len(address) > MAX_EMAIL_LENGTH:
        raise InvalidDestination(
            f"The e-mail address is too long ({len(address)} characters; "
            f"at most {MAX_EMAIL_LENGTH})."
        )
    if address.count("@") != 1:
        raise InvalidDestination(
            "An e-mail address has exactly one @; give an address like alice@example.org."
        )
    local, domain = address.split("@")
    if not local or len(local) > MAX_LOCAL_PART_LENGTH or not _LOCAL_RE.match(local):
        raise InvalidDestination(
            "The part before the @ may only hold letters, digits and . _ + - ' (at most 64, "
            "no leading, trailing or double dots); check the address."
        )
    domain = domain.lower().rstrip(".")
    labels = domain.split(".")
    if (
        len(labels) < 2
        or not all(_LABEL_RE.match(label) for label in labels)
        or labels[-1].isdigit()
        or len(domain) > 253
    ):
        raise InvalidDestination(
            f"{domain!r} is not a valid mail domain; check the part after the @."
        )
    return f"{local}@{domain}"


def check_irc_nick(nick: str) -> str:
    """A valid IRC nickname; ``InvalidDestination`` if not."""
    nick = nick.strip() if isinstance(nick, str) else ""
    if not nick:
        raise InvalidDestination("The IRC nick is empty; give the nick you use on IRC.")
    if len(nick) > MAX_NICK_LENGTH or not _NICK_RE.match(nick):
        raise InvalidDestination(
            f"{nick[:40]!r} is not a valid IRC nick (at most {MAX_NICK_LENGTH} letters, digits "
            "and -[]\\`_^{|}, not starting with a digit or -); give the nick you use on IRC."
        )
    return nick


def check_matrix_id(user_id: str) -> str:
    """A Matrix user ID (``@nick:fedora.im``) with its server name lowercased;
    ``InvalidDestination`` saying what is wrong if it is not one."""
    text = user_id.strip() if isinstance(user_id, str) else ""
    example = "give your Matrix ID like @nick:fedora.im"
    if not text:
        raise InvalidDestination(f"The Matrix ID is empty; {example}.")
    if _has_control(text) or any(c.isspace() for c in text):
        raise InvalidDestination(f"The Matrix ID contains spaces or control characters; {example}.")
    if len(text.encode("utf-8")) > MAX_MATRIX_ID_LENGTH:
        raise InvalidDestination(
            f"The Matrix ID is too long (at most {MAX_MATRIX_ID_LENGTH} bytes); {example}."
        )
    localpart, colon, server = text[1:].partition(":")
    if not text.startswith("@") or not colon or not localpart:
        raise InvalidDestination(f"{text[:40]!r} is not a Matrix ID; {example}.")
    if not _MATRIX_LOCALPART_RE.match(localpart):
        raise InvalidDestination(
            f"The name part of {text[:40]!r} may only hold lowercase letters, digits and "
            f"._=-/+; {example}."
        )
    server = server.lower()
    port = server.rpartition(":")[2] if not server.endswith("]") and ":" in server else ""
    if not _MATRIX_SERVER_RE.match(server) or (port and not 1 <= int(port) <= 65535):
        raise InvalidDestination(
            f"{server[:60]!r} is not a Matrix server name; check the part after the colon."
        )
    return f"@{localpart}:{server}"


def check_feed_token(token: str) -> str:
    """A feed or live-feed token as fmn makes them (for imports)."""
    if not isinstance(token, str) or not _TOKEN_RE.match(token):
        raise InvalidDestination(
            "A feed token is 16 to 128 letters, digits, - and _; generate a new one instead."
        )
    return token


def new_feed_token() -> str:
    """A new secret token for an RSS/Atom or live feed."""
    return secrets.token_urlsafe(24)


# --- push URLs ---------------------------------------------------------------------


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
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
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
            or _FILE_SCHEME_RE.search(text)
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
    if _has_control(url) or any(c.isspace() for c in url):
        raise _refuse("it contains spaces or control characters")
    if "\\" in url:
        raise _refuse("it contains a backslash")
    match = _SCHEME_RE.match(url)
    if not match:
        raise _refuse("it is not a URL of the form scheme://...")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in push.allowed_schemes:
        raise _refuse(
            f"the scheme {scheme[:20]!r} is not allowed here; use one of "
            f"{', '.join(push.allowed_schemes)}"
        )
    if _FILE_SCHEME_RE.search(_fully_unquoted(url)):
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
    if scheme in _FIXED_ENDPOINT_SCHEMES:
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


# --- dispatch, masking, codes ------------------------------------------------------

#: An Android device registered with the operator's Firebase app: ``fcm:<device token>``.
FCM_PREFIX = "fcm:"
_FCM_TOKEN_RE = re.compile(r"^[A-Za-z0-9_:-]{20,4096}$")


def check_fcm_token(address: str, fcm: FcmConfig | None) -> str:
    """Check an ``fcm:<device token>`` destination; only where the operator set up FCM."""
    if fcm is None or not fcm.project:
        raise InvalidDestination(
            "This server has no Firebase (FCM) app; for Android use an ntfy or UnifiedPush "
            "URL such as ntfys://ntfy.sh/your-topic instead."
        )
    token = address.strip()[len(FCM_PREFIX) :]
    if not _FCM_TOKEN_RE.match(token):
        raise InvalidDestination(
            "That FCM device token is malformed; copy it again from the app "
            "(20 or more letters, digits, '-', '_' or ':')."
        )
    return FCM_PREFIX + token


def check_destination(
    context: str,
    address: str,
    push: PushConfig,
    *,
    fcm: FcmConfig | None = None,
    matrix: MatrixConfig | None = None,
    resolve: bool = True,
    resolver: Resolver | None = None,
) -> str:
    """Check a destination for a context; return its normalized form.

    ``matrix`` (the operator's Matrix bot) refuses Matrix IDs where no bot is set up;
    without it only the ID's grammar is checked.
    """
    if context == "email":
        return check_email(address)
    if context == "irc":
        return check_irc_nick(address)
    if context == "matrix":
        if matrix is not None and not matrix.configured:
            raise InvalidDestination(
                "This server has no Matrix bot (matrix.user_id is not set); choose another context."
            )
        return check_matrix_id(address)
    if context == "android" and address.strip().lower().startswith(FCM_PREFIX):
        return check_fcm_token(address, fcm)
    if context in PUSH_CONTEXTS:
        return check_push_url(address, push, resolve=resolve, resolver=resolver)
    if context in FEED_CONTEXTS:
        return check_feed_token(address)
    raise InvalidDestination(f"fmn cannot deliver to {context!r}; choose another context.")


def _stars(text: str, keep: int = 1) -> str:
    return f"{text[:keep]}***" if text else "***"


def mask_address(context: str, address: str) -> str:
    """A destination with most of it hidden, for logs, channels and lists:
    ``a***e@example.org``, ``ntfys://ntfy.sh/ab***``, ``a***``.
    """
    if context == "email" and address.count("@") == 1:
        local, domain = address.split("@")
        shown = f"{local[0]}***{local[-1]}" if len(local) > 2 else _stars(local)
        return f"{shown}@{domain}"
    if context in PUSH_CONTEXTS:
        match = _SCHEME_RE.match(address)
        if not match:
            return _stars(address, 2)
        scheme, rest = match.group(1).lower(), match.group(2)
        authority, _, path = rest.partition("/")
        # Drop user info (passwords, user keys); show the host only when it looks
        # like one, since some schemes put a token there.
        host = authority.rpartition("@")[2].split("?")[0]
        if "." in host and scheme not in _FIXED_ENDPOINT_SCHEMES:
            return f"{scheme}://{host}/{_stars(path, 2)}"
        return f"{scheme}://{_stars(host, 2)}"
    if context in FEED_CONTEXTS:
        return _stars(address, 2)
    if context == "matrix" and address.startswith("@") and ":" in address:
        localpart, _, server = address[1:].partition(":")
        return f"@{_stars(localpart)}:{server}"
    return _stars(address, 1)


def new_code() -> str:
    """A new confirmation code: 8 characters people can copy without confusion."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(text: str) -> str:
    """A code as typed (any case, spaces or dashes) in its canonical form."""
    return "".join(c for c in text if not c.isspace() and c != "-").upper()


def _canonical_address(context: str, address: str) -> str:
    """The form under which two spellings that reach the same place count as one."""
    if context == "email" and address.count("@") == 1:
        # Mail servers ignore the local part's case, and sub-addresses
        # (victim+1@, victim+2@) land in the same mailbox.
        local, domain = address.lower().split("@")
        return f"mailto:{local.split('+', 1)[0]}@{domain}"
    if context == "irc":
        return f"irc:{address.lower()}"
    if context == "matrix":
        return f"matrix:{address.lower()}"
    if context in PUSH_CONTEXTS or address.lower().startswith(FCM_PREFIX):
        match = _SCHEME_RE.match(address)
        if match:
            # Query and fragment only shape the request; scheme, host and path say
            # where it goes.
            scheme, rest = match.group(1).lower(), re.split(r"[?#]", match.group(2), maxsplit=1)[0]
            authority, slash, path = rest.partition("/")
            return f"push:{scheme}://{authority.lower()}{slash}{path}"
        return f"push:{address}"
    return f"{context}:{address}"


def address_key(context: str, address: str) -> str:
    """What the code-sending limits count an address under: a SHA-256 of its
    canonical form, so the limits need no second clear copy of the address."""
    canonical = _canonical_address(context, address)
    return hashlib.sha256(
        b"fmn-code-address\0" + canonical.encode("utf-8", "surrogatepass")
    ).hexdigest()


def hash_code(code: str) -> str:
    """How a confirmation code is stored: never in clear once it has been sent."""
    # surrogatepass: whatever was typed hashes (to a wrong code) instead of raising.
    return hashlib.sha256(normalize_code(code).encode("utf-8", "surrogatepass")).hexdigest()
