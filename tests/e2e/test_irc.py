"""End to end over real IRC: ngircd, the Limnoria bot with the Fmn plugin, a user.

What runs for real: an ``ngircd`` server on a free loopback port, the bot started
with Limnoria's ``supybot`` command from a generated registry file, the user's
IRC client (plain sockets, below), ``fmn-daemon db upgrade`` and
``fmn-daemon replay`` (the daemon's ingest pipeline writing the outbox), and a
SQLite database. The user sets up a filter and confirms their nick by typing
commands to the bot; a bus message replayed into fmn then reaches them as a
private message.

Identity: a plain ngircd has no services, so no IRC account exists. The bot is
configured with ``supybot.plugins.Fmn.staticAccounts`` ("tester=alice"), the
explicit, insecure registry value meant for exactly such networks; the account
tag and account-notify paths are covered by ``tests/bot``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

pytestmark = pytest.mark.slow

BOT_NICK = "fmnbot"
#: The koschei message of the shared corpus: "rnv's builds are back to normal in f25".
RNV_MESSAGE = (
    '{"body": {"collection": "f25", "collection_name": "Fedora Rawhide", "groups": ["c"], '
    '"koji_instance": "primary", "name": "rnv", "new": "ok", "old": "failed", "repo": "f25"}, '
    '"headers": {}, "id": "%s", "topic": "org.fedoraproject.prod.koschei.package.state.change"}'
)
BIN = Path(sys.executable).parent


def _missing(what: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required under CI")
    pytest.skip(f"{what} is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


def _stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def ircd(tmp_path: Path) -> Iterator[int]:
    """An ngircd on a free loopback port; its port."""
    binary = shutil.which("ngircd") or (
        "/usr/sbin/ngircd" if Path("/usr/sbin/ngircd").exists() else None
    )
    if binary is None:
        _missing("ngircd (apt-get install ngircd)")
    port = _free_port()
    config = tmp_path / "ngircd.conf"
    config.write_text(
        f"""[Global]
Name = irc.fmn.test
Info = fmn end-to-end test server
AdminInfo1 = fmn tests
AdminInfo2 = here
AdminEMail = root@localhost
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = "fmn e2e"
[Limits]
MaxConnectionsIP = 0
MaxJoins = 0
MaxPenaltyTime = 0
PingTimeout = 300
PongTimeout = 60
[Options]
DNS = no
Ident = no
PAM = no
""",
        encoding="utf-8",
    )
    log = (tmp_path / "ngircd.log").open("wb")
    process = subprocess.Popen(
        [binary, "--nodaemon", "--config", str(config)], stdout=log, stderr=log
    )
    try:
        _wait_for_port(port, process)
        yield port
    finally:
        _stop(process)
        log.close()


@dataclass
class Line:
    """One line from the server."""

    prefix: str
    command: str
    params: list[str]

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]

    @property
    def text(self) -> str:
        return self.params[-1] if self.params else ""

    @classmethod
    def parse(cls, raw: str) -> Line:
        if raw.startswith("@"):
            raw = raw.split(" ", 1)[1]
        prefix = ""
        if raw.startswith(":"):
            prefix, raw = raw[1:].split(" ", 1)
        trailing = None
        if " :" in raw:
            raw, trailing = raw.split(" :", 1)
        params = raw.split()
        command = params.pop(0).upper()
        if trailing is not None:
            params.append(trailing)
        return cls(prefix, command, params)


class IrcClient:
    """A scripted IRC user on plain sockets."""

    def __init__(self, port: int, nick: str) -> None:
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.seen: list[Line] = []
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :fmn e2e user")
        self.expect(lambda line: line.command == "001", timeout=10)

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")

    def _read(self, timeout: float) -> Line | None:
        while b"\r\n" not in self.buffer:
            self.sock.settimeout(max(timeout, 0.01))
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                return None
            if not chunk:
                raise AssertionError(f"{self.nick}: the server closed the connection")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\r\n", 1)
        line = Line.parse(raw.decode("utf-8", "replace"))
        if line.command == "PING":
            self.send(f"PONG :{line.text}")
        return line

    def expect(self, wanted: Callable[[Line], bool], timeout: float = 15) -> Line:
        """The next line (already seen or new) that ``wanted`` accepts."""
        for index, line in enumerate(self.seen):
            if wanted(line):
                del self.seen[index]
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            read = self._read(deadline - time.monotonic())
            if read is None:
                break
            line = read
            if wanted(line):
                return line
            self.seen.append(line)
        recent = [(line.command, line.text) for line in self.seen[-8:]]
        raise AssertionError(f"{self.nick}: nothing wanted within {timeout} s; saw {recent}")

    def from_bot(self, command: str | None = None, timeout: float = 15) -> Line:
        """The next PRIVMSG or NOTICE from the bot to this user."""
        return self.expect(
            lambda line: (
                line.nick == BOT_NICK
                and line.command in ((command,) if command else ("PRIVMSG", "NOTICE"))
                and bool(line.params)
                and line.params[0] == self.nick
            ),
            timeout,
        )

    def ask(self, text: str, timeout: float = 15) -> str:
        """Send the bot a private message; its reply's text."""
        self.send(f"PRIVMSG {BOT_NICK} :{text}")
        return self.from_bot(timeout=timeout).text

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("QUIT :done")
        self.sock.close()


