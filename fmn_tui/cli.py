"""``fmn-tui``: start the TUI as the account running it.

Who you are is the process's user id (the ssh login under ``ForceCommand``),
never an environment variable: ``USER`` and ``LOGNAME`` are whatever the caller
set, and it must be an account the account directory knows.

Two ways to reach the preferences, one code path behind them (see
:mod:`fmn_tui.account`):

- ``--gateway PATH``: a shared host. The process reads no configuration and opens
  no database; ``fmn-daemon gateway`` (fmn's service account) serves the account
  the kernel says is calling, and nobody is an administrator there.
- without it (the laptop default, or an administrator working as fmn's service
  account): the configuration is read and the same gateway runs in-process. Only
  an administrator (``admins`` in the configuration; ``--admin NAME`` names which
  one when the process runs as the service account) may edit another account with
  ``--user``.

The schema, in-process: on SQLite, an empty database gets fmn's schema on first
start (the laptop default must just work); anything else — PostgreSQL, or a schema
at an older revision — is the operator's job, and ``fmn-tui`` says to run
``fmn-daemon db upgrade`` and exits with status 2. A schema that a newer fmn made is
not one this fmn can upgrade: it says to use that fmn instead.

Logs never go to a shared place: internal errors of the TUI itself are appended
to ``~/.local/state/fmn/log/tui.log`` of the account's own home (from the password
database, not ``$HOME``), created 0600 and never through a symbolic link; the
gateway's own errors go to its journal.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import pwd
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from fmn_core import schema
from fmn_core.accounts import account_directory, account_of_login, check_account_name, is_admin
from fmn_core.config import load_config
from fmn_core.db import Database, driver_said, is_sqlite
from fmn_core.errors import (
    AccountDirectoryUnavailable,
    ConfigError,
    GatewayUnavailable,
    InvalidArgument,
    UserError,
)
from fmn_core.gateway import DEFAULT_SOCKET
from fmn_core.preferences import Actor
from fmn_core.rules import default_catalog
from fmn_core.text import one_line

from .account import Account
from .app import FmnApp

__all__ = ["SetupError", "login_name", "main", "prepare_schema", "private_log_path"]

log = logging.getLogger("fmn_tui")

#: Exit status for a problem found before the TUI starts (bad option, configuration, schema).
EXIT_SETUP = 2

UPGRADE_HINT = "run `fmn-daemon db upgrade` (as the fmn operator), then start fmn-tui again"


class SetupError(Exception):
    """Something to fix before the TUI can start; the message says what."""


def login_name() -> str:
    """The name of the account running this process (from its user id, not the environment)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        # Some containers run uids with no passwd entry. $USER would name someone,
        # but whoever starts the process sets it: no name is better than a claimed one.
        raise SetupError(
            f"User id {uid} has no account name (no passwd entry), and fmn-tui knows you "
            "only by that name; run it as an account the system knows."
        ) from None


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
        "--gateway",
        metavar="SOCKET",
        nargs="?",
        const=DEFAULT_SOCKET,
        help="talk to fmn-daemon gateway on this socket instead of opening the database "
        f"(a shared host; without a value: {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--admin",
        metavar="NAME",
        help="act as this fmn administrator (only where the database is at hand, "
        "i.e. as fmn's service account)",
    )
    parser.add_argument(
        "--user",
        metavar="NAME",
        help="edit this account instead of your own (fmn administrators only)",
    )
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help="where internal errors are logged (default: ~/.local/state/fmn/log/tui.log)",
    )
    return parser


def private_log_path() -> Path:
    """The account's own TUI log, under its home from the password database (not ``$HOME``)."""
    try:
        home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        home = Path.home()
    return home / ".local" / "state" / "fmn" / "log" / "tui.log"


class _PrivateLogHandler(logging.FileHandler):
    """A log file created 0600 and never opened through a link somebody else planted."""

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
        return open(os.open(self.baseFilename, flags, 0o600), "a", encoding="utf-8")


def _setup_logging(path: str | None) -> logging.Handler:
    target = Path(path) if path else private_log_path()
    handler: logging.Handler
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = _PrivateLogHandler(target)
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
    problem = schema.usable_schema_problem(engine, UPGRADE_HINT)
    if problem is None:
        return
    if not problem.missing:
        raise SetupError(f"fmn's database {problem}.")
    # Only an empty SQLite file is the laptop default's to fill; other tables may be
    # somebody else's.
    if not is_sqlite(engine) or inspect(engine).get_table_names():
        raise SetupError(f"fmn's database has no schema yet: {UPGRADE_HINT}.")
    revision = schema.upgrade(str(engine.url.render_as_string(hide_password=False)))
    log.info("created fmn's schema (revision %s) in a new SQLite database", revision)


def _start(args: argparse.Namespace) -> tuple[Account, Database | None]:
    if args.gateway is not None:
        if args.user is not None or args.admin is not None:
            raise SetupError(
                "--user and --admin work only where fmn's database is at hand (as fmn's "
                "service account); through the gateway everyone edits their own account."
            )
        return Account.connect(args.gateway), None
    config = load_config(args.config)
    directory = account_directory(config)
    if args.admin is not None:
        # Run as fmn's service account by an administrator's forced command: the
        # login is the service account, the name given must be an administrator.
        name = check_account_name(args.admin)
        if not is_admin(config, directory, name):
            raise SetupError(
                f"{one_line(args.admin, limit=40)!r} is not an fmn administrator "
                "(admins or admin_group in fmn's configuration)."
            )
    else:
        # The login must be a Fedora account the directory knows (any valid name locally).
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
        return Account.in_process(database, actor, user), database
    except BaseException:
        database.dispose()
        raise


def _plain_terminal() -> None:
    # A terminal that can't draw colours (TERM=dumb or unset) gets Textual's
    # monochrome mode instead of a 24-bit screen it would show as garbage.
    if os.environ.get("TERM", "dumb") in ("", "dumb"):
        os.environ["NO_COLOR"] = "1"


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
        account, database = _start(args)
    except (SetupError, ConfigError, InvalidArgument, AccountDirectoryUnavailable) as error:
        print(f"fmn-tui: {error}", file=sys.stderr)
        return EXIT_SETUP
    except GatewayUnavailable as error:
        print(f"fmn-tui: {error}; tell the fmn operators.", file=sys.stderr)
        return EXIT_SETUP
    except UserError as error:  # the gateway refused this account
        print(f"fmn-tui: {error}", file=sys.stderr)
        return EXIT_SETUP
    except SQLAlchemyError as error:
        log.exception("cannot use the database")
        print(
            f"fmn-tui: fmn's database refused this account: {driver_said(error)}. "
            "On a shared host fmn-tui must run with --gateway (see fmn_tui/README.md); "
            "otherwise tell the fmn operators.",
            file=sys.stderr,
        )
        return EXIT_SETUP
    try:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            # ``ssh host`` with a command, or ``ssh -T``: there is no screen to draw on.
            print("fmn-tui: needs a terminal; connect with `ssh -t`.", file=sys.stderr)
            return EXIT_SETUP
        _plain_terminal()
        app = FmnApp(account, default_catalog())
        app.run()
    finally:
        account.close()
        if database is not None:
            database.dispose()
    return app.return_code or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
