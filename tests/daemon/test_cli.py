"""``fmn-daemon`` as an operator uses it: schema, preferences, outbox, ownership, errors."""

from __future__ import annotations

import contextlib
import json
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from fmn_core.config import Config, IngestConfig
from fmn_core.db import Database
from fmn_core.models import Notification, NotificationState, PackageOwner, StoredMessage, User
from fmn_core.schema import current_revision, head_revision
from fmn_daemon.cli import main
from fmn_daemon.dead_messages import bury, delivery_line, requeue_dead_message

from .conftest import write_fmn_config

PREFERENCES = {
    "version": 2,
    "users": [
        {
            "name": "alice",
            "contexts": {
                "email": {
                    "enabled": True,
                    "destinations": ["alice@example.org"],
                    "digest": {"minutes": 0, "count": 0},
                    "filters": [
                        {
                            "name": "my builds",
                            "active": True,
                            "oneshot": False,
                            "rules": [
                                {"rule": "app_is", "args": {"app": "koji"}},
                                {"rule": "triggered_by_me", "args": {}, "negated": True},
                            ],
                        }
                    ],
                },
                "rss": {
                    "enabled": False,
                    "destinations": [],
                    "digest": {"minutes": 60, "count": 5},
                    "filters": [
                        {
                            "name": "flatpak",
                            "active": False,
                            "oneshot": True,
                            "rules": [{"rule": "package_involved", "args": {"package": "flatpak"}}],
                        }
                    ],
                },
            },
        },
        {
            "name": "bob",
            "contexts": {
                "email": {
                    "enabled": True,
                    "destinations": ["bob@example.org"],
                    "digest": {"minutes": 0, "count": 0},
                    "filters": [
                        {
                            "name": "follow lmacken",
                            "active": True,
                            "oneshot": False,
                            "rules": [{"rule": "user_involved", "args": {"username": "lmacken"}}],
                        }
                    ],
                }
            },
        },
    ],
}


def sqlite_config(tmp_path: Path, extra: str = "") -> Path:
    return write_fmn_config(tmp_path / "fmn.toml", f"sqlite:///{tmp_path / 'cli.sqlite'}", extra)


@contextlib.contextmanager
def cli_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[Path, Database]]:
    """The configuration of a SQLite database ``db upgrade`` made, and the database."""
    config = sqlite_config(tmp_path)
    assert run(capsys, "--config", str(config), "db", "upgrade")[0] == 0
    db = Database(Config(database_url=f"sqlite:///{tmp_path / 'cli.sqlite'}"))
    try:
        yield config, db
    finally:
        db.dispose()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_cli_db_upgrade_creates_schema_at_head(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'up.sqlite'}"
    else:
        url = request.getfixturevalue("empty_postgres_url")
    config = write_fmn_config(tmp_path / "fmn.toml", url)

    code, out, err = run(capsys, "--config", str(config), "db", "upgrade")
    assert code == 0, err
    head = head_revision(url)
    assert head in out
    db = Database(Config(database_url=url))
    try:
        assert current_revision(db.engine) == head
        tables = set(inspect(db.engine).get_table_names())
        assert {"users", "messages", "notifications", "filters", "package_owners"} <= tables
    finally:
        db.dispose()
    # Running it again is harmless.
    assert run(capsys, "--config", str(config), "db", "upgrade")[0] == 0


