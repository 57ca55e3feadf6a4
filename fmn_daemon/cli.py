"""``fmn-daemon``: run the daemon, and the operator's tools around it.

Errors are rendered here and only here: a ``ConfigError`` or ``UserError`` is
one line on stderr and exit status 2; anything else is a bug, logged with its
traceback, shown as "internal error" and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from fmn_core import extras
from fmn_core.config import Config, load_config
from fmn_core.db import Database
from fmn_core.errors import (
    ConfigError,
    FmnError,
    ImportRejected,
    MissingExtra,
    UnsupportedFormatVersion,
    UserError,
    report_internal_error,
)
from fmn_core.text import one_line

__all__ = ["build_parser", "main"]

log = logging.getLogger("fmn_daemon")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class SchemaMissing(UserError):
    """The database has no fmn schema, an older one, or one a newer fmn made."""


class RevisionRefused(UserError):
    """``db downgrade`` was given a revision it cannot take the schema back to."""


class DatabaseUnavailable(FmnError):
    """The database server ``database_url`` names did not let fmn in.

    Exit 1, not 2: a server that is down or still starting may answer the next
    try, and systemd tries again (the units' ``RestartPreventExitStatus=2``).
    """


class DatabaseUnopenable(UserError):
    """The SQLite file ``database_url`` names can't be opened: a setting to fix (exit 2)."""


#: The largest row id a database column holds (a signed 64-bit integer).
MAX_ROW_ID = 2**63 - 1


def _whole_number(low: int, high: int) -> Any:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, not {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="fmn-daemon",
        description="Fedora Messaging Notifications: the daemon and its tools.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="fmn's TOML configuration (default: $FMN_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("FMN_LOG_LEVEL"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much to log on stderr (default: INFO for run, else WARNING)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    db = commands.add_parser("db", help="the database schema")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_commands.add_parser("upgrade", help="create or migrate the schema to the newest version")
    downgrade = db_commands.add_parser(
        "downgrade",
        help="take the schema back to an older revision, for an older fmn (what the later "
        "revisions added is dropped)",
    )
    downgrade.add_argument("revision", help="the revision the older fmn needs (it names it)")

    prefs = commands.add_parser("prefs", help="export or import every user's preferences")
    prefs_commands = prefs.add_subparsers(dest="prefs_command", metavar="ACTION", required=True)
    export = prefs_commands.add_parser("export", help="write preferences as JSON")
    export.add_argument("file", nargs="?", help="where to write (default: stdout)")
    import_ = prefs_commands.add_parser(
        "import", help="load preferences from JSON (all or nothing per file)"
    )
    import_.add_argument(
        "files",
        nargs="+",
        metavar="file",
        help="JSON files ('-' for stdin); each is imported whole or not at all, on its own",
    )
    import_.add_argument(
        "--no-resolve",
        action="store_true",
        help="don't resolve push hosts while checking them (offline imports)",
    )

    replay = commands.add_parser("replay", help="run a file of bus messages through fmn")
    replay.add_argument("file", help="one serialized fedora-messaging message per line")
    replay.add_argument("--dry-run", action="store_true", help="only report who would be notified")
    replay.add_argument("--json", action="store_true", help="one JSON object per line")
    replay.add_argument(
        "--progress", action="store_true", help="draw a progress bar even if stderr is no terminal"
    )
    replay.add_argument(
        "--batch-size",
        type=_whole_number(1, 10_000),
        metavar="N",
        help="messages per transaction (as ingest.batch_size, at most 10000)",
    )

    run = commands.add_parser("run", help="run the daemon (consumer, senders, HTTP)")
    run.add_argument(
        "--fedora-messaging-config",
        metavar="PATH",
        help="fedora-messaging's TOML (default: $FEDORA_MESSAGING_CONF, "
        "else /etc/fedora-messaging/config.toml)",
    )
    run.add_argument("--no-consume", action="store_true", help="don't consume the bus")
    run.add_argument("--no-deliver", action="store_true", help="don't send notifications")
    run.add_argument("--no-http", action="store_true", help="don't serve HTTP")
    run.add_argument(
        "--startup-timeout", type=_seconds, default=30.0, metavar="SECONDS", help="(default: 30)"
    )

    gateway = commands.add_parser(
        "gateway",
        help="serve users' preference requests on a Unix socket (fmn-tui --gateway)",
    )
    gateway.add_argument(
        "--socket",
        metavar="PATH",
        default="/run/fmn/gateway.sock",
        help="where to listen (default: /run/fmn/gateway.sock)",
    )

    demo = commands.add_parser("demo", help="a self-contained tour: sample users and messages")
    demo.add_argument("--dir", metavar="PATH", help="where to put the demo's files")

    explain = commands.add_parser(
        "explain", help="why a user got (or did not get) a message, context by context"
    )
    explain.add_argument("user", metavar="USER", help="the Fedora account")
    explain.add_argument(
        "message", metavar="MESSAGE_ID", help="a stored message's id, or a datagrepper link"
    )
    explain.add_argument("--json", action="store_true", help="print one JSON object")

    outbox = commands.add_parser("outbox", help="notifications that could not be delivered")
    outbox.add_argument(
        "--json",
        action="store_true",
        help="every notification not sent, one JSON object a line, with why it waits",
    )
    outbox_commands = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    listing = outbox_commands.add_parser("list", help="list dead notifications (the default)")
    listing.add_argument("--limit", type=_whole_number(1, 1_000_000), default=100)
    listing.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="every notification not sent, one JSON object a line, with why it waits",
    )
    requeue = outbox_commands.add_parser("requeue", help="make dead notifications pending again")
    requeue.add_argument("ids", nargs="*", type=_whole_number(1, MAX_ROW_ID), metavar="ID")
    requeue.add_argument("--all", action="store_true", help="every dead notification")

    messages = commands.add_parser(
        "messages", help="bus messages put aside after failing again and again"
    )
    messages_commands = messages.add_subparsers(
        dest="messages_command", metavar="ACTION", required=True
    )
    dead = messages_commands.add_parser("dead", help="list dead messages, newest first")
    dead.add_argument("--limit", type=_whole_number(1, 1_000_000), default=100)
    dead.add_argument("--json", action="store_true", help="one JSON object per line")
    revive = messages_commands.add_parser(
        "requeue", help="run a dead message through the pipeline again"
    )
    revive.add_argument("id", type=_whole_number(1, MAX_ROW_ID), metavar="ID")

    prune = commands.add_parser(
        "prune",
        help="delete now what is past retention.days: sent and given-up notifications, "
        "bus messages nothing waits on, dead messages",
    )
    prune.add_argument(
        "--days", type=int, metavar="N", help="what is older than N days (default: retention.days)"
    )
    prune.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    prune.add_argument(
        "--progress", action="store_true", help="draw a progress bar even if stderr is no terminal"
    )

    ownership = commands.add_parser("ownership", help="package ownership from dist-git")
    ownership_commands = ownership.add_subparsers(
        dest="ownership_command", metavar="ACTION", required=True
    )
    refresh = ownership_commands.add_parser("refresh", help="load ownership.source now")
    refresh.add_argument("--source", help="a URL or file instead of ownership.source")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pika logs every failed connection attempt at ERROR, with tracebacks; the
    # consumer logs one line per attempt itself, with the cause.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # Alembic narrates every script lookup at INFO.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``fmn-daemon`` entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    noisy = args.command in ("run", "gateway")
    _configure_logging(args.log_level or ("INFO" if noisy else "WARNING"))
    try:
        return _dispatch(args)
    except ImportRejected as exc:
        print(
            f"fmn-daemon: error: nothing was imported: {len(exc.problems)} invalid entries:",
            file=sys.stderr,
        )
        for path, why in exc.problems:
            print(f"  {path}: {why}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, UserError, MissingExtra) as exc:
        print(f"fmn-daemon: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FmnError as exc:
        print(f"fmn-daemon: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("fmn-daemon: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``); nothing left to say.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception:
        notice = report_internal_error(log, f"running fmn-daemon {args.command}")
        print(f"fmn-daemon: {notice}", file=sys.stderr)
        return EXIT_FAILURE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        # Before anything is created: aiosmtpd (the 'demo' extra) is the demo's mail server.
        extras.require("demo", program="fmn-daemon demo")
        from .demo import run_demo

        return run_demo(Path(args.dir) if args.dir else None, sys.stdout)
    config = load_config(args.config)
    if args.command == "db":
        if args.db_command == "downgrade":
            return _db_downgrade(config, args.revision)
        return _db_upgrade(config)
    if args.command == "run":
        return _run(config, args)
    if args.command == "prefs":
        return _prefs(config, args)
    if args.command == "gateway":
        return _gateway(config, args)
    if args.command == "replay":
        return _replay(config, args)
    if args.command == "outbox":
        return _outbox(config, args)
    if args.command == "explain":
        return _explain(config, args)
    if args.command == "messages":
        return _messages(config, args)
    if args.command == "ownership":
        return _ownership(config, args)
    if args.command == "prune":
        return _prune(config, args)
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


def _masked(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _reach(config: Config, db: Database | None = None) -> None:
    """Connect once: a database that can't be reached or opened is one sentence
    naming ``database_url``, not a traceback."""
    from sqlalchemy.exc import DBAPIError

    from fmn_core.db import driver_said

    database = db if db is not None else Database(config)
    try:
        with database.engine.connect():
            pass
    except DBAPIError as exc:
        problem = (
            DatabaseUnopenable if database.engine.dialect.name == "sqlite" else DatabaseUnavailable
        )
        raise problem(
            f"Cannot use the database {_masked(config.database_url)} (database_url): "
            f"{driver_said(exc)}. Check database_url, and that the database runs and "
            "lets fmn in."
        ) from None
    finally:
        if db is None:
            database.dispose()


def _db_upgrade(config: Config) -> int:
    from fmn_core.schema import upgrade

    _reach(config)
    revision = upgrade(config.database_url)
    print(f"{_masked(config.database_url)} is at schema {revision}")
    return EXIT_OK


def _db_downgrade(config: Config, revision: str) -> int:
    from fmn_core.schema import current_revision, downgrade, knows_revision

    if not knows_revision(revision, config.database_url):
        raise RevisionRefused(
            f"This fmn has no schema revision {revision!r}; give the one the older fmn names "
            "when it refuses to start."
        )
    db = Database(config)
    try:
        _reach(config, db)
        current = current_revision(db.engine)
    finally:
        db.dispose()
    if current is None:
        raise SchemaMissing(f"The database {_masked(config.database_url)} has no fmn schema.")
    if not knows_revision(current, config.database_url):
        raise SchemaMissing(
            f"The database {_masked(config.database_url)} is at schema {current}, which this "
            "fmn does not know; take it back with the fmn that upgraded it."
        )
    from alembic.util import CommandError

    try:
        now = downgrade(config.database_url, revision)
    except CommandError as exc:  # a revision after the current one, say
        raise RevisionRefused(
            f"The schema cannot be taken back from {current} to {revision}: {exc}."
        ) from None
    print(f"{_masked(config.database_url)} is at schema {now}")
    return EXIT_OK


def _open(config: Config) -> Database:
    """The database, its schema checked; an empty embedded SQLite file is set up on the spot."""
    from fmn_core.schema import current_revision, schema_problem, upgrade

    db = Database(config)
    try:
        _reach(config, db)
    except (DatabaseUnavailable, DatabaseUnopenable):
        db.dispose()
        raise
    if current_revision(db.engine) is None and db.engine.dialect.name == "sqlite":
        log.info("setting up the fmn schema in %s", _masked(config.database_url))
        upgrade(config.database_url)
        return db
    problem = schema_problem(db.engine)
    if problem is not None:
        db.dispose()
        raise SchemaMissing(f"The database {_masked(config.database_url)} {problem}.")
    return db


@contextlib.contextmanager
def _opened(config: Config) -> Iterator[Database]:
    """The database for one command (see :func:`_open`), disposed of when it is done."""
    db = _open(config)
    try:
        yield db
    finally:
        db.dispose()


#: The interpreter's thread switch interval for the daemon (Python's default: 5 ms).
THREAD_SWITCH_SECONDS = 0.001


def _run(config: Config, args: argparse.Namespace) -> int:
    from .service import Service

    # The daemon's threads (consumer, writer, send slots, database work) mostly
    # wait for sockets and hold the interpreter lock briefly; one coming back from
    # a reply waited up to the switch interval for whichever thread held the lock,
    # once per round trip: a claim's or a send's several round trips added up
    # to tens of milliseconds per mail at 500 mails/s.
    sys.setswitchinterval(THREAD_SWITCH_SECONDS)

    service = Service(
        config,
        args.fedora_messaging_config,
        consume=not args.no_consume,
        deliver=not args.no_deliver,
        serve_http=False if args.no_http else None,
        startup_timeout=args.startup_timeout,
    )
    return asyncio.run(service.serve())


def _gateway(config: Config, args: argparse.Namespace) -> int:
    from fmn_core.accounts import account_directory
    from fmn_core.gateway_serving import PreferenceGateway

    from .gateway import directory_resolver, serve_gateway

    with _opened(config) as db:
        # Callers are known by uid; their login must be an account the directory knows.
        resolve = directory_resolver(account_directory(config))
        return serve_gateway(PreferenceGateway(db), args.socket, resolve)


def _prefs(config: Config, args: argparse.Namespace) -> int:
    from fmn_core.portability import export_preferences

    with _opened(config) as db:
        if args.prefs_command == "export":
            with db.begin() as session:
                document = export_preferences(session)
            text = json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
            if args.file and args.file != "-":
                try:
                    _write_private(args.file, text)
                except OSError as exc:
                    raise UnwritableFile(f"Cannot write {args.file}: {exc.strerror}.") from None
                print(
                    f"exported {len(document.get('users', []))} users to {args.file}",
                    file=sys.stderr,
                )
            else:
                sys.stdout.write(text)
            return EXIT_OK
        return _import_files(db, args.files, resolve=not args.no_resolve)


def _import_files(db: Database, names: Sequence[str], *, resolve: bool) -> int:
    """Import each file in its own unit of work: a bad file costs only itself."""
    from fmn_core.portability import import_preferences, parse_preferences

    failed = 0
    for name in names:
        label = "stdin" if name == "-" else name
        try:
            data = parse_preferences(_read_bounded(name))
            with db.begin() as session:
                summary = import_preferences(session, data, resolve=resolve)
        except UnsupportedFormatVersion as exc:
            # One sentence, not an entry list: the file is a newer fmn's, not wrong.
            failed += 1
            print(f"fmn-daemon: error: {label}: {exc}", file=sys.stderr)
            continue
        except ImportRejected as exc:
            failed += 1
            print(
                f"fmn-daemon: error: {label}: nothing was imported: {len(exc.problems)} "
                "invalid entries:",
                file=sys.stderr,
            )
            for path, why in exc.problems:
                print(f"  {path}: {why}", file=sys.stderr)
            continue
        except UserError as exc:
            failed += 1
            print(f"fmn-daemon: error: {label}: {exc}", file=sys.stderr)
            continue
        except Exception as exc:
            # A bug, not the file's fault; the other files still get their turn.
            failed += 1
            reference = f"{type(exc).__name__}-{os.getpid()}"
            log.exception("internal error importing %s (reference %s)", label, reference)
            print(
                f"fmn-daemon: {label}: internal error (reference {reference}); nothing of "
                "this file was imported",
                file=sys.stderr,
            )
            continue
        print(
            f"{label}: imported {summary.users} users: {summary.contexts} contexts, "
            f"{summary.filters} filters, {summary.rules} rules, "
            f"{summary.destinations} destinations"
        )
    if failed and len(names) > 1:
        print(f"fmn-daemon: {failed} of {len(names)} files were not imported", file=sys.stderr)
    return EXIT_USAGE if failed else EXIT_OK


class UnreadableFile(UserError):
    """A file named on the command line can't be read or parsed."""


class UnwritableFile(UserError):
    """A file named on the command line can't be written."""


def _write_private(name: str, text: str) -> None:
    """Write an export readable by its owner only: it holds every user's addresses
    and their feed tokens, and whoever holds a token reads that user's feed."""
    descriptor = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "w", encoding="utf-8") as file:
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            # A file that was already there keeps its mode unless told otherwise.
            os.fchmod(descriptor, 0o600)
        file.write(text)


def _read_bounded(name: str) -> bytes:
    """A preferences file's bytes, reading one byte past the import bound at most:
    a huge file is refused by ``parse_preferences`` without being loaded whole."""
    from fmn_core.portability import MAX_IMPORT_BYTES

    try:
        if name == "-":
            return sys.stdin.buffer.read(MAX_IMPORT_BYTES + 1)
        with Path(name).open("rb") as file:
            return file.read(MAX_IMPORT_BYTES + 1)
    except OSError as exc:
        raise UnreadableFile(f"Cannot read {name}: {exc.strerror}.") from exc


def _replay(config: Config, args: argparse.Namespace) -> int:
    from .replay import replay

    if not Path(args.file).is_file():
        raise UnreadableFile(f"Cannot read {args.file}: no such file.")
    with _opened(config) as db:
        stats = replay(
            db,
            args.file,
            sys.stdout,
            dry_run=args.dry_run,
            as_json=args.json,
            progress=True if args.progress else None,
            batch_size=args.batch_size,
        )
    if not args.json:
        written = (
            ""
            if args.dry_run
            else (
                f", {stats.notifications} notifications written, {stats.duplicates} already stored"
            )
        )
        print(
            f"{stats.messages} messages, {stats.matched} matched, {stats.recipients} recipients, "
            f"{stats.errors} unreadable lines{written}"
        )
    return EXIT_OK


class NothingToPrune(UserError):
    """``prune`` was given no window it can prune by (none configured, or out of range)."""


def _prune(config: Config, args: argparse.Namespace) -> int:
    from fmn_core.config import MAX_RETENTION_DAYS
    from fmn_core.db import READ_ONLY
    from fmn_core.retention import Pruning, cutoff_for, prunable

    from .progress import Progress

    days = args.days if args.days is not None else config.retention.days
    if args.days is None and days == 0:
        raise NothingToPrune(
            "retention.days is 0: fmn keeps everything. Give --days N to prune what is "
            "older than N days once, or set retention.days."
        )
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise NothingToPrune(f"--days must be from 1 to {MAX_RETENTION_DAYS}, not {days}.")
    cutoff = cutoff_for(days)
    older = f"older than {days} days (before {cutoff:%Y-%m-%d %H:%M} UTC)"
    counted_for = config.confirmation.counted_for
    show = args.progress or sys.stderr.isatty()
    with _opened(config) as db:
        bar: Progress | None = None
        if args.dry_run or show:
            with db.begin() as session:
                # Counting only reads: on SQLite, no write lock held meanwhile.
                session.connection(execution_options={READ_ONLY: True})
                found = prunable(session, cutoff, codes_counted_for=counted_for)
            if args.dry_run:
                print(f"would prune {found.describe()} {older}")
                return EXIT_OK
            if found:
                bar = Progress(found.total, sys.stderr, "pruning", "rows")
        pruning = Pruning(cutoff, config.retention.batch_rows, codes_counted_for=counted_for)
        try:
            while True:
                with db.begin() as session:
                    if not pruning.step(session):
                        break
                if bar is not None:
                    bar.update(pruning.done.total)
        except KeyboardInterrupt:
            if bar is not None:
                bar.close(pruning.done.total)
            print(f"interrupted: pruned {pruning.done.describe()} {older}")
            raise
        if bar is not None:
            bar.close(pruning.done.total)
    print(f"pruned {pruning.done.describe()} {older}")
    return EXIT_OK


def _explain(config: Config, args: argparse.Namespace) -> int:
    # The operator's tool: whoever can open the database may explain any account.
    import json

    from fmn_core.explain import explain
    from fmn_core.preferences import Actor
    from fmn_core.wording import explanation_lines

    db = _open(config)
    try:
        with db.begin() as session:
            found = explain(session, Actor(args.user, is_admin=True), args.message)
    finally:
        db.dispose()
    if args.json:
        print(json.dumps(found.as_json(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(explanation_lines(found)))
    return EXIT_OK


def _outbox(config: Config, args: argparse.Namespace) -> int:
    from fmn_core.outbox import list_dead, requeue_dead
    from fmn_core.waiting import list_waiting

    from .dead_messages import count_dead_messages

    with _opened(config) as db:
        if args.outbox_command == "requeue":
            if not args.ids and not args.all:
                raise UnreadableFile("Name the notifications to requeue (IDS), or pass --all.")
            with db.begin() as session:
                if not args.all:
                    _check_dead(session, args.ids)
                count = requeue_dead(session, None if args.all else args.ids)
            print(f"requeued {count} dead notifications")
            return EXIT_OK
        if args.json:
            # ``--json`` lists every row not sent (held, retrying, being sent, dead), so
            # that an operator sees why each waits and until when.
            with db.begin() as session:
                waiting = list_waiting(session, limit=max(getattr(args, "limit", 0), 10_000))
            for row in waiting:
                print(json.dumps(row.as_json(), ensure_ascii=False))
            return EXIT_OK
        with db.begin() as session:
            dead = list_dead(session, getattr(args, "limit", 100))
            dead_messages = count_dead_messages(session)
        _print_dead(dead, sys.stdout)
        if dead_messages:
            print(
                f"{dead_messages} dead bus messages were put aside before any notification "
                "(see fmn-daemon messages dead)"
            )
        return EXIT_OK


def _check_dead(session: Any, ids: Sequence[int]) -> None:
    """Refuse, before anything changes, ids that are no dead notification."""
    from sqlalchemy import select

    from fmn_core.errors import NotFound
    from fmn_core.models import Notification, NotificationState

    dead = set(
        session.scalars(
            select(Notification.id).where(
                Notification.id.in_(set(ids)),
                Notification.state == NotificationState.DEAD.value,
            )
        )
    )
    missing = sorted(set(ids) - dead)
    if missing:
        shown = ", ".join(str(i) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise NotFound(
            f"No dead notification {shown} (fmn-daemon outbox lists them); nothing was requeued."
        )


def _messages(config: Config, args: argparse.Namespace) -> int:
    from .dead_messages import list_dead_messages, requeue_dead_message

    with _opened(config) as db:
        if args.messages_command == "requeue":
            outcome = requeue_dead_message(db, args.id)
            if not outcome.stored:
                print(
                    f"fmn-daemon: error: dead message {args.id} ({outcome.message_id}) failed "
                    f"again and stays dead: {one_line(outcome.reason, limit=300)}",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            print(
                f"dead message {args.id} ({outcome.message_id}) stored again; "
                f"{outcome.notifications} notifications written"
            )
            return EXIT_OK
        with db.begin() as session:
            rows = list_dead_messages(session, args.limit)
    if args.json:
        for row in rows:
            print(json.dumps(row.as_json(), ensure_ascii=False))
        return EXIT_OK
    if not rows:
        print("no dead messages")
        return EXIT_OK
    print(f"{'ID':>8}  {'TRIES':>5}  {'RECEIVED':<19}  {'MESSAGE':<36}  {'TOPIC':<40}  REASON")
    for row in rows:
        cut = " (cut copy)" if row.truncated else ""
        print(
            f"{row.id:>8}  {row.attempts:>5}  {row.received_at:%Y-%m-%d %H:%M:%S}  "
            f"{row.message_id[:36]:<36}  {row.topic[:40]:<40}  "
            f"{one_line(row.reason, limit=100)}{cut}"
        )
    return EXIT_OK


def _print_dead(rows: Sequence[Any], out: IO[str]) -> None:
    if not rows:
        out.write("no dead notifications\n")
        return
    out.write(f"{'ID':>8}  {'USER':<20} {'CONTEXT':<8} {'TRIES':>5}  {'CREATED':<20} LAST ERROR\n")
    for row in rows:
        error = (row.last_error or "").splitlines()[0][:80] if row.last_error else ""
        out.write(
            f"{row.id:>8}  {row.user[:20]:<20} {row.context:<8} {row.attempts:>5}  "
            f"{row.created_at:%Y-%m-%d %H:%M:%S}  {error}\n"
        )


def _ownership(config: Config, args: argparse.Namespace) -> int:
    from fmn_core.ownership import DistGitOwnership, refresh_ownership

    source = args.source or config.ownership.source
    if not source:
        raise ConfigError("ownership.source", "is empty; set it or pass --source")
    with _opened(config) as db, db.begin() as session:
        changed = refresh_ownership(session, DistGitOwnership(source))
    print(f"ownership refreshed from {source}: {changed} rows changed")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
