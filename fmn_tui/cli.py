"""``fmn-tui``: start the TUI as the account running it.

Who you are is the process's user id (the ssh login under ``ForceCommand``),
never an environment variable: ``USER`` and ``LOGNAME`` are whatever the caller
set, and it must be an account the account directory knows. Only an
administrator (``admins`` or ``admin_group`` in the configuration) may edit
another account with ``--user``.

The schema: on SQLite, an empty database gets fmn's schema on first start (the
laptop default must just work); anything else — PostgreSQL, or a schema at an
older revision — is the operator's job, and ``fmn-tui`` says to run
``fmn-daemon db upgrade`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import pwd
import sys
from collections.abc import Sequence
from pathlib import Path

import platformdirs
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from fmn_core import schema
from fmn_core.accounts import account_directory, account_of_login, check_account_name, is_admin
from fmn_core.config import Config, load_config
from fmn_core.db import Database, is_sqlite
from fmn_core.errors import AccountDirectoryUnavailable, ConfigError, UserError
from fmn_core.preferences import Actor
from fmn_core.rules import default_catalog

from .account import Account
from .app import FmnApp

__all__ = ["SetupError", "login_name", "main", "prepare_schema"]

log = logging.getLogger("fmn_tui")

#: Exit status for a problem found before the TUI starts (bad option, configuration, schema).
EXIT_SETUP = 2

UPGRADE_HINT = "run `fmn-daemon db upgrade` (as the fmn operator), then start fmn-tui again"


class SetupError(Exception):
    """Something to fix before the TUI can start; the message says what."""


def login_name() -> str:
    """The name of the account running this process (from its user id, not the environment)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return getpass.getuser()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmn-tui",
        description="Manage your fmn notifications: contexts, filters, rules, destinations.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="fmn's configuration file (default: $FMN_CONFIG, else the built-in defaults)",
    )
    parser.add_argument(
        "--user",
        metavar="NAME",
        help="edit this account instead of your own (fmn administrators only)",
    )
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help="where internal errors are logged (default: tui.log in your fmn log directory)",
    )
    return parser


def _setup_logging(path: str | None) -> logging.Handler:
    target = Path(path) if path else platformdirs.user_log_path("fmn") / "tui.log"
    handler: logging.Handler
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, encoding="utf-8")
    except OSError:
        # Never write to the terminal: it belongs to the TUI.
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def prepare_schema(database: Database) -> None:
    """Make sure fmn's tables exist: create them on an empty SQLite file, else explain.

    Raises :class:`SetupError` when the operator has to act first.
    """
    engine = database.engine
    tables = set(inspect(engine).get_table_names())
    if "users" in tables:
        # Tables without Alembic's bookkeeping were made by ``create_all`` (tests,
        # development); an Alembic database must be at the newest revision.
        if "alembic_version" in tables and not schema.is_current(engine):
            raise SetupError(f"fmn's database schema is out of date: {UPGRADE_HINT}.")
        return
    if not is_sqlite(engine) or tables:
        raise SetupError(f"fmn's database has no schema yet: {UPGRADE_HINT}.")
    revision = schema.upgrade(str(engine.url.render_as_string(hide_password=False)))
    log.info("created fmn's schema (revision %s) in a new SQLite database", revision)


def _start(args: argparse.Namespace) -> tuple[Config, Account]:
    config = load_config(args.config)
    # The login must be a Fedora account the directory knows (any valid name locally).
    directory = account_directory(config)
    name = account_of_login(directory, login_name())
    actor = Actor(name, is_admin=is_admin(config, directory, name))
    user: str | None = None
    if args.user is not None and args.user != name:
        if not actor.is_admin:
            raise SetupError(
                "only fmn administrators may use --user; run fmn-tui without it to edit "
                f"your own account ({name})."
            )
        user = check_account_name(args.user)
    database = Database(config)
    try:
        prepare_schema(database)
    except BaseException:
        database.dispose()
        raise
    return config, Account(database, actor, user)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fmn-tui``; the exit status (2 when it cannot start)."""
    args = _parser().parse_args(argv)
    handler = _setup_logging(args.log_file)
    try:
        return _run(args)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run(args: argparse.Namespace) -> int:
    try:
        config, account = _start(args)
    except (SetupError, ConfigError, UserError, AccountDirectoryUnavailable) as error:
        print(f"fmn-tui: {error}", file=sys.stderr)
        return EXIT_SETUP
    except SQLAlchemyError as error:
        log.exception("cannot reach the database")
        print(
            f"fmn-tui: cannot reach fmn's database ({error.__class__.__name__}); "
            "try again later, or tell the fmn operators.",
            file=sys.stderr,
        )
        return EXIT_SETUP
    try:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            # ``ssh host`` with a command, or ``ssh -T``: there is no screen to draw on.
            print("fmn-tui: needs a terminal; connect with `ssh -t`.", file=sys.stderr)
            return EXIT_SETUP
        app = FmnApp(account, config, default_catalog())
        app.run()
    finally:
        account.database.dispose()
    return app.return_code or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