class Bot:
    """The Limnoria bot process with the Fmn plugin, started with ``supybot``."""

    def __init__(self, home: Path, port: int, fmn_config: Path) -> None:
        self.home = home
        self.registry = home / "bot.conf"
        self.log_path = home / "bot.log"
        for name in ("conf", "data", "data/tmp", "logs", "backup", "web"):
            (home / name).mkdir(parents=True, exist_ok=True)
        self.registry.write_text(
            f"""supybot.nick: {BOT_NICK}
supybot.ident: fmnbot
supybot.user: fmn e2e bot
supybot.networks: e2e
supybot.networks.e2e.servers: 127.0.0.1:{port}
supybot.networks.e2e.channels: #fmn
supybot.networks.e2e.ssl: False
supybot.directories.conf: {home / "conf"}
supybot.directories.data: {home / "data"}
supybot.directories.data.tmp: {home / "data/tmp"}
supybot.directories.data.web: {home / "web"}
supybot.directories.backup: {home / "backup"}
supybot.directories.log: {home / "logs"}
supybot.log.stdout: True
supybot.log.stdout.level: INFO
supybot.log.stdout.colorized: False
supybot.protocols.irc.throttleTime: 0.05
supybot.drivers.poll: 0.05
supybot.reply.whenNotCommand: True
supybot.reply.error.detailed: False
supybot.abuse.flood.command.maximum: 40
supybot.plugins.Fmn: True
supybot.plugins.Fmn.configFile: {fmn_config}
supybot.plugins.Fmn.staticAccounts: tester=alice
""",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [str(BIN / "supybot"), str(self.registry)]
        if os.geteuid() == 0:
            command.insert(1, "--allow-root")
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=self._log, cwd=self.home)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, timeout=15)
            self._log.close()
            self.process = None

    def log_tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]