def test_cli_db_downgrade_takes_the_schema_back_for_an_older_fmn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sqlite_config(tmp_path)
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    assert run(capsys, "--config", str(config), "db", "upgrade")[0] == 0
    head = head_revision(url)
    code, out, err = run(capsys, "--config", str(config), "db", "downgrade", "0010")
    assert code == 0, err
    assert "is at schema 0010" in out
    db = Database(Config(database_url=url))
    try:
        assert current_revision(db.engine) == "0010"
        # Refused, each with what to give instead; the schema stays where it is.
        code, _, err = run(capsys, "--config", str(config), "db", "downgrade", "nope")
        assert code == 2 and "no schema revision 'nope'" in err
        code, _, err = run(capsys, "--config", str(config), "db", "downgrade", head)
        assert code == 2 and f"cannot be taken back from 0010 to {head}" in err
        assert current_revision(db.engine) == "0010"
        assert run(capsys, "--config", str(config), "db", "upgrade")[0] == 0
        assert current_revision(db.engine) == head
        # A schema a newer fmn made is that fmn's to take back.
        with db.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9001'"))
        code, _, err = run(capsys, "--config", str(config), "db", "downgrade", "0010")
        assert code == 2 and "is at schema 9001, which this fmn does not know" in err
        assert current_revision(db.engine) == "9001"
    finally:
        db.dispose()


def imported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The configuration of a new SQLite database into which ``PREFERENCES`` was imported."""
    config = sqlite_config(tmp_path)
    assert run(capsys, "--config", str(config), "db", "upgrade")[0] == 0
    source = tmp_path / "prefs.json"
    source.write_text(json.dumps(PREFERENCES), encoding="utf-8")
    code, out, err = run(capsys, "--config", str(config), "prefs", "import", str(source))
    assert code == 0, err
    assert "imported 2 users" in out
    return config


def test_cli_prefs_import_export_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = imported(tmp_path, capsys)

    exported = tmp_path / "export.json"
    code, _, err = run(capsys, "--config", str(config), "prefs", "export", str(exported))
    assert code == 0, err
    assert json.loads(exported.read_text()) == PREFERENCES

    # Through stdout, and a second import of the export changes nothing.
    code, _, _ = run(capsys, "--config", str(config), "prefs", "import", str(exported))
    assert code == 0
    code, out, _ = run(capsys, "--config", str(config), "prefs", "export")
    assert code == 0
    assert json.loads(out) == PREFERENCES


def test_cli_prefs_export_file_is_readable_by_its_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export holds every address and feed token; other local users must not read it."""
    config = imported(tmp_path, capsys)
    fresh, existing = tmp_path / "fresh.json", tmp_path / "existing.json"
    existing.write_text("", encoding="utf-8")
    existing.chmod(0o644)
    for target in (fresh, existing):
        code, _, err = run(capsys, "--config", str(config), "prefs", "export", str(target))
        assert code == 0, err
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert json.loads(target.read_text()) == PREFERENCES


def test_cli_prefs_import_rejects_and_lists_every_invalid_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sqlite_config(tmp_path)
    bad = {
        "users": [
            {
                "name": "alice",
                "contexts": {
                    "email": {
                        "filters": [{"name": "x", "rules": [{"rule": "no_such_rule", "args": {}}]}]
                    },
                    "pager": {},
                },
            },
            {"name": "bob", "contexts": {"email": {"destinations": ["not an address"]}}},
        ]
    }
    source = tmp_path / "bad.json"
    source.write_text(json.dumps(bad), encoding="utf-8")

    code, _, err = run(capsys, "--config", str(config), "prefs", "import", str(source))

    assert code == 2
    assert "Traceback" not in err
    assert "users[0].contexts.email.filters[0].rules[0]" in err
    assert "users[0].contexts.pager" in err
    assert "users[1].contexts.email.destinations[0]" in err
    db = Database(Config(database_url=f"sqlite:///{tmp_path / 'cli.sqlite'}"))
    try:
        with db.begin() as session:
            assert session.scalars(select(User)).all() == []
    finally:
        db.dispose()


