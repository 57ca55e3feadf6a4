"""E-mail through Apprise to a real (aiosmtpd) SMTP server on loopback."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import apprise
import pytest
from core.test_rendering import claimed

from daemon.conftest import SmtpServer, free_port
from fmn_core.config import SmtpConfig
from fmn_core.rendering import Links, render
from fmn_daemon.transports import TransportError, TransportRefused
from fmn_daemon.transports.email import EmailTransport, mail_url

LINKS = Links(public_url="https://fmn.example.org", secret=b"s", list_domain="fedoraproject.org")


def smtp_for(server: SmtpServer) -> SmtpConfig:
    return SmtpConfig(
        host=server.host,
        port=server.port,
        security="none",
        from_address="notifications@fedoraproject.org",
        timeout_seconds=5,
    )


def test_email_delivers_with_fmn_headers(smtp_server: SmtpServer) -> None:
    rendered = render(claimed(), LINKS)
    asyncio.run(EmailTransport(smtp_for(smtp_server)).send("jo+fmn@example.org", rendered))
    (mail,) = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["jo+fmn@example.org"]
    assert mail.mail_from == "notifications@fedoraproject.org"
    message = mail.message
    assert message["To"] == "jo+fmn@example.org"
    assert "Fedora Notifications" in message["From"]
    assert mail.subject == rendered.subject
    assert message["X-Fedmsg-Topic"] == "org.fedoraproject.prod.bodhi.buildroot_override.tag"
    assert message["X-Fedmsg-Category"] == "bodhi"
    assert message["X-Fedmsg-Username"] == "lmacken"
    assert message["X-Fedmsg-Package"] == "libxcrypt, glibc"
    assert message["List-Id"] == "<email.fmn.fedoraproject.org>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = str(message["List-Unsubscribe"]).replace("\n", "").replace(" ", "")
    assert unsubscribe == rendered.headers["List-Unsubscribe"]
    body = message.get_content()
    assert "https://bodhi.fedoraproject.org/overrides/libxcrypt-4.4.4-2.fc28" in body
    assert "Matched filter: my packages" in body


def test_email_header_values_cannot_inject_headers(smtp_server: SmtpServer) -> None:
    rendered = render(claimed(agent="evil\r\nBcc: victim@example.org"), LINKS)
    asyncio.run(EmailTransport(smtp_for(smtp_server)).send("jo@example.org", rendered))
    (mail,) = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["jo@example.org"]
    assert mail.message["Bcc"] is None
    assert mail.message["X-Fedmsg-Username"] == "evil Bcc: victim@example.org"


def test_email_refuses_an_address_that_is_not_plain(smtp_server: SmtpServer) -> None:
    transport = EmailTransport(smtp_for(smtp_server))
    with pytest.raises(TransportRefused):
        asyncio.run(transport.send("jo@example.org,evil@example.org", render(claimed())))
    with pytest.raises(TransportRefused):
        asyncio.run(transport.send("mailto://evil.example.org", render(claimed())))
    assert smtp_server.messages == []


def test_email_unreachable_server_is_a_transport_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="apprise")
    config = SmtpConfig(host="127.0.0.1", port=free_port(), timeout_seconds=2)
    with pytest.raises(TransportError) as caught:
        asyncio.run(EmailTransport(config).send("joanna@example.org", render(claimed())))
    assert not isinstance(caught.value, TransportRefused)
    assert "joanna@example.org" not in caught.value.reason
    assert "did not take the message" in caught.value.reason
    assert "apprise" in {r.name for r in caplog.records}
    assert "joanna@example.org" not in caplog.text


def test_email_url_uses_only_operator_settings_and_encodes_them() -> None:
    smtp = SmtpConfig(
        host="smtp.example.org",
        port=587,
        security="starttls",
        username="fmn@example.org",
        password="p@ss:/?&=#word",
        from_address="fmn@example.org",
        from_name="Fedora Notifications",
    )
    url = mail_url(smtp, "jo+x@example.org", {"X-Fedmsg-Topic": "a.b&c=d"})
    assert url.startswith("mailtos://")
    plugin: Any = apprise.Apprise.instantiate(url, suppress_exceptions=False)
    assert plugin is not None
    assert plugin.smtp_host == "smtp.example.org"
    assert plugin.port == 587
    assert plugin.secure_mode == "starttls"
    assert plugin.user == "fmn@example.org"
    assert plugin.password == "p@ss:/?&=#word"
    assert plugin.targets == [(False, "jo+x@example.org")]
    assert plugin.from_addr[1] == "fmn@example.org"
    assert plugin.headers["X-Fedmsg-Topic"] == "a.b&c=d"
    ssl = mail_url(SmtpConfig(host="mx.example.org", port=465, security="ssl"), "a@example.org")
    ssl_plugin: Any = apprise.Apprise.instantiate(ssl, suppress_exceptions=False)
    assert ssl_plugin.secure_mode == "ssl"
    plain = mail_url(SmtpConfig(), "a@example.org")
    plain_plugin: Any = apprise.Apprise.instantiate(plain, suppress_exceptions=False)
    assert plain_plugin.secure_mode == "insecure"


def test_email_tls_context_is_built_once_and_cannot_be_weakened() -> None:
    import ssl

    from apprise.plugins.email import smtp as apprise_smtp

    from fmn_core.config import SmtpConfig
    from fmn_daemon.transports.email import EmailTransport, SharedTLSContext

    EmailTransport(SmtpConfig())
    # The name "ssl" in Apprise's SMTP plugin (not an export of it, hence vars()).
    apprise_ssl = vars(apprise_smtp)["ssl"]
    first = apprise_ssl.create_default_context()
    second = apprise_ssl.create_default_context()
    assert first is second
    assert isinstance(first, SharedTLSContext)
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    with pytest.raises(AttributeError, match="always verifies"):
        first.check_hostname = False
    with pytest.raises(AttributeError, match="always verifies"):
        first.verify_mode = ssl.CERT_NONE
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    # The rest of the ssl module is still what Apprise expects.
    assert apprise_ssl.CERT_NONE == ssl.CERT_NONE
