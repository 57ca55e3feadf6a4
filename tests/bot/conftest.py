"""The bot's test environment: Limnoria's registry in a temporary directory.

Limnoria reads its registry when its modules are first imported, so this runs at
import time, before any test module imports ``supybot.test`` or ``fmn_bot``;
it does what ``supybot-test`` does for a plugin's own ``test.py``.
"""

from __future__ import annotations

import atexit
import gc
import shutil
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="fmn-bot-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)
for _name in ("conf", "data", "logs", "backup"):
    (_ROOT / _name).mkdir()
_REGISTRY = _ROOT / "conf" / "test.conf"
_REGISTRY.write_text(
    f"""
supybot.directories.backup: {_ROOT / "backup"}
supybot.directories.conf: {_ROOT / "conf"}
supybot.directories.data: {_ROOT / "data"}
supybot.directories.log: {_ROOT / "logs"}
supybot.reply.whenNotCommand: True
supybot.log.stdout: False
supybot.log.stdout.level: ERROR
supybot.log.level: DEBUG
supybot.log.format: %(levelname)s %(message)s
supybot.log.plugins.individualLogfiles: False
supybot.protocols.irc.throttleTime: 0
supybot.reply.whenAddressedBy.chars: @
supybot.networks.test.server: should.not.need.this
supybot.nick: test
supybot.abuse.flood.command.invalid: False
supybot.abuse.flood.command: False
""",
    encoding="utf-8",
)

import builtins  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402

# Importing Limnoria changes three things for the whole process: the builtin
# format() (supybot/__init__.py), the class of every logger created afterwards
# (supybot/log.py, whose loggers format with that format()) and the default
# socket timeout (supybot/conf.py). The rest of the suite runs in this process
# too, so all three are put back below; Limnoria's format() is swapped in only
# while a bot test runs.
_PYTHON_FORMAT = builtins.format
_PYTHON_LOGGER_CLASS = logging.getLoggerClass()
_PYTHON_SOCKET_TIMEOUT = socket.getdefaulttimeout()

import supybot.registry as _registry  # noqa: E402 - the registry must be open first

_registry.open_registry(str(_REGISTRY))

import supybot.conf as _conf  # noqa: E402
import supybot.log as _log  # noqa: E402
import supybot.world as _world  # noqa: E402

_conf.allowEval = False
_conf.supybot.flush.setValue(False)
_log.testing = True
_world.testing = True
_world.myVerbose = 0  # supybot.test reads it; supybot-test sets it from -v

# --------------------------------------------------------------------- fixtures
# (after the registry: these imports pull in Limnoria-independent code only)
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
import supybot.test  # noqa: E402, F401 - registers the test plugin and its harness

_LIMNORIA_FORMAT = builtins.format
builtins.format = _PYTHON_FORMAT
socket.setdefaulttimeout(_PYTHON_SOCKET_TIMEOUT)


class _Logger(_PYTHON_LOGGER_CLASS):  # type: ignore[misc, valid-type]
    """Loggers made from now on: Limnoria's formatting for Limnoria's, Python's for the rest."""

    def _log(self, level: int, msg: object, args: object, *rest: object, **kwargs: object) -> None:
        if (self.name == "supybot" or self.name.startswith("supybot.")) and isinstance(args, tuple):
            msg, args = _LIMNORIA_FORMAT(msg, *args), ()
        super()._log(level, msg, args, *rest, **kwargs)


logging.setLoggerClass(_Logger)
from sqlalchemy import delete  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from fmn_core import schema  # noqa: E402
from fmn_core.db import make_engine  # noqa: E402
from fmn_core.models import Base  # noqa: E402


@pytest.fixture(autouse=True)
def _limnoria_format() -> Iterator[None]:
    """Limnoria's format() while a bot test runs (see the top of this module)."""
    builtins.format = _LIMNORIA_FORMAT
    try:
        yield
    finally:
        builtins.format = _PYTHON_FORMAT


