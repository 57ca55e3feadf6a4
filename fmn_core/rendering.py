"""Turning claimed notifications into messages: subject, text, headers, entries.

One :class:`Rendered` serves every transport: email uses the subject, the text
and the headers; push services the subject and the short text; the live feed
and feeds the structured :class:`Entry` objects.

Links that act on an account (one-click unsubscribe) carry a token signed with
the server's secret (:class:`Links`), so nobody can forge one for another user.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from .config import Config
from .display import SUMMARY_MAX_CHARS, safe_url
from .outbox import ClaimedNotification
from .text import one_line, xml_text

__all__ = [
    "ACTION_TITLES",
    "ActionClaim",
    "Entry",
    "Links",
    "Rendered",
    "load_secret_key",
    "render",
    "render_confirmation",
    "render_digest",
]

log = logging.getLogger(__name__)

_SECRET_FILE = "http-secret-key"
_SIGNATURE_BYTES = 16


def load_secret_key(config: Config) -> bytes:
    """The key that signs account links (unsubscribe).

    ``http.secret_key`` from the configuration when set (required when several
    machines serve links). Otherwise a random key kept in the state directory
    (``<state>/fmn/http-secret-key``, mode 0600), created on first use, so every
    daemon on one machine agrees and links survive restarts.
    """
    configured = config.http.secret_key
    if configured:
        return configured.encode("utf-8")
    path = Path(platformdirs.user_state_dir("fmn")) / _SECRET_FILE
    try:
        existing = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing.encode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_urlsafe(32)
    try:
        # O_EXCL: two daemons starting together must end up with one key.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip().encode("ascii")
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(fresh)
    log.warning(
        "http.secret_key is not set; generated one in %s. Set http.secret_key when "
        "more than one machine serves unsubscribe links.",
        path,
    )
    return fresh.encode("ascii")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


#: The one-click actions a notification offers, in the order they are listed.
ACTION_TITLES: Mapping[str, str] = MappingProxyType(
    {
        "mute-package": "Mute this package",
        "mute-app": "Mute this application",
        "pause-filter": "Pause this filter for 7 days",
        "digest": "Send these to my digest instead",
    }
)


@dataclass(frozen=True, slots=True)
class ActionClaim:
    """What a genuine action token says: who may do what about which notification.

    Its signature is checked; whether it still holds (expiry, the user's nonce,
    the notification) is :mod:`fmn_core.actions`' to decide.
    """

    user: str
    context: str
    message_id: str
    action: str
    expires: dt.datetime
    nonce: int
    #: The fingerprint of the feed token whose feed carried the link
    #: (:func:`fmn_core.feeds.token_fingerprint`); "" for a mail's link.
    via: str = ""


@dataclass(frozen=True)
class Links:
    """Public URLs for messages, and the signed tokens inside them."""

    public_url: str
    secret: bytes = field(repr=False)
    #: ``List-Id`` is ``<context.fmn.DOMAIN>``.
    list_domain: str = "fedoraproject.org"
    #: How long action links work (``http.action_link_days``).
    action_link_days: int = 30

    @classmethod
    def from_config(cls, config: Config, secret: bytes | None = None) -> Links:
        """Links for this deployment (the secret from :func:`load_secret_key` if not given)."""
        domain = config.smtp.from_address.rpartition("@")[2] or (
            urlsplit(config.http.public_url).hostname or "localhost"
        )
        return cls(
            public_url=config.http.public_url.rstrip("/"),
            secret=secret if secret is not None else load_secret_key(config),
            list_domain=domain,
            action_link_days=config.http.action_link_days,
        )

    @cached_property
    def _keyed(self) -> hmac.HMAC:
        return hmac.new(self.secret, digestmod=hashlib.sha256)

    def _signature(self, payload: bytes, purpose: bytes = b"fmn-unsubscribe") -> bytes:
        # The purpose is signed too: an unsubscribe token is never an action token.
        # A copy of the keyed HMAC, not ``hmac.digest``: that one C call lets go of
        # the interpreter lock around a microsecond of hashing, and a sender thread
        # then waits for it behind the others (up to the switch interval), for each
        # of a mail's seven signatures. The copy keeps the lock, and costs less.
        mac = self._keyed.copy()
        mac.update(purpose + b"\0" + payload)
        return mac.digest()[:_SIGNATURE_BYTES]

    def _verified_payload(self, token: str, purpose: bytes) -> bytes | None:
        """The payload of a genuine ``payload.signature`` token signed for ``purpose``.

        None for a forged or garbled one. Shared by the action and unsubscribe
        tokens so both are checked the same way (one implementation per idea).
        """
        encoded, dot, signature = token.partition(".")
        if not dot or not encoded or not signature:
            return None
        try:
            payload = _unb64(encoded)
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._signature(payload, purpose)):
            return None
        return payload

    def action_token(
        self,
        user: str,
        context: str,
        message_id: str,
        action: str,
        expires: dt.datetime,
        nonce: int,
        via: str = "",
    ) -> str:
        """A token for one action on one notification of one user, until ``expires``;
        ``via`` names the feed token that carries it (see :class:`ActionClaim`)."""
        fields: tuple[str, ...] = (
            user,
            context,
            message_id,
            action,
            str(int(expires.timestamp())),
            str(nonce),
        )
        # A seventh field only for feed links: mail links keep the format they were sent in.
        fields += (via,) if via else ()
        payload = "\0".join(fields).encode()
        return f"{_b64(payload)}.{_b64(self._signature(payload, b'fmn-action'))}"

    def verify_action_token(self, token: str) -> ActionClaim | None:
        """The claim a genuine action token makes; None for a forged or garbled one."""
        payload = self._verified_payload(token, b"fmn-action")
        if payload is None:
            return None
        fields = payload.decode("utf-8", "replace").split("\0")
        if len(fields) not in (6, 7) or not all(fields[:4]) or fields[6:] == [""]:
            return None
        user, context, message_id, action, expires, nonce = fields[:6]
        try:
            moment = dt.datetime.fromtimestamp(int(expires), dt.UTC)
            number = int(nonce)
        except (ValueError, OverflowError, OSError):
            return None
        return ActionClaim(user, context, message_id, action, moment, number, "".join(fields[6:]))

    def action_url(self, token: str) -> str:
        """The page that shows, then applies, a token's action."""
        return f"{self.public_url}/act/{token}"

    def action_links(
        self,
        user: str,
        context: str,
        message_id: str,
        nonce: int,
        *,
        has_packages: bool,
        now: dt.datetime | None = None,
        via: str = "",
    ) -> list[tuple[str, str]]:
        """``(title, url)`` for each action a notification offers (``ACTION_TITLES``);
        ``via``: the fingerprint of the feed token that carries them."""
        expires = (now or dt.datetime.now(dt.UTC)) + dt.timedelta(days=self.action_link_days)
        return [
            (
                title,
                self.action_url(
                    self.action_token(user, context, message_id, action, expires, nonce, via)
                ),
            )
            for action, title in ACTION_TITLES.items()
            if action != "mute-package" or has_packages
        ]

    def unsubscribe_token(self, user: str, context: str) -> str:
        """A token that lets its holder turn off ``context`` for ``user``, and nothing else."""
        payload = f"{user}\0{context}".encode()
        return f"{_b64(payload)}.{_b64(self._signature(payload))}"

    def verify_unsubscribe_token(self, token: str) -> tuple[str, str] | None:
        """The (user, context) a genuine token names; None for a forged or garbled one."""
        payload = self._verified_payload(token, b"fmn-unsubscribe")
        if payload is None:
            return None
        user, separator, context = payload.decode("utf-8", "replace").partition("\0")
        if not separator or not user or not context:
            return None
        return user, context

    def unsubscribe_url(self, user: str, context: str) -> str:
        """The one-click unsubscribe URL for ``user``'s ``context``."""
        return f"{self.public_url}/unsubscribe/{self.unsubscribe_token(user, context)}"

    def list_id(self, context: str) -> str:
        """The ``List-Id`` header value for a context."""
        return f"<{context}.fmn.{self.list_domain}>"

    def mail_key(self, notifications: Sequence[ClaimedNotification]) -> str:
        """The left part of the ``Message-ID`` of the mail that carries ``notifications``.

        The same rows give the same key, however often they are sent, so a mail
        sent again (a crash between the server's 250 and the row marked sent, a
        requeued dead row) carries the ``Message-ID`` of the first, and mail
        clients fold the two. The outbox's ids alone would not do: a database
        rebuilt, or SQLite handing out an id again, would give a new notification
        an old mail's ``Message-ID``, and clients drop such a mail as a duplicate.
        So the key covers the bus messages, the user and the context too, and is
        keyed with this deployment's secret, so that no two deployments sending
        from one domain collide and nobody outside can forge or predict one.
        """
        rows = sorted((n.id, n.message_id) for n in notifications)
        head = notifications[0]
        payload = "\0".join(
            [head.user, head.context, *(f"{row_id}:{message_id}" for row_id, message_id in rows)]
        ).encode("utf-8", "surrogatepass")
        digest = self._signature(payload, b"fmn-message-id")
        return base64.b32encode(digest).rstrip(b"=").decode("ascii").lower()


