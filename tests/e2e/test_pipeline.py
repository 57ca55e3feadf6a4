"""The whole pipeline: bus → ``fmn-daemon run`` → mail, push, Atom feed, live feed.

Real RabbitMQ, real PostgreSQL (a fresh, migrated database), a real SMTP server
(aiosmtpd), a real HTTP push receiver; the daemon runs as a subprocess exactly
as an operator starts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import feedparser
import pytest
from daemon.conftest import WITH_JSON, PushReceiver, RabbitMQ, SmtpServer
from fedora_messaging import message as fm_message

from fmn_core import preferences
from fmn_core.config import Config, PushConfig
from fmn_core.db import Database
from fmn_core.messages import facts_of, parse_line
from fmn_core.preferences import Actor
from fmn_daemon.cli import main

from .conftest import Daemon, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


def koji_message() -> fm_message.Message:
    """A Koji message from the bundled samples, as its publisher would build it (schema header)."""
    for line in (files("fmn_daemon.samples") / "messages.jsonl").read_text().splitlines():
        sample = parse_line(line)
        if facts_of(sample).app_name.lower() == "koji" and facts_of(sample).summary:
            return type(sample)(body=sample.body, topic=sample.topic)
    raise AssertionError("no koji sample")


def publish_with_fedora_messaging(
    broker: RabbitMQ, messages: list[fm_message.Message], tmp_path: Path
) -> None:
    """Publish with fedora-messaging's own command line, configured for the test's exchange."""
    source = tmp_path / "outgoing.jsonl"
    source.write_text("".join(fm_message.dumps(m).rstrip("\n") + "\n" for m in messages))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "fedora-messaging"),
            "publish",
            "--exchange",
            broker.exchange,
            str(source),
        ],
        env=dict(os.environ, FEDORA_MESSAGING_CONF=str(broker.config_path)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


class SseClient:
    """Reads a Server-Sent Events stream in a thread."""

    def __init__(self, url: str) -> None:
        self.lines: list[str] = []
        self.response = urllib.request.urlopen(url, timeout=60)
        assert self.response.status == 200
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for raw in self.response:
                self.lines.append(raw.decode().rstrip("\n"))
        except Exception:
            pass

    def events(self) -> list[dict[str, object]]:
        return [
            json.loads(line[len("data: ") :])
            for line in list(self.lines)
            if line.startswith("data: ")
        ]

    def close(self) -> None:
        self.response.close()


def test_pipeline_delivers_by_mail_push_feed_and_live_feed(
    empty_postgres_url: str,
    make_daemon: Callable[..., Daemon],
    rabbitmq: RabbitMQ,
    smtp_server: SmtpServer,
    push_receiver: PushReceiver,
    tmp_path: Path,
) -> None:
    settings = (
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_server.port}\n'
        "[push]\nallow_private_hosts = true\n"
        f"allowed_schemes = {json.dumps(list(WITH_JSON))}\n"
        "[delivery]\nidle_poll_seconds = 0.2\nshutdown_grace_seconds = 5.0\n"
    )
    daemon = make_daemon(empty_postgres_url, settings)
    assert main(["--config", str(daemon.config), "db", "upgrade"]) == 0

    # alice sets up four contexts through the preference service, as the TUI would.
    db = Database(
        Config(
            database_url=empty_postgres_url,
            push=PushConfig(allowed_schemes=WITH_JSON, allow_private_hosts=True),
        )
    )
    alice = Actor("alice")
    try:
        with db.begin() as session:
            for context in ("email", "push", "rss", "live"):
                preferences.add_filter(session, alice, context, "koji")
                preferences.add_rule(session, alice, context, "koji", "app_is", {"app": "koji"})
            mail = preferences.set_destination(session, alice, "email", "alice@example.org")
            push = preferences.set_destination(
                session, alice, "push", f"json://127.0.0.1:{push_receiver.port}/hook"
            )
            rss = preferences.set_destination(session, alice, "rss", None)
            live = preferences.set_destination(session, alice, "live", None)
            assert mail.code and push.code
            assert preferences.confirm(session, alice, mail.code).confirmed
            assert preferences.confirm(session, alice, push.code).confirmed
    finally:
        db.dispose()

    daemon.start()
    sse = SseClient(f"{daemon.base_url}/live/sse/{live.destination.address}")
    try:
        message = koji_message()
        summary = facts_of(message).summary
        publish_with_fedora_messaging(rabbitmq, [message], tmp_path)

        mails = smtp_server.wait_for(1, timeout=30)
        assert len(mails) == 1, daemon.output()
        assert mails[0].rcpt_tos == ["alice@example.org"]
        assert mails[0].message["X-Fedmsg-Id"] == message.id
        body = mails[0].message.get_body(("plain",))
        assert body is not None and summary[:40] in body.get_content()

        pushes = push_receiver.wait_for(1, timeout=30)
        assert len(pushes) == 1, daemon.output()
        assert pushes[0].method == "POST" and pushes[0].path == "/hook"
        assert summary[:40] in json.dumps(pushes[0].json())

        wait_for(
            lambda: any(e.get("message_id") == message.id for e in sse.events()),
            timeout=30,
            what="a live-feed event",
        )

        def feed_entries() -> list[dict[str, str]]:
            url = f"{daemon.base_url}/feeds/{rss.destination.address}.atom"
            with urllib.request.urlopen(url, timeout=10) as response:
                return list(feedparser.parse(response.read()).entries)

        wait_for(lambda: len(feed_entries()) == 1, timeout=30, what="an Atom entry")
        assert summary[:40] in feed_entries()[0]["title"]

        # Nothing else arrives: one message, one notification per context.
        assert len(smtp_server.messages) == 1 and len(push_receiver.requests) == 1
    finally:
        sse.close()
    assert daemon.stop() == 0, daemon.output()
    assert rabbitmq.queue_depth() == 0
    assert "Traceback" not in daemon.output()