@pytest.fixture(autouse=True)
def _fmn_bot_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Give a bot test case (``fmn_backend`` set) a fresh database and a config file.

    Limnoria test cases are unittest classes, so they can't take fixtures as
    arguments: this puts ``fmn_database_url`` and ``fmn_tmp`` on the instance.
    SQLite is a file in ``tmp_path``, made by ``create_all`` or, when the case sets
    ``fmn_revision``, by Alembic up to that revision; PostgreSQL is the session's database,
    emptied after each test (the bot opens its own connections, so the
    rolled-back outer transaction of ``tests/conftest.py`` can't be used here).
    """
    instance = request.instance
    backend = getattr(instance, "fmn_backend", None)
    if backend is None:
        yield
        return
    engine: Engine
    if backend == "postgres":
        engine = request.getfixturevalue("postgres_engine")
        url = engine.url.render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
        engine = make_engine(url)
        revision = getattr(instance, "fmn_revision", None)
        if revision is None:
            Base.metadata.create_all(engine)
        else:
            schema.upgrade(url, revision)
    instance.fmn_database_url = url
    instance.fmn_tmp = tmp_path
    try:
        yield
    finally:
        if backend == "postgres":
            with engine.begin() as connection:
                for table in reversed(Base.metadata.sorted_tables):
                    connection.execute(delete(table))
        else:
            engine.dispose()


# ------------------------------------------------------------------ test cases

import datetime as dt  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterable, Mapping  # noqa: E402

import supybot.conf as conf  # noqa: E402
import supybot.ircmsgs as ircmsgs  # noqa: E402
import supybot.ircutils as ircutils  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402
from supybot import test as supytest  # noqa: E402

import fmn_bot  # noqa: E402, F401 - registers supybot.plugins.Fmn
from fmn_bot.delivery import RoundReport  # noqa: E402
from fmn_core import preferences  # noqa: E402
from fmn_core.config import Config  # noqa: E402
from fmn_core.db import Database  # noqa: E402
from fmn_core.models import Notification, StoredMessage, User, utcnow  # noqa: E402

#: A koschei message body whose schema gives a summary and a link.
KOSCHEI_TOPIC = "org.fedoraproject.prod.koschei.package.state.change"


def koschei_body(package: str) -> dict[str, object]:
    """``<package>'s builds are back to normal in f25``."""
    return {
        "collection": "f25",
        "collection_name": "Fedora Rawhide",
        "groups": ["c"],
        "koji_instance": "primary",
        "name": package,
        "new": "ok",
        "old": "failed",
        "repo": "f25",
    }


class FmnCase(supytest.ChannelPluginTestCase):  # type: ignore[misc]
    """A channel with the Fmn plugin loaded, on a fresh fmn database.

    Messages from the test user carry the IRCv3 ``account`` tag of ``account``
    (None: no tag, an unidentified user); :meth:`as_user` switches users.
    """

    plugins = ("Fmn",)
    fmn_backend = "sqlite"
    #: Whether the plugin's own delivery thread runs (tests drive rounds by hand).
    fmn_deliver = False
    #: Extra TOML for fmn's configuration file.
    fmn_toml = ""
    #: ``bot.identity``: most tests are about commands, so the services account is
    #: the Fedora account; tests/bot/test_identity.py maps through a directory.
    fmn_identity = "services-account"
    #: The Alembic revision of the SQLite database (None: ``create_all``'s tables).
    fmn_revision: str | None = None
    account: str | None = "alice"
    fmn_database_url: str
    fmn_tmp: Path

    def runTest(self) -> None:
        """pytest makes a dummy instance with this name; Limnoria's ``__init__`` looks it up."""

    def setUp(self) -> None:
        gc.freeze()  # see the end of this module
        path = self.fmn_tmp / "fmn.toml"
        extra = self.fmn_toml
        identity = f'identity = "{self.fmn_identity}"\n'
        # TOML allows one [bot] table: add the setting to the test's own if it has one.
        extra = (
            extra.replace("[bot]\n", "[bot]\n" + identity, 1)
            if "[bot]\n" in extra
            else f"{extra}\n[bot]\n{identity}"
        )
        path.write_text(f'database_url = "{self.fmn_database_url}"\n{extra}', encoding="utf-8")
        conf.supybot.plugins.Fmn.configFile.setValue(str(path))
        conf.supybot.plugins.Fmn.deliver.setValue(self.fmn_deliver)
        conf.supybot.plugins.Fmn.staticAccounts.setValue([])
        conf.supybot.plugins.Fmn.network.setValue("")
        super().setUp()
        self.plugin = self.irc.getCallback("Fmn")
        # The end of the MOTD: the connection is registered, delivery may use it.
        self.irc.feedMsg(
            ircmsgs.IrcMsg(prefix="irc.example.org", command="376", args=(self.nick, "End"))
        )
        while self.irc.takeMsg() is not None:
            pass

    def _feedMsg(
        self,
        query: str,
        timeout: float | None = None,
        to: str | None = None,
        frm: str | None = None,
        private: bool = False,
        usePrefixChar: bool = True,
        expectException: bool = False,
    ) -> ircmsgs.IrcMsg | None:
        """``ChannelPluginTestCase._feedMsg``, with the sender's account tag.

        It also polls for the reply every few milliseconds instead of every
        100 ms: every fmn command runs in a thread, so the harness's pause
        would dominate the suite's time.
        """
        to = to or (self.irc.nick if private else self.channel)
        frm = frm or self.prefix
        prefix_chars = conf.supybot.reply.whenAddressedBy.chars()
        if usePrefixChar and query[0] not in prefix_chars:
            query = prefix_chars[0] + query
        tags = {"account": self.account} if self.account and frm == self.prefix else None
        self.irc.feedMsg(
            ircmsgs.IrcMsg(prefix=frm, command="PRIVMSG", args=(to, query), server_tags=tags)
        )
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        response = self.irc.takeMsg()
        while response is None and time.monotonic() < deadline:
            time.sleep(0.002)
            response = self.irc.takeMsg()
        if response is None or response.command != "PRIVMSG":
            return response
        args = list(response.args)
        nick = ircutils.nickFromHostmask(frm)
        for name in (self.nick, nick):
            if args[1].startswith(f"{name}: "):
                args[1] = args[1][len(name) + 2 :]
                break
        return ircmsgs.privmsg(*args)

    def tearDown(self) -> None:
        super().tearDown()
        database = self.__dict__.pop("_database", None)
        if database is not None:
            database.dispose()

    def as_user(self, nick: str, account: str | None) -> None:
        """Type the next commands as ``nick``, identified as ``account``."""
        self.prefix = f"{nick}!{nick}@users.example.org"
        self.account = account

    # --------------------------------------------------------- the server side

    def server_says(self, prefix: str, command: str, *args: str) -> None:
        """Feed the bot one line from the server, as ``prefix``."""
        self.irc.feedMsg(ircmsgs.IrcMsg(prefix=prefix, command=command, args=args))

    def join(self, nick: str, host: str = "users.example.org") -> None:
        """``nick`` joins the bot's channel (then the bot follows its services account)."""
        self.server_says(f"{nick}!{nick}@{host}", "JOIN", self.channel)

    def account_notify(self, nick: str, account: str, host: str = "users.example.org") -> None:
        """The server's ``account-notify`` line: ``nick`` logged in as ``account`` (``*``: out)."""
        self.server_says(f"{nick}!{nick}@{host}", "ACCOUNT", account)

    def advertise_whox(self) -> None:
        """The server's ISUPPORT says it has WHOX."""
        self.server_says("irc.example.org", "005", self.irc.nick, "WHOX", "are supported")

    # ------------------------------------------------------- the database side

    @property
    def database(self) -> Database:
        """The test's own connection to the bot's database (for setup and checks)."""
        if "_database" not in self.__dict__:
            self._database = Database(Config(database_url=self.fmn_database_url))
        return self._database

    def confirm_irc(self, user: str, nick: str) -> None:
        """Give ``user`` a confirmed IRC nick, through the preference service."""
        actor = preferences.Actor(user)
        with self.database.begin() as session:
            pending = preferences.set_destination(session, actor, "irc", nick)
        assert pending.code is not None
        with self.database.begin() as session:
            assert preferences.confirm(session, actor, pending.code).confirmed

    def add_messages(self, packages: Iterable[str]) -> list[str]:
        """Store koschei messages (newest last); their ids."""
        ids = []
        with self.database.begin() as session:
            for offset, package in enumerate(packages):
                message_id = str(uuid.uuid4())
                session.add(
                    StoredMessage(
                        id=message_id,
                        topic=KOSCHEI_TOPIC,
                        body=koschei_body(package),
                        headers={},
                        received_at=utcnow() + dt.timedelta(milliseconds=offset),
                    )
                )
                ids.append(message_id)
        return ids

    def add_notifications(
        self,
        user: str,
        packages: Iterable[str],
        *,
        age: dt.timedelta = dt.timedelta(0),
        filter_name: str = "builds",
    ) -> list[int]:
        """Outbox rows for ``user``'s irc context, made ``age`` ago and due now."""
        message_ids = self.add_messages(packages)
        made = utcnow() - age
        with self.database.begin() as session:
            user_row = session.scalars(select(User).where(User.name == user)).one_or_none()
            if user_row is None:
                user_row = User(name=user)
                session.add(user_row)
                session.flush()
            # A Core insert names only these columns (and those with defaults), so rows
            # can be added to an older schema (``fmn_revision``) too; the ORM would name
            # every column the model has.
            return [
                session.execute(
                    insert(Notification)
                    .values(
                        message_id=message_id,
                        user_id=user_row.id,
                        context="irc",
                        filter_name=filter_name,
                        created_at=made + dt.timedelta(milliseconds=index),
                        next_attempt_at=made,
                    )
                    .returning(Notification.id)
                ).scalar_one()
                for index, message_id in enumerate(message_ids)
            ]

    def outbox_rows(self, ids: Iterable[int]) -> list[Notification]:
        """The rows, as they are in the database now."""
        with self.database.begin() as session:
            return list(
                session.scalars(
                    select(Notification)
                    .where(Notification.id.in_(list(ids)))
                    .order_by(Notification.id)
                )
            )

    # -------------------------------------------------------- delivery rounds

    def answer_ison(self, msg: ircmsgs.IrcMsg, online: Iterable[str]) -> None:
        """Answer the bot's ISON like a server: which of the asked nicks are on."""
        wanted = {n.lower() for n in online}
        present = " ".join(n for n in msg.args if n.lower() in wanted)
        self.irc.feedMsg(
            ircmsgs.IrcMsg(prefix="irc.example.org", command="303", args=(self.irc.nick, present))
        )

    def answer_who(self, msg: ircmsgs.IrcMsg, accounts: Mapping[str, str]) -> None:
        """Answer a WHOX ``WHO <nick> %tna,<token>`` like a server.

        ``accounts`` maps the nicks that are on to their account (``0``: logged
        out); a nick not in it gets only the end of the list.
        """
        nick, fields = msg.args
        token = fields.partition(",")[2]
        me = self.irc.nick
        found = {n.lower(): (n, a) for n, a in accounts.items()}.get(nick.lower())
        if found is not None:
            self.server_says("irc.example.org", "354", me, token, *found)
        self.server_says("irc.example.org", "315", me, nick, "End of /WHO list.")

    def deliver_round(
        self,
        online: Iterable[str] = (),
        now: dt.datetime | None = None,
        who: Mapping[str, str] | None = None,
    ) -> tuple[RoundReport, list[ircmsgs.IrcMsg]]:
        """Run one delivery round as the plugin would, playing the server's part.

        The round runs in a thread (it waits for the ISON reply, as it does on a
        real connection); this answers ISON, and WHO with ``who`` (see
        :meth:`answer_who`; None: WHO is not answered), and collects what else
        was sent, the unanswered WHO included.
        """
        online = list(online)
        outcome: dict[str, object] = {}

        def run() -> None:
            try:
                outcome["report"] = self.plugin.delivery.run_once(now)
            except BaseException as exc:  # handed to the test thread below
                outcome["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        sent: list[ircmsgs.IrcMsg] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = self.irc.takeMsg()
            if msg is None:
                if not thread.is_alive():
                    break
                time.sleep(0.005)
            elif msg.command == "ISON":
                self.answer_ison(msg, online)
            elif msg.command == "WHO" and who is not None:
                self.answer_who(msg, who)
            else:
                sent.append(msg)
        thread.join(5)
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        report = outcome["report"]
        assert isinstance(report, RoundReport)
        return report, sent


# Limnoria's test harness runs gc.collect() twice per test; with SQLAlchemy,
# Textual and the message schemas loaded, each pass walks every long-lived
# object (a quarter of a second each). Freezing what exists before each test
# (modules, classes, the catalog) keeps those passes to what the test creates.
gc.freeze()
