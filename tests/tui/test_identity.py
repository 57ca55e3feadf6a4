"""``fmn-tui`` start-up checks the login against the account directory (FASJSON)."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest
from fasjson_server import FasjsonServer, running_fasjson

from fmn_tui import cli

ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def fasjson() -> Iterator[FasjsonServer]:
    with running_fasjson() as server:
        yield server


def _config(tmp_path: Path, server: FasjsonServer) -> Path:
    path = tmp_path / "fmn.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path / "fmn.sqlite"}"\nadmin_group = "fmn-admins"\n'
        f'[accounts]\nprovider = "fasjson"\nfasjson_url = "{server.url}"\n'
        'fasjson_auth = "none"\ncache_seconds = 0\n'
    )
    return path


def test_cli_login_unknown_to_the_directory_is_refused(
    tmp_path: Path, fasjson: FasjsonServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--config", str(_config(tmp_path, fasjson))]) == 2
    error = capsys.readouterr().err
    assert f"no Fedora account named {ME!r}" in error and "Traceback" not in error


def test_cli_admins_come_from_the_admin_group(tmp_path: Path, fasjson: FasjsonServer) -> None:
    """Only a member of ``admin_group`` may open another account with ``--user``."""
    fasjson.add_user(ME)
    fasjson.add_user("bob")
    config = _config(tmp_path, fasjson)
    as_bob = ["--config", str(config), "--user", "bob"]
    with pytest.raises(cli.SetupError, match="only fmn administrators may use --user"):
        cli._start(cli._parser().parse_args(as_bob))
    fasjson.set_groups("fmn-admins", [ME])
    account, database = cli._start(cli._parser().parse_args(as_bob))
    try:
        assert (account.info.actor, account.info.account) == (ME, "bob")
        assert not account.is_own
    finally:
        account.close()
        if database is not None:
            database.dispose()
