"""E-mail over SMTP to the operator's mail server, on connections kept open and reused.

A sender keeps its SMTP session open and runs one ``MAIL FROM``/``RCPT TO``/``DATA``
transaction per mail on it (RFC 5321 §3.3 allows any number per session), instead
of connecting, greeting, negotiating TLS and logging in again for every mail, which
cost more CPU than everything else the daemon does for a mail.

- Sessions wait in a small pool (at most one per concurrent send); a send takes
  one, or opens one (``EHLO``, ``STARTTLS`` or implicit TLS, ``AUTH`` as the
  ``[smtp]`` settings say). A session idle for :data:`IDLE_SECONDS` is closed
  (``QUIT``) rather than reused, before servers drop it on their own (RFC 5321
  §4.5.3.2.7 lets them after 5 minutes), and :meth:`EmailTransport.close_idle`
  closes them when the senders have nothing to do.
- A session the server has closed meanwhile (a time-out, a restart, ``421``) fails
  on ``MAIL FROM`` or ``RCPT TO``, before anything of the mail was accepted: the
  mail is sent again at once on a fresh session. A session that breaks after the
  mail's data went out is never retried here (the server may have taken the mail),
  so a mail is never sent twice by this transport; the row fails and waits for the
  outbox's retry, as any failed send does.
- A refusal of one mail (``4xx``/``5xx`` to ``MAIL FROM``, ``RCPT TO`` or the data)
  costs that mail only: the session is reset (``RSET``) and kept, and the reason the
  server gave is the row's ``last_error``.

The message is built here from the operator's ``[smtp]`` settings and the user's
confirmed address only; a user never supplies any part of it but the address,
which is re-checked first. fmn's headers (``X-Fedmsg-*``, ``List-Id``,
``List-Unsubscribe``...) are folded to one line each, so no value from a bus
message can start a header of its own.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import smtplib
import ssl
import threading
import time
from email import quoprimime
from email.header import Header
from typing import Any

from fmn_core.config import SmtpConfig
from fmn_core.destinations import check_email, mask_address
from fmn_core.errors import InvalidDestination
from fmn_core.masking import scrub_error
from fmn_core.rendering import Rendered

from . import TransportError, TransportRefused

__all__ = ["IDLE_SECONDS", "EmailTransport", "SharedTLSContext", "build_message"]

log = logging.getLogger(__name__)

#: A pooled SMTP session unused for this long is closed instead of reused.
IDLE_SECONDS = 30.0

#: RFC 5322's hard limit on a line, without its CRLF.
_LINE_MAX = 998
#: Body lines longer than this are wrapped by quoted-printable (RFC 5322 §2.1.1).
_BODY_LINE = 78

#: What a session that is gone looks like: the server closed it, or the socket broke.
_GONE = (smtplib.SMTPServerDisconnected, OSError)
#: "Service not available, closing transmission channel" (RFC 5321 §3.8).
_CLOSING = 421


class SharedTLSContext(ssl.SSLContext):
    """A verifying TLS client context that every session shares, and that can't be weakened.

    Loading the CA bundle costs 20-35 ms of CPU, so it is done once per transport;
    should anything try to turn verification off on it, that raises instead of
    silently weakening the context every session shares.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("check_hostname", "verify_mode") and value != getattr(self, name):
            raise AttributeError("fmn's shared TLS context always verifies certificates")
        super().__setattr__(name, value)


def _tls_context() -> SharedTLSContext:
    context = SharedTLSContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_default_certs()
    return context


def _header_value(value: str) -> str:
    # Values come from bus messages (package names, agents): never let one
    # start a new header line.
    return " ".join(value.split())


def _header_line(name: str, value: str) -> str:
    """``Name: value``, as it is when it can be; RFC 2047 words and folding when not."""
    line = f"{name}: {value}"
    if value.isascii() and len(line) <= _LINE_MAX:
        return line
    charset = "us-ascii" if value.isascii() else "utf-8"
    return f"{name}: " + Header(value, charset, header_name=name).encode(linesep="\r\n")


@functools.lru_cache(maxsize=16)
def _from_line(name: str, address: str) -> str:
    # The same for every mail of a deployment: formatted once.
    return _header_line("From", email.utils.formataddr((name, address)))


#: The last ``Date`` header written, and the second it is for.
_date: tuple[int, str] = (0, "")


def _date_line() -> str:
    """``Date: ...`` for now; RFC 5322 dates are to the second, so once per second."""
    global _date
    now = time.time()
    second, line = _date
    if int(now) != second:
        line = f"Date: {email.utils.formatdate(now, usegmt=True)}"
        # One assignment of a tuple: threads that race here write the same value.
        _date = (int(now), line)
    return line