def _daemon(fmn_config: Path, *args: str) -> str:
    env = {**os.environ, "FMN_CONFIG": str(fmn_config)}
    done = subprocess.run(
        [str(BIN / "fmn-daemon"), *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _wait_for_bot(client: IrcClient, bot: Bot, timeout: float = 60) -> None:
    """Until the bot is on the server and answers fmn commands."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert bot.process is not None
        if bot.process.poll() is not None:
            raise AssertionError(f"the bot exited:\n{bot.log_tail()}")
        client.send(f"ISON {BOT_NICK}")
        reply = client.expect(lambda line: line.command == "303", timeout=5)
        if BOT_NICK in reply.text.split():
            try:
                if "Commands:" in client.ask("fmn help", timeout=10):
                    return
            except AssertionError:
                pass
        time.sleep(0.3)
    raise AssertionError(f"the bot did not come up:\n{bot.log_tail()}")


@pytest.fixture
def fmn_config(tmp_path: Path) -> Path:
    """fmn's TOML for this run, with its schema made by ``fmn-daemon db upgrade``."""
    path = tmp_path / "fmn.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path / "fmn.sqlite"}"\n'
        # ngircd has no services: the static nick=account pair is the Fedora account.
        '[bot]\nidentity = "services-account"\nlines_per_second = 20.0\n'
        "[delivery]\nidle_poll_seconds = 0.2\n",
        encoding="utf-8",
    )
    _daemon(path, "db", "upgrade")
    return path


@pytest.fixture
def bot(tmp_path: Path, ircd: int, fmn_config: Path) -> Iterator[Bot]:
    """The bot, started; stopped (SIGTERM, as an operator would) at the end."""
    if not (BIN / "supybot").exists():
        _missing("Limnoria's supybot command")
    bot = Bot(tmp_path / "bot", ircd, fmn_config)
    bot.start()
    try:
        yield bot
    finally:
        bot.stop()


def test_irc_user_sets_up_and_receives_a_notification(
    bot: Bot, ircd: int, fmn_config: Path, tmp_path: Path
) -> None:
    tester = IrcClient(ircd, "tester")
    try:
        _wait_for_bot(tester, bot)

        # Wrong commands explain the right form.
        assert tester.ask("fmn frobnicate").startswith(
            "Error: 'fmn frobnicate' is not an fmn command"
        )
        usage = tester.ask("fmn add-rule irc")
        assert "fmn add-rule <context> <filter> [not] <rule>" in usage, usage
        assert "There is no rule called 'no_such_rule'" in tester.ask(
            "fmn add-rule irc rnv no_such_rule"
        )

        # A filter, then the nick, confirmed with the code the bot sends to it.
        assert tester.ask('fmn add-filter irc "rnv builds"').startswith(
            "Added filter 'rnv builds' to irc"
        )
        assert "rule 1. package_involved package=rnv" in tester.ask(
            'fmn add-rule irc "rnv builds" package_involved package=rnv'
        )
        assert "sending a confirmation code to tester" in tester.ask("fmn set-address irc tester")
        code_line = tester.from_bot("PRIVMSG").text
        assert "The Fedora account alice asked fmn" in code_line
        code = code_line.split("fmn confirm ", 1)[1].split()[0]
        assert tester.ask(f"fmn confirm {code}") == "Confirmed: irc delivers to tester."

        # Somebody without an account is refused.
        stranger = IrcClient(ircd, "stranger")
        try:
            assert "identify with NickServ" in stranger.ask("fmn contexts")
        finally:
            stranger.close()

        # A bus message goes through the daemon's pipeline into the outbox...
        messages = tmp_path / "messages.jsonl"
        messages.write_text(RNV_MESSAGE % "e2e-rnv-1" + "\n", encoding="utf-8")
        assert "1 notifications written" in _daemon(fmn_config, "replay", str(messages))
        # ...and reaches the user as a private message from the bot.
        line = tester.from_bot("PRIVMSG", timeout=20)
        assert "rnv's builds are back to normal in f25" in line.text
        assert line.text.endswith("(rnv builds)")

        # A restart loses nothing: written while the bot is down, delivered after.
        bot.stop()
        messages.write_text(RNV_MESSAGE % "e2e-rnv-2" + "\n", encoding="utf-8")
        assert "1 notifications written" in _daemon(fmn_config, "replay", str(messages))
        bot.start()
        line = tester.from_bot("PRIVMSG", timeout=60)
        assert "rnv's builds are back to normal" in line.text
    except AssertionError:
        print(bot.log_tail())
        raise
    finally:
        tester.close()
