"""``fmn-daemon replay``: the dry-run JSON contract over the shared corpus, and real ingest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fmn_core.config import Config
from fmn_core.db import Database
from fmn_core.errors import MalformedMessage
from fmn_core.messages import MessageFacts, facts_of, parse_line
from fmn_core.models import Notification, StoredMessage
from fmn_daemon.cli import main

from .conftest import write_fmn_config


def _filter(name: str, *rules: dict[str, object], oneshot: bool = False) -> dict[str, object]:
    return {"name": name, "active": True, "oneshot": oneshot, "rules": list(rules)}


def _rule(rule: str, negated: bool = False, **args: str) -> dict[str, object]:
    return {"rule": rule, "args": args, "negated": negated}


PREFERENCES = {
    "users": [
        {
            "name": "alice",
            "contexts": {
                "email": {"filters": [_filter("bodhi", _rule("app_is", app="bodhi"))]},
                "rss": {
                    "filters": [
                        _filter(
                            "koji not mine",
                            _rule("app_is", app="koji"),
                            _rule("triggered_by_me", negated=True),
                        )
                    ]
                },
            },
        },
        {
            "name": "bob",
            "contexts": {
                "email": {
                    "filters": [_filter("follow", _rule("user_involved", username="lmacken"))]
                },
            },
        },
        {
            "name": "carol",
            "contexts": {
                "push": {
                    "filters": [
                        _filter("flatpak", _rule("package_involved", package="flatpak")),
                        _filter("anitya", _rule("topic_matches", pattern="*.anitya.*")),
                    ]
                },
            },
        },
        {
            "name": "lmacken",
            "contexts": {
                "live": {
                    "filters": [
                        _filter("mine", _rule("pertains_to_me")),
                        _filter("once", _rule("app_is", app="copr"), oneshot=True),
                    ]
                },
            },
        },
    ]
}

#: The same preferences as plain predicates: (user, context, filter, test), in filter order.
EXPECTED: list[tuple[str, str, str, Callable[[MessageFacts], bool]]] = [
    ("alice", "email", "bodhi", lambda f: f.app_name.lower() == "bodhi"),
    (
        "alice",
        "rss",
        "koji not mine",
        lambda f: f.app_name.lower() == "koji" and f.agent_name != "alice",
    ),
    ("bob", "email", "follow", lambda f: "lmacken" in f.usernames),
    ("carol", "push", "flatpak", lambda f: "flatpak" in f.packages),
    ("carol", "push", "anitya", lambda f: ".anitya." in f.topic),
    ("lmacken", "live", "mine", lambda f: "lmacken" in f.usernames),
    ("lmacken", "live", "once", lambda f: f.app_name.lower() == "copr"),
]


def expected_recipients(facts: MessageFacts) -> list[dict[str, str]]:
    found: dict[tuple[str, str], str] = {}
    for user, context, name, test in EXPECTED:
        if (user, context) not in found and test(facts):
            found[(user, context)] = name
    return [{"user": u, "context": c, "filter": n} for (u, c), n in sorted(found.items())]


@pytest.fixture
def configured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """An fmn config on a fresh SQLite database holding ``PREFERENCES``."""
    config = write_fmn_config(tmp_path / "fmn.toml", f"sqlite:///{tmp_path / 'replay.sqlite'}")
    prefs = tmp_path / "prefs.json"
    prefs.write_text(json.dumps(PREFERENCES), encoding="utf-8")
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    assert main(["--config", str(config), "prefs", "import", str(prefs)]) == 0
    capsys.readouterr()
    return config


def database(config: Path) -> Database:
    url = config.read_text().split("=", 1)[1].strip().strip('"')
    return Database(Config(database_url=url))


def test_replay_dry_run_json_contract_over_the_corpus(
    configured: Path, corpus: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = ["this is not json", json.dumps({"body": {}}), "", json.dumps([1, 2])]
    lines = [*corpus[:150], *bad, *corpus[150:]]
    source = tmp_path / "corpus.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    code = main(["--config", str(configured), "replay", "--dry-run", "--json", str(source)])
    out = capsys.readouterr().out
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]

    expected: list[dict[str, object]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            message = parse_line(line)
        except MalformedMessage:
            expected.append({"line": number})
            continue
        facts = facts_of(message)
        expected.append(
            {"id": facts.id, "topic": facts.topic, "recipients": expected_recipients(facts)}
        )
    assert len(records) == len(expected)
    for got, want in zip(records, expected, strict=True):
        if "line" in want:
            assert set(got) == {"line", "error"}
            assert got["line"] == want["line"] and got["error"]
        else:
            assert got == want
    # The preferences matter: every user is reached by something in the corpus.
    reached = {r["user"] for rec in records for r in rec.get("recipients", [])}
    assert reached == {"alice", "bob", "carol", "lmacken"}
    assert [r["line"] for r in records if "line" in r] == [151, 152, 154]
    # A dry run writes nothing.
    db = database(configured)
    try:
        with db.begin() as session:
            assert session.scalar(select(func.count()).select_from(StoredMessage)) == 0
    finally:
        db.dispose()


def test_replay_dry_run_human_table(
    configured: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.resources import files

    samples = Path(str(files("fmn_daemon.samples") / "messages.jsonl"))
    code = main(["--config", str(configured), "replay", "--dry-run", str(samples)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].split() == ["LINE", "MESSAGE", "TOPIC", "RECIPIENTS"]
    assert "bob/email (follow)" in out
    assert out.splitlines()[-1].startswith(f"{len(samples.read_text().splitlines())} messages,")


def test_replay_ingests_through_the_pipeline_once(
    configured: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.resources import files

    samples = Path(str(files("fmn_daemon.samples") / "messages.jsonl"))
    argv = [
        "--config",
        str(configured),
        "replay",
        "--json",
        "--progress",
        "--batch-size",
        "7",
        str(samples),
    ]

    assert main(argv) == 0
    captured = capsys.readouterr()
    first = [json.loads(line) for line in captured.out.splitlines()]
    assert "replaying [" in captured.err and "58/58 lines" in captured.err
    written = sum(len(r["recipients"]) for r in first)
    copr = [r for r in first if any(x["filter"] == "once" for x in r["recipients"])]
    assert len(copr) == 1  # the one-shot filter fired once, then switched itself off

    db = database(configured)
    try:
        with db.begin() as session:
            assert session.scalar(select(func.count()).select_from(Notification)) == written
            assert session.scalar(select(func.count()).select_from(StoredMessage)) == len(first)
        # Replaying again stores nothing twice.
        assert main(argv) == 0
        again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert all(r.get("duplicate") is True and r["recipients"] == [] for r in again)
        with db.begin() as session:
            assert session.scalar(select(func.count()).select_from(Notification)) == written
    finally:
        db.dispose()
