"""The preferences file's format version: what export writes, which shapes import reads,
and a newer file refused rather than read as an older one."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from core.conftest import database_at
from fmn_core import preferences as prefs
from fmn_core.db import Database
from fmn_core.errors import ImportRejected, UnsupportedFormatVersion
from fmn_core.models import User
from fmn_core.portability import FORMAT_VERSION, export_preferences, import_preferences
from fmn_core.preferences import Actor

ALICE = Actor("alice")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Database]:
    """A second, empty database to import into."""
    with database_at(f"sqlite:///{tmp_path / 'fresh.sqlite'}") as db:
        yield db


def _filter(name: str, **keys: Any) -> dict[str, Any]:
    return {
        "name": name,
        "active": True,
        "oneshot": False,
        "rules": [{"rule": "app_is", "args": {"app": name}}],
        **keys,
    }


def before_delivery_modes() -> dict[str, Any]:
    """A file as fmn wrote it before delivery modes: no version, a digest of minutes
    and count only, filters without a mode (a context with a digest collected them all)."""
    return {
        "users": [
            {
                "name": "alice",
                "contexts": {
                    "email": {
                        "enabled": True,
                        "destinations": ["alice@example.org"],
                        "digest": {"minutes": 60, "count": 0},
                        "filters": [_filter("koji"), _filter("bodhi")],
                    },
                    "irc": {
                        "enabled": True,
                        "destinations": [],
                        "digest": {"minutes": 0, "count": 0},
                        "filters": [_filter("copr")],
                    },
                    "rss": {
                        "enabled": True,
                        "destinations": [],
                        "digest": {"minutes": 0, "count": 5},
                        "filters": [_filter("pagure")],
                    },
                },
            }
        ]
    }


def modes(db: Database) -> dict[str, list[tuple[str, str]]]:
    """Each context's filters and their delivery, as stored."""
    with db.begin() as session:
        return {
            context: [(f.name, f.delivery) for f in prefs.list_filters(session, ALICE, context)]
            for context in ("email", "irc", "rss")
        }


def test_export_writes_the_format_version(db: Database) -> None:
    with db.begin() as session:
        prefs.add_filter(session, ALICE, "email", "f")
        document = export_preferences(session)
    assert document["version"] == FORMAT_VERSION == 2


def test_a_file_from_before_delivery_modes_keeps_its_digest(fresh: Database) -> None:
    # Read as instant, every filter of a digest context sent each match at once: a
    # user who had asked for an hourly digest got a mail per message.
    with fresh.begin() as session:
        import_preferences(session, before_delivery_modes(), resolve=False)
    assert modes(fresh) == {
        "email": [("koji", "digest"), ("bodhi", "digest")],
        "irc": [("copr", "instant")],
        "rss": [("pagure", "digest")],
    }


def test_a_file_from_before_delivery_modes_round_trips(fresh: Database, tmp_path: Path) -> None:
    with fresh.begin() as session:
        import_preferences(session, before_delivery_modes(), resolve=False)
    with fresh.begin() as session:
        exported = export_preferences(session)
    assert exported["version"] == FORMAT_VERSION
    email = exported["users"][0]["contexts"]["email"]
    assert [f.get("delivery") for f in email["filters"]] == ["digest", "digest"]
    with database_at(f"sqlite:///{tmp_path / 'again.sqlite'}") as again:
        with again.begin() as session:
            import_preferences(session, copy.deepcopy(exported), resolve=False)
        assert modes(again) == modes(fresh)
        with again.begin() as session:
            assert export_preferences(session) == exported


def test_version_1_said_outright_reads_the_same(fresh: Database) -> None:
    document = before_delivery_modes()
    document["version"] = 1
    # A mode a file gives is taken as given, whatever its version.
    document["users"][0]["contexts"]["email"]["filters"][1]["delivery"] = "instant"
    with fresh.begin() as session:
        import_preferences(session, document, resolve=False)
    assert modes(fresh)["email"] == [("koji", "digest"), ("bodhi", "instant")]


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("filter", "urgent", True),
        ("filter", "delivery", "digest"),
        ("filter", "paused_until", "2026-01-01T00:00:00+00:00"),
        ("rule", "expires_at", "2026-01-01T00:00:00+00:00"),
        ("context", "quiet_hours", None),
        ("digest", "timezone", "UTC"),
    ],
)
def test_an_unversioned_file_with_delivery_mode_keys_is_version_2(
    fresh: Database, where: str, key: str, value: Any
) -> None:
    # fmn wrote version 2 without a version key for a while: a missing delivery
    # there means instant, even in a context with a digest.
    document = before_delivery_modes()
    irc = document["users"][0]["contexts"]["irc"]
    target = {
        "filter": irc["filters"][0],
        "rule": irc["filters"][0]["rules"][0],
        "context": irc,
        "digest": irc["digest"],
    }[where]
    target[key] = value
    with fresh.begin() as session:
        import_preferences(session, document, resolve=False)
    assert modes(fresh)["email"] == [("koji", "instant"), ("bodhi", "instant")]


def test_version_2_reads_a_missing_delivery_as_instant(fresh: Database) -> None:
    document = before_delivery_modes()
    document["version"] = 2
    with fresh.begin() as session:
        import_preferences(session, document, resolve=False)
    assert modes(fresh)["email"] == [("koji", "instant"), ("bodhi", "instant")]


def test_a_newer_format_is_refused_naming_both_versions(fresh: Database) -> None:
    document: dict[str, Any] = {
        "version": FORMAT_VERSION + 1,
        # What a newer shape may hold: never reported as unknown keys of this one.
        "users": [{"name": "alice", "profiles": {}, "contexts": {"email": {"lanes": []}}}],
        "signature": "...",
    }
    with pytest.raises(UnsupportedFormatVersion) as caught, fresh.begin() as session:
        import_preferences(session, document, resolve=False)
    error = caught.value
    assert (error.found, error.supported) == (FORMAT_VERSION + 1, FORMAT_VERSION)
    assert isinstance(error, ImportRejected)  # callers that catch that still do
    text = str(error)
    assert text.startswith("Nothing was imported:")
    assert f"version {FORMAT_VERSION + 1}" in text and f"up to {FORMAT_VERSION}" in text
    assert "upgrade fmn" in text
    assert [path for path, _ in error.problems] == ["version"]
    with fresh.begin() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize("version", ["2", 0, -1, 2.0, True, None, [2]])
def test_a_version_that_is_not_a_whole_number_is_refused_by_path(
    fresh: Database, version: Any
) -> None:
    document = {"version": version, "users": []}
    with pytest.raises(ImportRejected) as caught, fresh.begin() as session:
        import_preferences(session, document, resolve=False)
    assert not isinstance(caught.value, UnsupportedFormatVersion)
    (problem,) = caught.value.problems
    assert problem[0] == "version" and "whole number from 1 to" in problem[1]


def test_cli_import_of_a_newer_file_says_to_upgrade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from fmn_daemon.cli import main

    config = tmp_path / "fmn.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path / "cli.sqlite"}"\n', encoding="utf-8")
    assert main(["--config", str(config), "db", "upgrade"]) == 0
    source = tmp_path / "newer.json"
    source.write_text(json.dumps({"version": 99, "users": []}), encoding="utf-8")
    capsys.readouterr()
    assert main(["--config", str(config), "prefs", "import", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fmn-daemon: error: {source}: Nothing was imported: the file is in")
    assert "version 99" in err and f"up to {FORMAT_VERSION}" in err and "upgrade fmn" in err
    assert "invalid entries" not in err and "Traceback" not in err