#: ``<address>`` as ``smtplib`` quotes it for ``MAIL FROM`` and ``RCPT TO``; the
#: sender and the usual recipients are parsed once rather than for every mail.
_quoted = functools.lru_cache(maxsize=4096)(smtplib.quoteaddr)


def _message_id(rendered: Rendered, domain: str | None) -> str:
    # The same notifications, the same Message-ID: a mail sent twice is folded by
    # mail clients (``Links.mail_key``). Confirmation codes carry no notification.
    if rendered.mail_key is None:
        return email.utils.make_msgid(domain=domain)
    return f"<{rendered.mail_key}.fmn@{domain or 'localhost'}>"


def build_message(smtp: SmtpConfig, address: str, rendered: Rendered) -> bytes:
    """The plain-text mail of ``rendered`` to ``address``, from the operator's sender.

    Written out directly rather than through ``email.message.EmailMessage``, whose
    header parsing cost more CPU than the rest of a mail's send path together.
    Seven bits on the wire (RFC 2047 words, quoted-printable), so that any server
    takes it whether or not it offers ``8BITMIME``; only an address that is not
    ASCII travels as UTF-8, and then only to a server that offers ``SMTPUTF8``.
    """
    domain = smtp.from_address.rpartition("@")[2] or None
    text = rendered.text.replace("\r\n", "\n")
    if text.isascii() and all(len(line) <= _BODY_LINE for line in text.split("\n")):
        encoding, body = "7bit", text.replace("\n", "\r\n")
    else:
        # quoprimime works on code points 0-255: the UTF-8 bytes, one per character.
        raw = text.encode("utf-8").decode("latin-1")
        encoding, body = "quoted-printable", quoprimime.body_encode(raw, eol="\r\n")
    lines = [
        _from_line(smtp.from_name, smtp.from_address),
        # An address is never RFC 2047-encoded: one that is not ASCII goes as it is.
        f"To: {address}",
        _header_line("Subject", _header_value(rendered.subject)),
        _date_line(),
        f"Message-ID: {_message_id(rendered, domain)}",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        f"Content-Transfer-Encoding: {encoding}",
        "X-Application: fmn",
    ]
    lines.extend(
        _header_line(name, _header_value(value)) for name, value in rendered.headers.items()
    )
    if not body.endswith("\r\n"):
        body += "\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


class _Refused(Exception):
    """The server refused one mail; the session is still usable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Gone(Exception):
    """The session broke; ``before_data`` says whether the mail's data had not gone out."""

    def __init__(self, cause: BaseException, *, before_data: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.before_data = before_data


def _reply(code: int, text: bytes | str) -> str:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(words.split())}".strip()


class _Session:
    """One open SMTP session and when it was last used."""

    def __init__(self, client: smtplib.SMTP) -> None:
        self.client = client
        self.used_at = time.monotonic()
        #: The reset after a refusal failed: the session is not reused.
        self.broken = False

    def transaction(self, sender: str, recipient: str, data: bytes, utf8: bool) -> None:
        """One mail: ``MAIL FROM``, ``RCPT TO``, ``DATA``; raises ``_Refused`` or ``_Gone``."""
        client = self.client
        try:
            if utf8:
                code, text = client.mail(sender, ["SMTPUTF8"])
            else:
                # What ``client.mail`` and ``client.rcpt`` send, with the addresses
                # quoted once (``_quoted``) instead of parsed again for every mail.
                client.putcmd("mail", f"FROM:{_quoted(sender)}")
                code, text = client.getreply()
            self._check(code, text, "sender refused", (250,))
            client.putcmd("rcpt", f"TO:{_quoted(recipient)}")
            code, text = client.getreply()
            self._check(code, text, "recipient refused", (250, 251))
        except smtplib.SMTPNotSupportedError:
            raise _Refused("the server does not offer SMTPUTF8, which this address needs") from None
        except _GONE as exc:
            raise _Gone(exc, before_data=True) from exc
        try:
            code, text = client.data(data)
        except smtplib.SMTPDataError as exc:  # DATA itself refused: nothing was sent yet
            self._reset()
            raise _Refused(f"message refused: {_reply(exc.smtp_code, exc.smtp_error)}") from None
        except _GONE as exc:
            raise _Gone(exc, before_data=False) from exc
        if code != 250:
            self._reset()
            raise _Refused(f"message refused: {_reply(code, text)}")
        self.used_at = time.monotonic()

    def _check(self, code: int, text: bytes, what: str, good: tuple[int, ...]) -> None:
        if code in good:
            return
        if code == _CLOSING:
            # The server is ending the session (a restart, a session limit): nothing
            # of this mail was taken, so it may go again on a new session.
            self.client.close()
            raise smtplib.SMTPServerDisconnected(_reply(code, text))
        self._reset()
        raise _Refused(f"{what}: {_reply(code, text)}")

    def _reset(self) -> None:
        try:
            self.client.rset()
        except _GONE:
            # The refusal stands (it is the reason users see); only the session goes.
            self.broken = True

    def close(self) -> None:
        """``QUIT``, or just drop the socket if the server is gone."""
        try:
            self.client.quit()
        except (smtplib.SMTPException, OSError):
            self.client.close()