def test_cli_prefs_import_several_files_one_bad_file_costs_only_itself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sqlite_config(tmp_path)
    assert run(capsys, "--config", str(config), "db", "upgrade")[0] == 0
    good = tmp_path / "good.json"
    good.write_text(json.dumps(PREFERENCES), encoding="utf-8")
    nested = tmp_path / "nested.json"
    nested.write_text('{"users": ' + "[" * 10_000 + "]" * 10_000 + "}", encoding="utf-8")
    nan = tmp_path / "nan.json"
    nan.write_text(
        '{"users": [{"name": "carol", "contexts": {"email": {"digest": {"minutes": NaN}}}}]}',
        encoding="utf-8",
    )
    carol = {"users": [{"name": "carol", "contexts": {"email": {"enabled": False}}}]}
    later = tmp_path / "later.json"
    later.write_text(json.dumps(carol), encoding="utf-8")

    code, out, err = run(
        capsys,
        "--config",
        str(config),
        "prefs",
        "import",
        str(nested),
        str(good),
        str(nan),
        str(tmp_path / "nope.json"),
        str(later),
    )

    assert code == 2
    assert "Traceback" not in err and "internal error" not in err
    assert f"{nested}: nothing was imported: 1 invalid entries:" in err
    assert "(file): the file nests arrays and objects 10001 levels deep; at most 32" in err
    assert f"{nan}: nothing was imported" in err and "NaN is not a number" in err
    assert "Cannot read" in err and "3 of 5 files were not imported" in err
    assert f"{good}: imported 2 users" in out and f"{later}: imported 1 users" in out
    code, exported, _ = run(capsys, "--config", str(config), "prefs", "export")
    names = [u["name"] for u in json.loads(exported)["users"]]
    assert names == ["alice", "bob", "carol"]


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("nonsense = 1\n", "nonsense"),
        ("[delivery]\nbatch_size = 'many'\n", "delivery.batch_size"),
        ("[smtp]\nsecurity = 'tls'\n", "smtp.security"),
        ("database_url = [\n", "(file)"),
    ],
)
def test_cli_bad_config_is_one_clear_line_and_exit_2(
    content: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content, encoding="utf-8")
    code, _, err = run(capsys, "--config", str(config), "replay", "--dry-run", str(config))
    assert code == 2
    assert err.count("\n") == 1
    assert f"configuration key {key!r}" in err
    assert "Traceback" not in err


def test_cli_config_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sqlite_config(tmp_path, "nonsense = 2\n")
    monkeypatch.setenv("FMN_CONFIG", str(config))
    code, _, err = run(capsys, "db", "upgrade")
    assert code == 2
    assert "'nonsense'" in err


