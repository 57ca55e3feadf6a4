"""``fmn-tui`` start-up: who you are, --user for admins only, the configuration, the schema."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from fmn_core import schema
from fmn_core.config import Config
from fmn_core.db import Database, make_engine
from fmn_tui import cli

ME = pwd.getpwuid(os.getuid()).pw_name


def write_config(tmp_path: Path, body: str = "") -> Path:
    path = tmp_path / "fmn.toml"
    path.write_text(f'database_url = "sqlite:///{tmp_path / "fmn.sqlite"}"\n{body}')
    return path


def test_cli_login_name_comes_from_the_user_id_not_the_environment(monkeypatch):
    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("LOGNAME", "mallory")
    assert cli.login_name() == ME


def test_cli_a_user_id_without_a_name_is_refused_not_taken_from_the_environment(
    tmp_path, capsys, monkeypatch
):
    def no_entry(uid: int) -> None:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("LOGNAME", "mallory")
    assert cli.main(["--config", str(write_config(tmp_path))]) == 2
    error = capsys.readouterr().err
    assert f"User id {os.getuid()} has no account name" in error
    assert "mallory" not in error and "Traceback" not in error


def test_cli_user_option_is_for_admins_only(tmp_path, capsys):
    config = write_config(tmp_path)
    assert cli.main(["--config", str(config), "--user", "bob"]) == 2
    error = capsys.readouterr().err
    assert "only fmn administrators may use --user" in error and "Traceback" not in error


def test_cli_admin_may_edit_another_account(tmp_path):
    config = write_config(tmp_path, f'admins = ["{ME}"]\n')
    parser = cli._parser()
    account, database = cli._start(parser.parse_args(["--config", str(config), "--user", "bob"]))
    try:
        assert (account.info.actor, account.name) == (ME, "bob")
        assert not account.is_own
    finally:
        account.close()
        assert database is not None
        database.dispose()


def test_cli_bad_configuration_names_the_key(tmp_path, capsys):
    config = write_config(tmp_path, "colour = true\n")
    assert cli.main(["--config", str(config)]) == 2
    assert "'colour'" in capsys.readouterr().err


def test_cli_creates_the_schema_in_a_new_sqlite_database(tmp_path):
    database = Database(Config(database_url=f"sqlite:///{tmp_path / 'new' / 'fmn.sqlite'}"))
    try:
        cli.prepare_schema(database)
        assert schema.schema_problem(database.engine) is None
        assert "filters" in inspect(database.engine).get_table_names()
        cli.prepare_schema(database)  # the second start finds it in place
    finally:
        database.dispose()


def test_cli_outdated_schema_asks_for_an_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    schema.upgrade(url, "0010")
    database = Database(Config(database_url=url), make_engine(url))
    try:
        with pytest.raises(cli.SetupError, match="fmn-daemon db upgrade") as raised:
            cli.prepare_schema(database)
        assert "then start fmn-tui again" in str(raised.value)
        # A schema this fmn does not know was made by a newer one: no upgrade to ask for.
        schema.upgrade(url)
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9001'"))
        with pytest.raises(cli.SetupError, match="newer fmn") as raised:
            cli.prepare_schema(database)
        assert "db upgrade" not in str(raised.value)
    finally:
        database.dispose()


@pytest.mark.postgres
def test_cli_postgres_without_schema_asks_for_an_upgrade(empty_postgres_url):
    # An empty database of its own: creating PostgreSQL schemas is the operator's job.
    database = Database(Config(database_url=empty_postgres_url))
    try:
        with pytest.raises(cli.SetupError, match="has no schema yet"):
            cli.prepare_schema(database)
        assert inspect(database.engine).get_table_names() == []
    finally:
        database.dispose()


def test_cli_without_a_terminal_says_so(tmp_path, capsys):
    # pytest's stdin is not a terminal, like `ssh host fmn-tui` without -t.
    assert cli.main(["--config", str(write_config(tmp_path))]) == 2
    assert "needs a terminal" in capsys.readouterr().err


def test_cli_log_is_private_and_never_follows_a_link(tmp_path, capsys):
    log = tmp_path / "tui.log"
    config = write_config(tmp_path)
    assert cli.main(["--config", str(config), "--log-file", str(log)]) == 2
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # Somebody swaps the log for a link to a file of their choosing: nothing is written there.
    log.unlink()
    target = tmp_path / "chosen"
    target.write_text("")
    log.symlink_to(target)
    assert cli.main(["--config", str(config), "--log-file", str(log)]) == 2
    assert target.read_text() == ""


def test_cli_default_log_is_in_the_accounts_own_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert cli.private_log_path() == home / ".local/state/fmn/log/tui.log"


def test_cli_database_refusal_names_the_real_cause(tmp_path, capsys):
    # A database that can't be opened (here a directory; on a shared host, a file
    # the user may not write): the message quotes SQLite, not "try again later".
    (tmp_path / "fmn.sqlite").mkdir()
    config = write_config(tmp_path)
    assert cli.main(["--config", str(config), "--log-file", str(tmp_path / "x.log")]) == 2
    error = capsys.readouterr().err
    assert "unable to open database file" in error and "--gateway" in error
    assert "try again later" not in error


def test_cli_database_problem_quotes_the_driver():
    from sqlalchemy.exc import OperationalError

    from fmn_core.db import driver_said

    error = OperationalError("INSERT …", {}, Exception("attempt to write a readonly database"))
    assert driver_said(error) == "attempt to write a readonly database"
    assert driver_said(RuntimeError("first\nsecond")) == "first"


def test_cli_gateway_mode_reads_no_configuration_and_takes_no_user(tmp_path, capsys):
    assert cli.main(["--gateway", str(tmp_path / "gw.sock"), "--user", "bob"]) == 2
    assert "through the gateway everyone edits their own account" in capsys.readouterr().err
    assert cli.main(["--gateway", str(tmp_path / "gw.sock"), "--config", "/nonexistent"]) == 2
    error = capsys.readouterr().err
    assert "preference service is not running" in error and "/nonexistent" not in error


def test_cli_admin_name_must_be_an_administrator(tmp_path, capsys):
    config = write_config(tmp_path, 'admins = ["carol"]\n')
    assert cli.main(["--config", str(config), "--admin", "mallory", "--user", "bob"]) == 2
    assert "'mallory' is not an fmn administrator" in capsys.readouterr().err
    account, database = cli._start(
        cli._parser().parse_args(["--config", str(config), "--admin", "carol", "--user", "bob"])
    )
    try:
        assert (account.info.actor, account.name, account.is_own) == ("carol", "bob", False)
    finally:
        account.close()
        assert database is not None
        database.dispose()


@pytest.mark.parametrize(("term", "monochrome"), [("dumb", True), ("", True), ("xterm", False)])
def test_cli_dumb_terminal_gets_the_monochrome_mode(monkeypatch, term, monochrome):
    # Set, then removed: monkeypatch then restores whatever was there before the test.
    monkeypatch.setenv("NO_COLOR", "")
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", term)
    cli._plain_terminal()
    assert ("NO_COLOR" in os.environ) is monochrome