@dataclass(frozen=True, slots=True)
class Entry:
    """One notification as structured data (live feed JSON, feed items)."""

    id: int
    message_id: str
    topic: str
    app: str
    summary: str
    url: str | None
    filter: str
    created: dt.datetime

    def as_json(self) -> dict[str, Any]:
        """The live feed's JSON object."""
        return {
            "id": self.id,
            "message_id": self.message_id,
            "topic": self.topic,
            "summary": self.summary,
            "url": self.url,
            "app": self.app,
            "filter": self.filter,
            "created": self.created.isoformat(),
        }


@dataclass(frozen=True)
class Rendered:
    """A message ready for any transport."""

    subject: str
    #: The full plain-text body (email).
    text: str
    #: A one-or-two-line body for push services.
    short: str
    #: Extra email headers (``X-Fedmsg-*``, ``List-*``); read-only.
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    entries: tuple[Entry, ...] = ()
    #: The link to the thing the message is about, when there is one.
    url: str | None = None
    #: Carries a confirmation code to an address nobody has proved yet: transports
    #: send it plainly, without the request options the address's URL chooses.
    confirmation: bool = False
    #: Names the notifications it carries, the same each time they are sent
    #: (:meth:`Links.mail_key`); e-mail makes its ``Message-ID`` of it.
    mail_key: str | None = None