def test_cli_missing_config_file_and_missing_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--config", str(tmp_path / "nope.toml"), "db", "upgrade")
    assert code == 2 and "cannot read" in err
    config = sqlite_config(tmp_path)
    code, _, err = run(capsys, "--config", str(config), "replay", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such file" in err
    code, _, err = run(
        capsys, "--config", str(config), "prefs", "import", str(tmp_path / "nope.json")
    )
    assert code == 2 and "Cannot read" in err


@pytest.mark.postgres
def test_cli_refuses_a_database_without_schema(
    empty_postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_fmn_config(tmp_path / "fmn.toml", empty_postgres_url)
    lines = tmp_path / "m.jsonl"
    lines.write_text("", encoding="utf-8")
    code, _, err = run(capsys, "--config", str(config), "replay", "--dry-run", str(lines))
    assert code == 2
    assert "fmn-daemon db upgrade" in err


def test_cli_outbox_lists_and_requeues_dead_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with cli_database(tmp_path, capsys) as (config, db):
        with db.begin() as session:
            user = User(name="dora")
            session.add_all([user, StoredMessage(id="m-1", topic="t", body={}, headers={})])
            session.flush()
            for context in ("email", "push"):
                session.add(
                    Notification(
                        message_id="m-1",
                        user_id=user.id,
                        context=context,
                        filter_name="f",
                        state=NotificationState.DEAD.value,
                        attempts=8,
                        last_error="SMTP said no",
                    )
                )
        code, out, _ = run(capsys, "--config", str(config), "outbox")
        assert code == 0
        assert out.count("dora") == 2 and "SMTP said no" in out
        with db.begin() as session:
            first = min(session.scalars(select(Notification.id)))
        code, out, _ = run(capsys, "--config", str(config), "outbox", "requeue", str(first))
        assert (code, out.strip()) == (0, "requeued 1 dead notifications")
        code, _, err = run(capsys, "--config", str(config), "outbox", "requeue")
        assert code == 2 and "--all" in err
        code, out, _ = run(capsys, "--config", str(config), "outbox", "requeue", "--all")
        assert (code, out.strip()) == (0, "requeued 1 dead notifications")
        with db.begin() as session:
            states = session.scalars(select(Notification.state)).all()
        assert states == ["pending", "pending"]
        assert "no dead notifications" in run(capsys, "--config", str(config), "outbox", "list")[1]


def test_cli_ownership_refresh_from_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.resources import files

    source = files("fmn_daemon.samples") / "ownership.json"
    config = sqlite_config(tmp_path, f"[ownership]\nsource = {json.dumps(str(source))}\n")
    assert run(capsys, "--config", str(config), "db", "upgrade")[0] == 0
    code, out, err = run(capsys, "--config", str(config), "ownership", "refresh")
    assert code == 0, err
    assert "rows changed" in out
    db = Database(Config(database_url=f"sqlite:///{tmp_path / 'cli.sqlite'}"))
    try:
        with db.begin() as session:
            owners = set(
                session.scalars(select(PackageOwner.owner).where(PackageOwner.package == "flatpak"))
            )
    finally:
        db.dispose()
    assert owners == {"alice", "@flatpak-sig"}
    # Without a source configured: a clear error.
    config = sqlite_config(tmp_path)
    code, _, err = run(capsys, "--config", str(config), "ownership", "refresh")
    assert code == 2 and "ownership.source" in err


def test_cli_entry_point_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "fmn-daemon"
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    for command in ("db", "prefs", "replay", "run", "demo", "outbox", "ownership"):
        assert command in done.stdout
    done = subprocess.run(
        [str(script), "frobnicate"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


@pytest.mark.slow
def test_cli_demo_delivers_the_samples_by_mail_and_feed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import mailbox

    import feedparser

    code = main(["demo", "--dir", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert code == 0, out
    box = mailbox.mbox(str(tmp_path / "demo" / "mailbox.mbox"))
    try:
        recipients = Counter(m["To"] for m in box)
    finally:
        box.close()
    assert set(recipients) == {"alice@example.org", "bob@example.org"}
    for user in ("alice", "carol"):
        feed = feedparser.parse((tmp_path / "demo" / "feeds" / f"{user}.atom").read_bytes())
        assert feed.entries, user
    lines = {tuple(line.split()[:2]) for line in out.splitlines()}
    assert {("alice", "email"), ("alice", "rss"), ("bob", "email"), ("carol", "rss")} <= lines
    assert f"({sum(recipients.values())} messages)" in out
    # The demo's database answers the operator's commands.
    assert main(["--config", str(tmp_path / "demo" / "fmn.toml"), "outbox"]) == 0
    assert "no dead notifications" in capsys.readouterr().out


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "argv", [("outbox",), ("db", "upgrade"), ("db", "downgrade", "0001"), ("prune", "--dry-run")]
)
def test_cli_unreachable_database_is_one_clear_line(
    argv: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Exit 2 (a setting to fix, not retried by systemd) for a file that can't be one;
    # exit 1 (worth retrying) for a server that does not answer.
    urls = [
        (f"sqlite:///{tmp_path}", 2),  # a directory where the database file should be
        (f"postgresql+psycopg://fmn@127.0.0.1:{_free_port()}/fmn", 1),  # nobody listens
    ]
    for url, status in urls:
        config = write_fmn_config(tmp_path / "fmn.toml", url)
        code, _, err = run(capsys, "--config", str(config), *argv)
        assert code == status, err
        assert err.count("\n") == 1 and "(database_url)" in err
        assert "internal error" not in err and "Traceback" not in err


def test_cli_prefs_export_to_an_unwritable_path_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sqlite_config(tmp_path)
    for target, why in ((tmp_path, "Is a directory"), (tmp_path / "no" / "x.json", "No such")):
        code, _, err = run(capsys, "--config", str(config), "prefs", "export", str(target))
        assert code == 2
        assert f"Cannot write {target}: {why}" in err and "internal error" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ("outbox", "list", "--limit", "-1"),
        ("messages", "dead", "--limit", "0"),
        ("outbox", "requeue", "99999999999999999999"),
        ("messages", "requeue", "99999999999999999999"),
        ("run", "--startup-timeout", "nan"),
        ("run", "--startup-timeout", "-1"),
        ("replay", "messages.jsonl", "--batch-size", "0"),
        ("replay", "messages.jsonl", "--batch-size", "100000000"),
    ],
)
def test_cli_out_of_range_numbers_are_refused_before_anything_runs(
    argv: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = sqlite_config(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["--config", str(config), *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err and "Traceback" not in err


def test_cli_outbox_requeue_of_unknown_ids_says_so_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with cli_database(tmp_path, capsys) as (config, db):
        with db.begin() as session:
            user = User(name="dora")
            session.add_all([user, StoredMessage(id="m-1", topic="t", body={}, headers={})])
            session.flush()
            row = Notification(
                message_id="m-1",
                user_id=user.id,
                context="email",
                filter_name="f",
                state=NotificationState.DEAD.value,
                attempts=8,
            )
            session.add(row)
            session.flush()
            dead_id = row.id
        code, out, err = run(
            capsys, "--config", str(config), "outbox", "requeue", str(dead_id), "999"
        )
        assert code == 2 and out == ""
        assert "No dead notification 999" in err and "nothing was requeued" in err
        with db.begin() as session:
            assert session.scalars(select(Notification.state)).all() == ["dead"]


def test_cli_messages_requeue_repeated_never_runs_a_newer_dead_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Requeuing the newest dead message freed its id on SQLite; the next dead message
    took it, and repeating the command from the same listing ran that one instead."""

    def dead(session: Session, message_id: str) -> int:
        topic = "org.fedoraproject.test.koji.build.done"
        return bury(
            session,
            message_id=message_id,
            topic=topic,
            reason="OperationalError: the disk was full",
            attempts=3,
            raw=delivery_line(message_id, topic, {}, b'{"n": 1}'),
            limits=IngestConfig(),
        )

    with cli_database(tmp_path, capsys) as (config, db):
        with db.begin() as session:
            dead(session, "m-old")
            newest = dead(session, "m-new")
        code, out, err = run(capsys, "--config", str(config), "messages", "requeue", str(newest))
        assert code == 0 and "(m-new) stored again" in out, err
        with db.begin() as session:
            later = dead(session, "m-later")
        assert later != newest
        code, out, err = run(capsys, "--config", str(config), "messages", "requeue", str(newest))
        assert code == 2 and f"there is no dead message {newest}" in err
        with db.begin() as session:
            assert session.get(StoredMessage, "m-later") is None


def test_dead_message_ids_are_never_reused_in_the_models_schema(db: Database) -> None:
    """The schema the models create (tests, ``create_all``) spends ids as 0013 does."""

    def dead(message_id: str) -> int:
        with db.begin() as session:
            return bury(
                session,
                message_id=message_id,
                topic="t",
                reason="r",
                attempts=3,
                raw=b'{"id": "%s", "topic": "t", "body": {}}' % message_id.encode(),
                limits=IngestConfig(),
            )

    dead("m-old")
    newest = dead("m-new")
    assert requeue_dead_message(db, newest).stored
    assert dead("m-later") > newest
