"""E-mail over pooled SMTP sessions to a real (aiosmtpd) SMTP server on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from typing import Any

import pytest
from core.test_rendering import claimed

from daemon.conftest import CountingServer, SmtpServer, free_port
from fmn_core.config import SmtpConfig
from fmn_core.rendering import Links, render, render_confirmation, render_digest
from fmn_daemon.transports import Pooled, TransportError, TransportRefused
from fmn_daemon.transports.email import EmailTransport, build_message

LINKS = Links(public_url="https://fmn.example.org", secret=b"s", list_domain="fedoraproject.org")


def smtp_for(server: SmtpServer) -> SmtpConfig:
    return SmtpConfig(
        host=server.host,
        port=server.port,
        security="none",
        from_address="notifications@fedoraproject.org",
        timeout_seconds=5,
    )


def send(transport: EmailTransport, address: str, rendered: Any) -> None:
    asyncio.run(transport.send(address, rendered))


def test_email_delivers_with_fmn_headers(smtp_server: SmtpServer) -> None:
    rendered = render(claimed(), LINKS)
    transport = EmailTransport(smtp_for(smtp_server))
    send(transport, "jo+fmn@example.org", rendered)
    transport.close()
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
    transport = EmailTransport(smtp_for(smtp_server))
    send(transport, "jo@example.org", rendered)
    transport.close()
    (mail,) = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["jo@example.org"]
    assert mail.message["Bcc"] is None
    assert mail.message["X-Fedmsg-Username"] == "evil Bcc: victim@example.org"


def test_email_sent_again_carries_the_message_id_it_first_had(smtp_server: SmtpServer) -> None:
    # A crash between the server's 250 and the row marked sent sends the mail again:
    # the same Message-ID lets the user's mail client fold the two into one.
    first, second = claimed(id=7), claimed(id=8, message_id="0b3c4e7e-second")
    transport = EmailTransport(smtp_for(smtp_server))
    send(transport, "jo@example.org", render(first, LINKS))
    send(transport, "jo@example.org", render(first, LINKS))
    send(transport, "jo@example.org", render(second, LINKS))
    send(transport, "jo@example.org", render_digest([first, second], LINKS))
    send(transport, "jo@example.org", render_digest([second, first], LINKS))
    confirmation = render_confirmation("email", "123456")
    send(transport, "jo@example.org", confirmation)
    send(transport, "jo@example.org", confirmation)
    transport.close()
    ids = [str(mail.message["Message-ID"]) for mail in smtp_server.wait_for(7)]
    assert all(i.startswith("<") and i.endswith(".fmn@fedoraproject.org>") for i in ids[:5])
    assert ids[0] == ids[1]
    assert ids[3] == ids[4]
    assert len({ids[0], ids[2], ids[3]}) == 3
    # A code is not a notification: each one its own Message-ID.
    assert ids[5] != ids[6]
    assert ".fmn@" not in ids[5]


def test_email_refuses_an_address_that_is_not_plain(smtp_server: SmtpServer) -> None:
    transport = EmailTransport(smtp_for(smtp_server))
    with pytest.raises(TransportRefused):
        asyncio.run(transport.send("jo@example.org,evil@example.org", render(claimed())))
    with pytest.raises(TransportRefused):
        asyncio.run(transport.send("mailto://evil.example.org", render(claimed())))
    assert smtp_server.messages == []


def test_email_unreachable_server_is_a_transport_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = SmtpConfig(host="127.0.0.1", port=free_port(), timeout_seconds=2)
    with pytest.raises(TransportError) as caught:
        asyncio.run(EmailTransport(config).send("joanna@example.org", render(claimed())))
    assert not isinstance(caught.value, TransportRefused)
    assert "joanna@example.org" not in caught.value.reason
    assert "did not take the message" in caught.value.reason
    assert "ConnectionRefusedError" in caught.value.reason
    assert "joanna@example.org" not in caplog.text


def test_email_message_uses_only_operator_settings() -> None:
    smtp = SmtpConfig(
        host="smtp.example.org",
        from_address="fmn@example.org",
        from_name="Fedora Notifications",
    )
    rendered = render(claimed(), LINKS)
    data = build_message(smtp, "jo+x@example.org", rendered)
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["From"] == "Fedora Notifications <fmn@example.org>"
    assert parsed["To"] == "jo+x@example.org"
    assert parsed["Subject"] == rendered.subject
    assert parsed["X-Application"] == "fmn"
    assert parsed["Message-ID"].endswith("@example.org>")
    assert parsed["Date"]
    assert parsed["X-Fedmsg-Topic"] == rendered.headers["X-Fedmsg-Topic"]
    assert parsed.get_content().replace("\r\n", "\n") == rendered.text
    # Seven-bit on the wire whatever the text: any server takes it.
    assert data.isascii()


def test_email_message_with_non_ascii_text_travels_in_seven_bits() -> None:
    rendered = render(claimed(agent="zoë", summary="Ünïcödé summary"), LINKS)
    data = build_message(SmtpConfig(from_name="Notifications fédérées"), "jo@example.org", rendered)
    assert data.isascii()
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert "Ünïcödé summary" in str(parsed["Subject"])
    assert parsed.get_content().replace("\r\n", "\n") == rendered.text
    assert "zoë" in parsed.get_content()
    assert parsed["From"].addresses[0].display_name == "Notifications fédérées"


def test_email_message_folds_a_header_longer_than_a_line_may_be() -> None:
    packages = tuple(f"package-{n}" for n in range(200))
    rendered = render(claimed(packages=packages), LINKS)
    data = build_message(SmtpConfig(), "jo@example.org", rendered)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["X-Fedmsg-Package"] == rendered.headers["X-Fedmsg-Package"]


def test_email_tls_context_is_built_once_and_cannot_be_weakened() -> None:
    import ssl

    from fmn_daemon.transports.email import SharedTLSContext

    transport = EmailTransport(SmtpConfig(security="starttls"))
    first = transport.tls_context
    assert transport.tls_context is first
    assert isinstance(first, SharedTLSContext)
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    with pytest.raises(AttributeError, match="always verifies"):
        first.check_hostname = False
    with pytest.raises(AttributeError, match="always verifies"):
        first.verify_mode = ssl.CERT_NONE
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname


# --------------------------------------------------------------------------- sessions


def config_for(server: CountingServer, **options: Any) -> SmtpConfig:
    return SmtpConfig(host=server.host, port=server.port, timeout_seconds=5, **options)


def send_all(transport: EmailTransport, addresses: list[str]) -> list[str]:
    """Send one mail to each address in turn; the reasons of those that failed."""

    async def run() -> list[str]:
        problems: list[str] = []
        for address in addresses:
            try:
                await transport.send(address, render(claimed(), LINKS))
            except TransportError as exc:
                problems.append(exc.reason)
        return problems

    return asyncio.run(run())


def test_email_reuses_one_session_for_many_mails(counting_server: CountingServer) -> None:
    transport = EmailTransport(config_for(counting_server))
    assert isinstance(transport, Pooled)
    addresses = [f"u{n}@example.org" for n in range(12)]
    assert send_all(transport, addresses) == []
    transport.close()
    assert counting_server.recipients == addresses
    assert len(counting_server.sessions) == 1
    assert transport.opened == 1


def test_email_logs_in_with_the_operator_credentials_once(
    counting_server: CountingServer,
) -> None:
    transport = EmailTransport(config_for(counting_server, username="fmn", password="s3cret"))
    assert send_all(transport, ["a@example.org", "b@example.org"]) == []
    transport.close()
    assert counting_server.logins == [(b"fmn", b"s3cret")]
    assert counting_server.recipients == ["a@example.org", "b@example.org"]


def test_email_reconnects_when_the_server_closed_the_session(
    counting_server: CountingServer,
) -> None:
    counting_server.close_after = 3
    transport = EmailTransport(config_for(counting_server))
    addresses = [f"u{n}@example.org" for n in range(10)]
    assert send_all(transport, addresses) == []
    transport.close()
    # Every mail once, in order: none lost when a session went away, none sent twice.
    assert counting_server.recipients == addresses
    assert len(counting_server.sessions) == 4  # 3 + 3 + 3 + 1
    assert transport.opened == 4


def test_email_refused_recipient_costs_only_its_mail(counting_server: CountingServer) -> None:
    counting_server.refuse = {"gone@example.org"}
    transport = EmailTransport(config_for(counting_server))
    problems = send_all(transport, ["a@example.org", "gone@example.org", "b@example.org"])
    transport.close()
    (problem,) = problems
    assert "550 5.1.1 mailbox unavailable" in problem
    assert "gone@example.org" not in problem
    assert counting_server.recipients == ["a@example.org", "b@example.org"]
    # The session was reset and kept for the next mail.
    assert len(counting_server.sessions) == 1


def test_email_refusal_then_closed_session_keeps_the_servers_reason(
    counting_server: CountingServer,
) -> None:
    counting_server.refuse_and_close = {"spam@example.org"}
    transport = EmailTransport(config_for(counting_server))
    problems = send_all(transport, ["a@example.org", "spam@example.org", "b@example.org"])
    transport.close()
    (problem,) = problems
    assert "554 5.7.1 message rejected as spam" in problem
    assert counting_server.recipients == ["a@example.org", "b@example.org"]
    # The refused mail's session was closed by the server: the next mail took a new one.
    assert len(counting_server.sessions) == 2


def test_email_closes_sessions_idle_too_long(counting_server: CountingServer) -> None:
    transport = EmailTransport(config_for(counting_server), idle_seconds=0.0)
    assert send_all(transport, ["a@example.org"]) == []
    assert transport.close_idle() == 1
    assert transport.close_idle() == 0
    assert send_all(transport, ["b@example.org"]) == []
    transport.close()
    assert transport.opened == 2
    assert len(counting_server.sessions) == 2


def test_email_message_date_is_the_second_it_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Date header is formatted once per second, never kept longer.
    import email.utils
    import time

    rendered = render(claimed(), LINKS)
    dates = []
    for moment in (1_800_000_000.2, 1_800_000_000.9, 1_800_000_001.0, 1_800_003_600.5):
        monkeypatch.setattr(time, "time", lambda moment=moment: moment)
        parsed = email.message_from_bytes(build_message(SmtpConfig(), "jo@example.org", rendered))
        dates.append(parsed["Date"])
        assert parsed["Date"] == email.utils.formatdate(int(moment), usegmt=True)
    assert len(set(dates)) == 3