_FOOTER = (
    "You get this because of your fmn filter {filter!r} for {context}.\n"
    "To change what you receive, use the fmn TUI or send `fmn help` to the fmn bot on IRC."
)


#: Header values are cut here; mail folds longer lines, but nobody reads them.
_HEADER_LIMIT = 500


def _header(value: str) -> str:
    # Topics, ids, names come from the bus: no CR/LF (forged headers), no control characters.
    return one_line(value, limit=_HEADER_LIMIT)


def _entry(notification: ClaimedNotification) -> Entry:
    # Everything shown comes from a bus message: one line, no control characters
    # (``fmn_core.text``), whichever transport shows it; and bounded and linked as
    # the feeds and the live catch-up show the same message (``fmn_core.display``),
    # so a live client is not pushed what its catch-up would refuse.
    topic = one_line(notification.topic, limit=SUMMARY_MAX_CHARS)
    return Entry(
        id=notification.id,
        message_id=notification.message_id,
        topic=topic,
        app=one_line(notification.app),
        summary=one_line(notification.summary, limit=SUMMARY_MAX_CHARS) or topic,
        url=safe_url(notification.url),
        filter=one_line(notification.filter_name),
        created=notification.created_at,
    )


def _headers(
    notification: ClaimedNotification,
    links: Links | None,
    *,
    digest: bool = False,
) -> dict[str, str]:
    headers: dict[str, str] = {
        "X-Fedmsg-Topic": _header(notification.topic) if not digest else "digest",
        "X-Fedmsg-Category": _header(notification.app) if not digest else "digest",
    }
    if not digest:
        if notification.agent:
            headers["X-Fedmsg-Username"] = _header(notification.agent)
        if notification.packages:
            headers["X-Fedmsg-Package"] = _header(", ".join(notification.packages))
        headers["X-Fedmsg-Id"] = _header(notification.message_id)
    if links is not None:
        headers["List-Id"] = links.list_id(notification.context)
        headers["List-Unsubscribe"] = (
            f"<{links.unsubscribe_url(notification.user, notification.context)}>"
        )
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def _footer(
    notification: ClaimedNotification,
    links: Links | None,
    filters: str,
    *,
    actions: bool = True,
) -> str:
    footer = _FOOTER.format(filter=filters, context=notification.context)
    if links is not None:
        if actions:
            offered = links.action_links(
                notification.user,
                notification.context,
                notification.message_id,
                notification.link_nonce,
                has_packages=bool(notification.packages),
            )
            footer += "\n" + "\n".join(f"{title}: {url}" for title, url in offered)
            footer += f"\nWhy did I get this? fmn why {notification.message_id}"
        url = links.unsubscribe_url(notification.user, notification.context)
        footer += f"\nTo stop all {notification.context} from fmn in one click: {url}"
    return footer


