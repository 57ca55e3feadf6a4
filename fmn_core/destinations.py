"""Where notifications go: checking, masking and proving destinations.

Destinations are untrusted user input that fmn later connects to or mails, so
every kind is checked here and nowhere else: e-mail addresses (plain
``local@domain``, nothing a mail header or an Apprise URL could be tricked
with), IRC nicks, Matrix IDs, feed tokens, FCM device tokens, and Apprise push
URLs, which get the most suspicion and their own module (:mod:`fmn_core.push_urls`).

Confirmation codes are made and hashed here too; the preference service stores
and checks them.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from .config import FcmConfig, MatrixConfig, PushConfig
from .errors import InvalidDestination
from .push_urls import FIXED_ENDPOINT_SCHEMES, SCHEME_RE, Resolver, check_push_url
from .text import has_control, irc_fold

__all__ = [
    "CODE_ALPHABET",
    "CODE_LENGTH",
    "FCM_PREFIX",
    "FEED_CONTEXTS",
    "PUSH_CONTEXTS",
    "address_key",
    "check_destination",
    "check_email",
    "check_fcm_token",
    "check_feed_token",
    "check_irc_nick",
    "check_matrix_id",
    "hash_code",
    "mask_address",
    "new_code",
    "new_feed_token",
    "normalize_code",
]

#: Contexts whose destination is an Apprise push URL.
PUSH_CONTEXTS = frozenset({"push", "desktop", "android"})
#: Contexts whose destination is a secret token fmn makes (feeds, the live feed).
FEED_CONTEXTS = frozenset({"rss", "live"})

MAX_EMAIL_LENGTH = 254
MAX_LOCAL_PART_LENGTH = 64
MAX_NICK_LENGTH = 30
#: The Matrix specification's bound on a user ID, in bytes.
MAX_MATRIX_ID_LENGTH = 255

#: No 0/O, 1/I/L lookalikes: people copy these codes by eye from a mail or a phone.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8

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
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


# --- e-mail and IRC ----------------------------------------------------------------


def check_email(address: str) -> str:
    """A plain e-mail address (``local@domain``), normalized; ``InvalidDestination`` if not."""
    address = address.strip() if isinstance(address, str) else ""
    if not address:
        raise InvalidDestination(
            "The e-mail address is empty; give an address like alice@example.org."
        )
    if has_control(address):
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
    if has_control(text) or any(c.isspace() for c in text):
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
    if not isinstance(address, str):
        raise InvalidDestination("An address must be text; type the address to send to.")
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
        match = SCHEME_RE.match(address)
        if not match:
            return _stars(address, 2)
        scheme, rest = match.group(1).lower(), match.group(2)
        authority, _, path = rest.partition("/")
        # Drop user info (passwords, user keys); show the host only when it looks
        # like one, since some schemes put a token there.
        host = authority.rpartition("@")[2].split("?")[0]
        if "." in host and scheme not in FIXED_ENDPOINT_SCHEMES:
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
        # Servers fold nicks RFC 1459's way: ``bob[m]`` and ``BOB{M}`` are one person.
        return f"irc:{irc_fold(address)}"
    if context == "matrix":
        return f"matrix:{address.lower()}"
    if context in PUSH_CONTEXTS or address.lower().startswith(FCM_PREFIX):
        match = SCHEME_RE.match(address)
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
