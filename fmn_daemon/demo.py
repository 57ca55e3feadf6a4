"""``fmn-daemon demo``: the whole of fmn on one machine, in a minute, with nothing to set up.

No broker, no server: a fresh SQLite database in a new directory, the schema
upgraded, package ownership loaded from a small bundled file, three sample users
set up through the preference service (the same calls the TUI and the bot make),
the bundled bus messages replayed through the real ingest pipeline, and the real
senders run until the outbox is empty. Mail goes to an SMTP server on loopback
(aiosmtpd) that writes a local mbox file; feeds are written as Atom files.

The users:

- **alice**, a packager: the *packager* template by e-mail (her packages come
  from the bundled ownership file), and *everything mine* as a feed;
- **bob** follows another contributor (``user_involved``) by e-mail;
- **carol** watches two applications (Copr builds, Anitya releases) in a feed.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import mailbox
import secrets
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.header import decode_header, make_header
from importlib.resources import as_file, files
from pathlib import Path
from typing import IO, Any

import platformdirs
from sqlalchemy import func, select

from fmn_core import preferences
from fmn_core.config import Config, HttpConfig, OwnershipConfig, SmtpConfig
from fmn_core.db import Database
from fmn_core.feeds import sent_entries
from fmn_core.models import Destination, Notification, Preference, User
from fmn_core.ownership import DistGitOwnership, refresh_ownership
from fmn_core.preferences import Actor
from fmn_core.schema import upgrade

from .metrics import Metrics
from .replay import ReplayStats, replay

__all__ = ["DemoResult", "run_demo", "set_up_users"]

#: Sample users: (name, e-mail address or None).
USERS = (("alice", "alice@example.org"), ("bob", "bob@example.org"), ("carol", None))
FOLLOWED = "mohanboddu"


@dataclass
class DemoResult:
    """Where the demo put things, and what happened."""

    directory: Path
    config_file: Path
    mailbox: Path
    feeds: dict[str, Path]
    replayed: ReplayStats
    #: (user, context) -> {state: count}
    outcome: dict[tuple[str, str], dict[str, int]]
    subjects: list[str]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _MboxHandler:
    """aiosmtpd handler appending each message to an mbox file (its own one writes Maildir)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        raw = data if isinstance(data, bytes) else str(data).encode("utf-8")
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        message.set_unixfrom(f"From {envelope.mail_from or 'MAILER-DAEMON'}")
        box = mailbox.mbox(str(self.path))
        try:
            box.lock()
            box.add(message)
            box.flush()
        finally:
            box.unlock()
            box.close()
        return "250 Message accepted for delivery"


