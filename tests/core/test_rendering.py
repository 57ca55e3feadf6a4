"""Rendering: subjects, bodies, headers, digests, and signed unsubscribe links."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import stat
import threading
from pathlib import Path

from fmn_core.config import Config, HttpConfig, SmtpConfig
from fmn_core.outbox import ClaimedNotification
from fmn_core.rendering import Links, load_secret_key, render, render_confirmation, render_digest

SECRET = b"test-secret"


def claimed(**changes: object) -> ClaimedNotification:
    base = ClaimedNotification(
        id=7,
        message_id="1ad33449-4c4d-5a09-9af1-ad29487bf3e9",
        topic="org.fedoraproject.prod.bodhi.buildroot_override.tag",
        app="bodhi",
        summary="lmacken submitted a buildroot override for libxcrypt-4.4.4-2.fc28",
        url="https://bodhi.fedoraproject.org/overrides/libxcrypt-4.4.4-2.fc28",
        agent="lmacken",
        usernames=("lmacken",),
        packages=("libxcrypt", "glibc"),
        severity=20,
        user_id=1,
        user="jo",
        context="email",
        filter_name="my packages",
        created_at=dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
        attempts=0,
        enabled=True,
        digest_minutes=0,
        digest_count=0,
        muted_until=None,
        destinations=("jo@example.org",),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def links() -> Links:
    return Links(
        public_url="https://fmn.example.org", secret=SECRET, list_domain="fedoraproject.org"
    )


def test_render_subject_body_and_footer() -> None:
    rendered = render(claimed(), links())
    assert rendered.subject == (
        "[bodhi] lmacken submitted a buildroot override for libxcrypt-4.4.4-2.fc28"
    )
    text = rendered.text
    assert "lmacken submitted a buildroot override" in text
    assert "https://bodhi.fedoraproject.org/overrides/libxcrypt-4.4.4-2.fc28" in text
    assert "org.fedoraproject.prod.bodhi.buildroot_override.tag" in text
    assert "my packages" in text
    assert "fmn TUI" in text and "fmn help" in text
    assert "https://fmn.example.org/unsubscribe/" in text
    assert rendered.short.endswith(rendered.url or "")
    assert [e.id for e in rendered.entries] == [7]
    assert rendered.entries[0].as_json()["filter"] == "my packages"


def test_render_email_headers() -> None:
    headers = render(claimed(), links()).headers
    assert headers["X-Fedmsg-Topic"] == "org.fedoraproject.prod.bodhi.buildroot_override.tag"
    assert headers["X-Fedmsg-Category"] == "bodhi"
    assert headers["X-Fedmsg-Username"] == "lmacken"
    assert headers["X-Fedmsg-Package"] == "libxcrypt, glibc"
    assert headers["List-Id"] == "<email.fmn.fedoraproject.org>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = headers["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://fmn.example.org/unsubscribe/") and unsubscribe.endswith(
        ">"
    )
    token = unsubscribe.rsplit("/", 1)[1].rstrip(">")
    assert links().verify_unsubscribe_token(token) == ("jo", "email")


def test_render_without_links_has_no_unsubscribe_headers() -> None:
    rendered = render(claimed(context="push"))
    assert "List-Unsubscribe" not in rendered.headers
    assert "unsubscribe" not in rendered.text


def test_render_summary_falls_back_to_topic_and_stays_on_one_line() -> None:
    assert render(claimed(summary="")).subject == (
        "[bodhi] org.fedoraproject.prod.bodhi.buildroot_override.tag"
    )
    rendered = render(claimed(summary="line one\nBcc: evil@example.org"))
    assert "\n" not in rendered.subject
    assert rendered.subject == "[bodhi] line one Bcc: evil@example.org"


def test_render_digest_lists_every_notification_in_one_message() -> None:
    rows = [
        claimed(id=3, summary="third", created_at=dt.datetime(2024, 5, 1, 12, 3, tzinfo=dt.UTC)),
        claimed(
            id=1,
            summary="first",
            app="koji",
            url=None,
            created_at=dt.datetime(2024, 5, 1, 12, 1, tzinfo=dt.UTC),
        ),
        claimed(
            id=2,
            summary="second",
            filter_name="other",
            created_at=dt.datetime(2024, 5, 1, 12, 2, tzinfo=dt.UTC),
        ),
    ]
    rendered = render_digest(rows, links())
    assert rendered.subject == "[fmn] 3 notifications (bodhi, koji)"
    assert [e.id for e in rendered.entries] == [1, 2, 3]
    text = rendered.text
    assert text.index("first") < text.index("second") < text.index("third")
    assert "'other'" in text and "'my packages'" in text
    assert rendered.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert render_digest(rows[:1], links()).subject == render(rows[0], links()).subject


def test_links_reject_tampered_and_foreign_tokens() -> None:
    token = links().unsubscribe_token("jo", "email")
    encoded, signature = token.split(".")
    other = links().unsubscribe_token("al", "email")
    forged = other.split(".")[0] + "." + signature  # al's name with jo's signature
    assert links().verify_unsubscribe_token(forged) is None
    assert links().verify_unsubscribe_token(encoded + "." + signature[:-2] + "AA") is None
    assert links().verify_unsubscribe_token(encoded) is None
    assert links().verify_unsubscribe_token("not a token at all") is None
    other_secret = Links(public_url="https://x", secret=b"another")
    assert other_secret.verify_unsubscribe_token(token) is None


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_tokens_are_signed_as_links_already_in_mailboxes_were() -> None:
    """HMAC-SHA256 of the purpose, a NUL and the payload, cut to 16 bytes: links in
    mails sent by an earlier fmn keep working after an upgrade."""
    expires = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    made = {
        b"fmn-unsubscribe": links().unsubscribe_token("jo", "email"),
        b"fmn-action": links().action_token("jo", "email", "m-1", "digest", expires, 3),
    }
    for purpose, token in made.items():
        encoded, signature = token.split(".")
        expected = hmac.digest(SECRET, purpose + b"\0" + _unb64(encoded), hashlib.sha256)
        assert _unb64(signature) == expected[:16]
    # Signed from many sender threads at once with one ``Links``: each token is its own.
    shared, tokens = links(), {}

    def sign(user: str) -> None:
        for _ in range(200):
            tokens[user] = shared.action_token(user, "email", "m-1", "digest", expires, 3)
            assert shared.verify_action_token(tokens[user]) is not None

    threads = [threading.Thread(target=sign, args=(f"user{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for user, token in tokens.items():
        claim = links().verify_action_token(token)
        assert claim is not None and claim.user == user


def test_load_secret_key_is_generated_once_and_kept(tmp_path: Path) -> None:
    config = Config()
    first = load_secret_key(config)
    assert len(first) >= 32
    assert load_secret_key(config) == first
    (key_file,) = (tmp_path / "state").rglob("http-secret-key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    configured = Config(http=HttpConfig(secret_key="from-config"))
    assert load_secret_key(configured) == b"from-config"


def test_links_from_config_use_public_url_and_mail_domain() -> None:
    config = Config(
        http=HttpConfig(public_url="https://notify.example.org/", secret_key="k"),
        smtp=SmtpConfig(from_address="fmn@example.org"),
    )
    made = Links.from_config(config)
    assert made.unsubscribe_url("jo", "email").startswith("https://notify.example.org/unsubscribe/")
    assert made.list_id("email") == "<email.fmn.example.org>"


def test_render_confirmation_carries_the_code() -> None:
    rendered = render_confirmation("email", "ABCD2345")
    assert "fmn confirm ABCD2345" in rendered.text
    assert "ABCD2345" in rendered.short


def test_render_confirmation_fits_the_front_end_that_set_the_address() -> None:
    tui = render_confirmation("email", "ABCD2345", origin="tui").text
    assert "press c" in tui and "ABCD2345" in tui
    assert "fmn confirm" not in tui  # the TUI has no such command
    irc = render_confirmation("email", "ABCD2345", origin="irc", bot_nick="fmnbot").text
    assert "send fmnbot a private message:  fmn confirm ABCD2345" in irc
    assert "TUI" not in irc
    either = render_confirmation("email", "ABCD2345").text
    assert "press c" in either and "fmn confirm ABCD2345" in either
    assert "fmn confirm ABCD2345\nin the fmn TUI" not in either


def test_mail_key_names_the_notifications_and_nothing_else() -> None:
    one = links()
    key = one.mail_key([claimed()])
    assert key == one.mail_key([claimed(summary="rendered again, other links")])
    assert key.isalnum() and key.islower() and len(key) == 26
    # Any of what the mail carries, or another deployment's secret, changes it: a
    # client that sees a Message-ID again drops the mail as a duplicate.
    others = {
        one.mail_key([claimed(id=8)]),
        one.mail_key([claimed(message_id="another-bus-message")]),
        one.mail_key([claimed(user="bob")]),
        one.mail_key([claimed(context="matrix")]),
        one.mail_key([claimed(), claimed(id=8, message_id="m2")]),
        dataclasses.replace(one, secret=b"another deployment").mail_key([claimed()]),
    }
    assert key not in others and len(others) == 6
    digest = [claimed(id=9, message_id="m9"), claimed(id=3, message_id="m3")]
    assert one.mail_key(digest) == one.mail_key(digest[::-1])
    assert render(claimed(), one).mail_key == key
    assert render_digest(digest, one).mail_key == one.mail_key(digest)
    assert render(claimed()).mail_key is None