def render(notification: ClaimedNotification, links: Links | None = None) -> Rendered:
    """Render one notification: ``[app] summary``, the details, and a footer."""
    entry = _entry(notification)
    subject = _header(f"[{entry.app}] {entry.summary}" if entry.app else entry.summary)
    lines = [xml_text(notification.summary).strip() or entry.summary, ""]
    if entry.url:
        lines.append(f"Link: {entry.url}")
    lines.append(f"Topic: {entry.topic}")
    if notification.agent:
        lines.append(f"By: {one_line(notification.agent)}")
    if notification.packages:
        lines.append(f"Packages: {one_line(', '.join(notification.packages))}")
    lines.append(f"Matched filter: {entry.filter}")
    lines.extend(["", "-- ", _footer(notification, links, entry.filter)])
    short = entry.summary if not entry.url else f"{entry.summary}\n{entry.url}"
    return Rendered(
        subject=subject,
        text="\n".join(lines) + "\n",
        short=short,
        headers=MappingProxyType(_headers(notification, links)),
        entries=(entry,),
        url=entry.url,
        mail_key=links.mail_key((notification,)) if links is not None else None,
    )


def render_digest(
    notifications: Sequence[ClaimedNotification], links: Links | None = None
) -> Rendered:
    """Render several notifications of one user and context as one digest message."""
    if not notifications:
        raise ValueError("a digest needs at least one notification")
    if len(notifications) == 1:
        return render(notifications[0], links)
    ordered = sorted(notifications, key=lambda n: (n.created_at, n.id))
    first = ordered[0]
    entries = tuple(_entry(n) for n in ordered)
    apps = sorted({e.app for e in entries if e.app})
    subject = f"[fmn] {len(entries)} notifications" + (f" ({', '.join(apps[:4])})" if apps else "")
    lines = [f"{len(entries)} notifications since {first.created_at:%Y-%m-%d %H:%M} UTC:", ""]
    for entry in entries:
        prefix = f"[{entry.app}] " if entry.app else ""
        lines.append(f"* {prefix}{entry.summary}")
        if entry.url:
            lines.append(f"  {entry.url}")
        lines.append(f"  {entry.topic} (filter {entry.filter!r})")
    filters = ", ".join(sorted({e.filter for e in entries}))
    # A digest's footer acts on no single message: only the unsubscribe link.
    lines.extend(["", "-- ", _footer(first, links, filters, actions=False)])
    return Rendered(
        subject=subject,
        text="\n".join(lines) + "\n",
        short=f"{len(entries)} notifications: "
        + "; ".join(e.summary for e in entries[:3])
        + ("; …" if len(entries) > 3 else ""),
        headers=MappingProxyType(_headers(first, links, digest=True)),
        entries=entries,
        url=None,
        mail_key=links.mail_key(ordered) if links is not None else None,
    )


def render_confirmation(
    context: str,
    code: str,
    *,
    public_url: str | None = None,
    origin: str | None = None,
    bot_nick: str | None = None,
) -> Rendered:
    """The message that carries a destination's confirmation code.

    ``origin`` is the front end that set the address (``"tui"`` or ``"irc"``,
    ``Confirmation.origin``): the message says how to enter the code there, and
    only there when it is known.
    """
    bot = bot_nick or "the fmn bot"
    how = {
        "tui": "In the fmn TUI, open this context's destination, press c and type the code.",
        "irc": f"On IRC, send {bot} a private message:  fmn confirm {code}",
    }
    steps = how.get(origin or "") or f"{how['tui']}\nOr, {how['irc'][0].lower()}{how['irc'][1:]}"
    text = (
        f"Someone (hopefully you) asked fmn to send {context} notifications here.\n\n"
        f"Your confirmation code: {code}\n\n"
        f"{steps}\n\n"
        "If this wasn't you, ignore this message: nothing is sent here until the code "
        "is confirmed.\n"
    )
    if public_url:
        text += f"\n-- \nfmn at {public_url}\n"
    return Rendered(
        subject="[fmn] Confirm this address",
        text=text,
        short=f"fmn confirmation code: {code}",
        headers=MappingProxyType({"X-Fedmsg-Category": "fmn"}),
        confirmation=True,
    )