class EmailTransport:
    """Sends rendered messages as plain-text e-mail over pooled SMTP sessions."""

    def __init__(self, smtp: SmtpConfig, *, idle_seconds: float = IDLE_SECONDS) -> None:
        self.smtp = smtp
        self.idle_seconds = idle_seconds
        #: The one TLS context of every session (built on first use).
        self._tls: SharedTLSContext | None = None
        self._idle: list[_Session] = []
        self._lock = threading.Lock()
        #: Sessions opened so far (for operators' debugging and tests).
        self.opened = 0

    @property
    def tls_context(self) -> SharedTLSContext:
        """The verifying context every TLS session of this transport uses."""
        with self._lock:
            if self._tls is None:
                self._tls = _tls_context()
            return self._tls

    async def send(self, destination: str, rendered: Rendered) -> None:
        """Mail ``rendered`` to ``destination``; ``TransportError`` says why it failed."""
        await asyncio.to_thread(self.send_blocking, destination, rendered)

    def send_blocking(self, destination: str, rendered: Rendered) -> None:
        """``send`` from a worker thread (senders mail a batch from one thread call)."""
        try:
            address = check_email(destination)
        except InvalidDestination as exc:
            raise TransportRefused(str(exc)) from None
        self._send(address, rendered)

    @property
    def idle_sessions(self) -> int:
        """Sessions open and waiting for the next mail."""
        with self._lock:
            return len(self._idle)

    def close_idle(self) -> int:
        """Close the sessions idle for ``idle_seconds`` or more; how many were closed."""
        limit = time.monotonic() - self.idle_seconds
        with self._lock:
            stale = [s for s in self._idle if s.used_at <= limit]
            self._idle = [s for s in self._idle if s.used_at > limit]
        for session in stale:
            session.close()
        return len(stale)

    def close(self) -> None:
        """Close every idle session (at shutdown)."""
        with self._lock:
            sessions, self._idle = self._idle, []
        for session in sessions:
            session.close()

    # -- in a worker thread ---------------------------------------------------------

    def _send(self, address: str, rendered: Rendered) -> None:
        data = build_message(self.smtp, address, rendered)
        utf8 = not address.isascii()
        # A pooled session may have been closed by the server since its last mail:
        # that shows before the data goes out, so one more try on a fresh session
        # cannot send the mail twice.
        for fresh in (False, True):
            session = self._take(fresh)
            try:
                session.transaction(self.smtp.from_address, address, data, utf8)
            except _Refused as exc:
                if session.broken:
                    session.close()
                else:
                    self._give(session)
                raise self._error(exc.reason, address) from None
            except _Gone as exc:
                session.close()
                if exc.before_data and not fresh:
                    log.debug("mail server closed a pooled session; sending on a new one")
                    continue
                raise self._error(self._describe(exc.cause), address) from None
            self._give(session)
            log.debug("mailed %s", mask_address("email", address))
            return

    def _take(self, fresh: bool) -> _Session:
        if not fresh:
            limit = time.monotonic() - self.idle_seconds
            stale: list[_Session] = []
            session: _Session | None = None
            with self._lock:
                while self._idle:
                    candidate = self._idle.pop()
                    if candidate.used_at > limit:
                        session = candidate
                        break
                    stale.append(candidate)
            for old in stale:
                old.close()
            if session is not None:
                return session
        return self._open()

    def _give(self, session: _Session) -> None:
        with self._lock:
            self._idle.append(session)

    def _open(self) -> _Session:
        smtp = self.smtp
        client: smtplib.SMTP | None = None
        try:
            if smtp.security == "ssl":
                client = smtplib.SMTP_SSL(
                    smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=self.tls_context
                )
            else:
                client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
            client.ehlo()
            if smtp.security == "starttls":
                client.starttls(context=self.tls_context)
                client.ehlo()
            if smtp.username:
                client.login(smtp.username, smtp.password)
        except (smtplib.SMTPException, OSError) as exc:
            if client is not None:
                client.close()
            raise self._error(self._describe(exc), "") from None
        with self._lock:
            self.opened += 1
        return _Session(client)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, smtplib.SMTPResponseException):
            return _reply(exc.smtp_code, exc.smtp_error)
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return str(exc) or "the server lacks a required extension"
        words = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {words}" if words else type(exc).__name__

    def _error(self, problem: str, address: str) -> TransportError:
        reason = scrub_error(
            f"the mail server {self.smtp.host}:{self.smtp.port} did not take the message "
            f"({problem})",
            [address] if address else [],
            context="email",
        )
        return TransportError(reason)