@contextmanager
def _mail_server(mbox: Path) -> Iterator[int]:
    """An SMTP server on loopback that appends every message to ``mbox``."""
    from aiosmtpd.controller import Controller

    port = _free_port()
    controller = Controller(_MboxHandler(mbox), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def set_up_users(db: Database) -> None:
    """Create the sample users through the preference service, with confirmed destinations."""
    with db.begin() as session:
        for name, address in USERS:
            if address is None:
                continue
            pending = preferences.set_destination(session, Actor(name), "email", address)
            assert pending.code is not None
            result = preferences.confirm(session, Actor(name), pending.code)
            assert result.confirmed, result.message

        alice = Actor("alice")
        preferences.use_template(session, alice, "packager", "email")
        preferences.use_template(session, alice, "everything-mine", "rss")
        preferences.set_destination(session, alice, "rss", None)

        bob = Actor("bob")
        preferences.add_filter(session, bob, "email", f"follow {FOLLOWED}")
        preferences.add_rule(
            session, bob, "email", f"follow {FOLLOWED}", "user_involved", {"username": FOLLOWED}
        )

        carol = Actor("carol")
        preferences.add_filter(session, carol, "rss", "copr builds")
        preferences.add_rule(session, carol, "rss", "copr builds", "app_is", {"app": "copr"})
        preferences.add_filter(session, carol, "rss", "new upstream releases")
        preferences.add_rule(
            session, carol, "rss", "new upstream releases", "app_is", {"app": "anitya"}
        )
        preferences.set_destination(session, carol, "rss", None)


def _write_feeds(db: Database, directory: Path) -> dict[str, Path]:
    from .transports.feed import build_feed

    feeds: dict[str, Path] = {}
    folder = directory / "feeds"
    folder.mkdir(exist_ok=True)
    with db.begin() as session:
        owners = session.execute(
            select(User.id, User.name)
            .join(Preference, Preference.user_id == User.id)
            .join(Destination, Destination.preference_id == Preference.id)
            .where(Preference.context == "rss", Destination.confirmed.is_(True))
            .order_by(User.name)
        ).all()
        for user_id, name in owners:
            path = folder / f"{name}.atom"
            entries = sent_entries(session, user_id, "rss", limit=50)
            path.write_bytes(build_feed(name, entries, feed_url=path.as_uri(), kind="atom"))
            feeds[name] = path
    return feeds


def _outcome(db: Database) -> dict[tuple[str, str], dict[str, int]]:
    with db.begin() as session:
        rows = session.execute(
            select(User.name, Notification.context, Notification.state, func.count())
            .join(User, User.id == Notification.user_id)
            .group_by(User.name, Notification.context, Notification.state)
            .order_by(User.name, Notification.context)
        ).all()
    outcome: dict[tuple[str, str], dict[str, int]] = {}
    for name, context, state, count in rows:
        outcome.setdefault((name, context), {})[state] = int(count)
    return outcome


def _subjects(mbox: Path) -> list[str]:
    if not mbox.exists():
        return []
    box = mailbox.mbox(str(mbox))
    try:
        return [str(make_header(decode_header(m["Subject"] or ""))) for m in box]
    finally:
        box.close()


def demo(directory: Path | None = None) -> DemoResult:
    """Run the demo in ``directory`` (a new one under the state directory by default)."""
    from .delivery import Senders
    from .transports.live import LiveHub

    if directory is None:
        state = Path(platformdirs.user_state_dir("fmn"))
        state.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix="demo-", dir=state))
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "demo.sqlite"
    mbox = directory / "mailbox.mbox"
    for leftover in (database, mbox):  # a rerun in the same directory starts afresh
        leftover.unlink(missing_ok=True)

    with (
        as_file(files("fmn_daemon.samples") / "ownership.json") as ownership_file,
        as_file(files("fmn_daemon.samples") / "messages.jsonl") as samples,
        _mail_server(mbox) as smtp_port,
    ):
        config = Config(
            database_url=f"sqlite:///{database}",
            smtp=SmtpConfig(host="127.0.0.1", port=smtp_port, from_address="fmn-demo@localhost"),
            ownership=OwnershipConfig(source=str(ownership_file)),
            http=HttpConfig(enabled=False, secret_key=secrets.token_hex(16)),
        )
        config_file = directory / "fmn.toml"
        config_file.write_text(
            f"# The demo's database; try: fmn-daemon --config {config_file} replay --dry-run FILE\n"
            f"database_url = {json.dumps(config.database_url)}\n",
            encoding="utf-8",
        )
        upgrade(config.database_url)
        db = Database(config)
        try:
            with db.begin() as session:
                refresh_ownership(session, DistGitOwnership(str(ownership_file)))
            set_up_users(db)
            metrics = Metrics()
            replayed = replay(
                db,
                samples,
                io.StringIO(),
                dry_run=False,
                as_json=True,
                progress=False,
                metrics=metrics,
            )
            delivery = Senders(db, config, metrics, LiveHub())
            asyncio.run(delivery.drain(timeout=120.0))
            feeds = _write_feeds(db, directory)
            outcome = _outcome(db)
        finally:
            db.dispose()
    return DemoResult(directory, config_file, mbox, feeds, replayed, outcome, _subjects(mbox))


def render(result: DemoResult, out: IO[str]) -> None:
    """The summary table."""
    stats = result.replayed
    out.write(f"fmn demo: everything below happened on this machine, in {result.directory}\n\n")
    out.write(
        f"Replayed {stats.messages} sample bus messages through the pipeline: "
        f"{stats.matched} matched someone, {stats.notifications} notifications written.\n\n"
    )
    out.write(f"{'USER':<8} {'CONTEXT':<8} {'NOTIFICATIONS':>13} {'SENT':>6} {'OTHER':>6}\n")
    for (user, context), states in sorted(result.outcome.items()):
        total = sum(states.values())
        sent = states.get("sent", 0)
        out.write(f"{user:<8} {context:<8} {total:>13} {sent:>6} {total - sent:>6}\n")
    out.write(f"\nMailbox: {result.mailbox} ({len(result.subjects)} messages)\n")
    for subject in result.subjects[:6]:
        out.write(f"  Subject: {subject}\n")
    if len(result.subjects) > 6:
        out.write(f"  ... and {len(result.subjects) - 6} more\n")
    out.write("Feeds:\n")
    for user, path in sorted(result.feeds.items()):
        out.write(f"  {user}: {path}\n")
    out.write(
        f"\nThe demo's database stays in {result.directory}; look around with\n"
        f"  fmn-daemon --config {result.config_file} outbox\n"
        f"  fmn-daemon --config {result.config_file} prefs export\n"
    )


def run_demo(directory: Path | None, out: IO[str]) -> int:
    """``fmn-daemon demo``: run it, print the summary; 1 if something was not delivered."""
    result = demo(directory)
    render(result, out)
    undelivered = sum(
        n for states in result.outcome.values() for s, n in states.items() if s != "sent"
    )
    if undelivered:
        out.write(f"\n{undelivered} notifications were not delivered; see the log above.\n")
        return 1
    return 0
