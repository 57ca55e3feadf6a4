"""E-mail through Apprise's ``mailto://`` plugin and the operator's SMTP server.

The Apprise URL is built here from the operator's ``[smtp]`` settings and the
user's confirmed address only; a user never supplies any part of it but the
address, which is re-checked and URL-encoded. fmn's headers (``X-Fedmsg-*``,
``List-Id``, ``List-Unsubscribe``...) travel as Apprise's ``+Header=value`` URL
arguments, which its e-mail plugin copies into the message.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlencode

from fmn_core.config import SmtpConfig
from fmn_core.destinations import check_email, mask_address
from fmn_core.errors import InvalidDestination
from fmn_core.masking import scrub_error
from fmn_core.rendering import Rendered

from . import TransportError, TransportRefused
from ._apprise import notify_once

__all__ = ["EmailTransport", "SharedTLSContext", "mail_url"]

log = logging.getLogger(__name__)

_MODES = {"none": "insecure", "starttls": "starttls", "ssl": "ssl"}


class SharedTLSContext(ssl.SSLContext):
    """A verifying TLS client context that every mail shares, and that can't be weakened.

    Apprise builds a fresh ``ssl.create_default_context()`` for every mail, even
    over plain SMTP; loading the CA bundle each time costs 20-35 ms of CPU, which
    capped one daemon at about 30 mails a second. fmn never asks Apprise to skip
    certificate checks, so one verifying context serves every mail; should Apprise
    ever try to turn verification off on it, that raises instead of silently
    weakening the context the other mails share.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("check_hostname", "verify_mode") and value != getattr(self, name):
            raise AttributeError("fmn's shared TLS context always verifies certificates")
        super().__setattr__(name, value)


class _SslWithSharedContext:
    """The ``ssl`` module as Apprise's SMTP controller sees it, with one shared context."""

    def __init__(self) -> None:
        self._context: SharedTLSContext | None = None
        self._lock = threading.Lock()

    def create_default_context(self, *args: Any, **kwargs: Any) -> ssl.SSLContext:
        if args or kwargs:
            return ssl.create_default_context(*args, **kwargs)
        with self._lock:
            if self._context is None:
                context = SharedTLSContext(ssl.PROTOCOL_TLS_CLIENT)
                context.load_default_certs()
                self._context = context
            return self._context

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)


def _share_tls_context() -> None:
    try:
        from apprise.plugins.email import smtp as apprise_smtp
    except ImportError:  # pragma: no cover - an Apprise without this module
        return
    if isinstance(getattr(apprise_smtp, "ssl", None), ModuleType):
        setattr(apprise_smtp, "ssl", _SslWithSharedContext())  # noqa: B010 - a module attribute


def _header_value(value: str) -> str:
    # Values come from bus messages (package names, agents): never let one
    # start a new header line.
    return " ".join(value.split())


def mail_url(smtp: SmtpConfig, address: str, headers: Mapping[str, str] = {}) -> str:
    """The Apprise URL that mails ``address`` through the operator's SMTP server."""
    schema = "mailto" if smtp.security == "none" else "mailtos"
    host = f"[{smtp.host}]" if ":" in smtp.host else smtp.host
    credentials = ""
    if smtp.username:
        credentials = quote(smtp.username, safe="")
        if smtp.password:
            credentials += ":" + quote(smtp.password, safe="")
        credentials += "@"
    arguments: dict[str, str] = {
        "smtp": smtp.host,
        "mode": _MODES[smtp.security],
        "from": smtp.from_address,
        "name": smtp.from_name,
        "to": address,
        "cto": str(smtp.timeout_seconds),
        "rto": str(smtp.timeout_seconds),
        "+X-Application": "fmn",
    }
    for name, value in headers.items():
        arguments[f"+{name}"] = _header_value(value)
    return f"{schema}://{credentials}{host}:{smtp.port}/?{urlencode(arguments, quote_via=quote)}"


class EmailTransport:
    """Sends rendered messages as plain-text e-mail."""

    def __init__(self, smtp: SmtpConfig) -> None:
        self.smtp = smtp
        _share_tls_context()

    async def send(self, destination: str, rendered: Rendered) -> None:
        """Mail ``rendered`` to ``destination``; ``TransportError`` says why it failed."""
        try:
            address = check_email(destination)
        except InvalidDestination as exc:
            raise TransportRefused(str(exc)) from None
        url = mail_url(self.smtp, address, rendered.headers)
        await asyncio.to_thread(self._send, url, address, rendered)

    def _send(self, url: str, address: str, rendered: Rendered) -> None:
        problem = notify_once(url, title=rendered.subject, body=rendered.text)
        if problem is not None:
            reason = scrub_error(
                f"the mail server {self.smtp.host}:{self.smtp.port} did not take the message "
                f"({problem})",
                [address],
                context="email",
            )
            raise TransportError(reason)
        log.debug("mailed %s", mask_address("email", address))
