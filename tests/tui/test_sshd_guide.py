"""The operator guide in fmn_tui/README.md, followed verbatim against a real sshd with real users.

As root: the README's blocks are extracted and run (accounts, files, the login
shell, sshd's ``Match`` block, the administrators' key), with the names and
directories renamed as the README says. The gateway runs as the service account
the way its systemd unit says. Then alice and bob log in over ssh, each sees and
changes only their own preferences; alice, given a bash login shell and a line in
``~/.bashrc`` (the first trial's escape) and ``PYTHONINSPECT`` in
``~/.pam_environment``, cannot read or change bob's rows or codes. What alice and
bob saw is saved as a transcript (``$FMN_GUIDE_TRANSCRIPT``, else in tmp_path).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pexpect
import pytest

from fmn_core import preferences
from fmn_core.config import load_config
from fmn_core.db import Database
from fmn_core.models import Confirmation, Destination, Preference, User
from fmn_core.preferences import Actor

try:  # a terminal emulator, to read the TUI's screen as a person sees it
    import pyte
except ImportError:  # pragma: no cover - reported by the requirements fixture
    pyte = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "fmn_tui" / "README.md"
UNIT = REPO / "fmn_daemon" / "fmn-gateway.service"
SSHD = "/usr/sbin/sshd"
MARK = re.compile(
    r"<!-- guide: (?P<name>[\w-]+)(?: (?P<path>\S+))?(?: (?P<mode>[0-7]{4}))? -->\n"
    r"```[\w]*\n(?P<body>.*?)```",
    re.S,
)


def _requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root (it adds Unix users and starts sshd)"
    if pyte is None:
        return "pyte is not installed (the test extra lists it)"
    for tool in (
        SSHD,
        "/usr/bin/ssh",
        "/usr/bin/ssh-keygen",
        "/usr/sbin/useradd",
        "/usr/bin/setpriv",
    ):
        if not Path(tool).exists():
            return f"{tool} is not installed (openssh-server, openssh-client, passwd, util-linux)"
    return None


@pytest.fixture
def requirements() -> None:
    missing = _requirements()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the sshd operator-guide test must run under CI: {missing}")
        pytest.skip(missing)


@dataclass
class Guide:
    """The README's blocks, renamed into a temporary root."""

    root: Path
    names: dict[str, str]
    blocks: dict[str, tuple[str | None, str | None, str]] = field(default_factory=dict)

    def rename(self, text: str) -> str:
        root = str(self.root)
        moves = {
            "/opt/fmn": f"{root}/opt/fmn",
            "/usr/bin/fmn-daemon": f"{root}/opt/fmn/bin/fmn-daemon",
            "/usr/local/bin/": f"{root}/bin/",
            "/etc/fmn": f"{root}/etc/fmn",
            "/var/lib/fmn": f"{root}/var/lib/fmn",
            "/run/fmn": f"{root}/run/fmn",
            "fmn-users": self.names["group"],
        }
        # One pass, so a replacement is never replaced again.
        pattern = "|".join(re.escape(old) for old in sorted(moves, key=len, reverse=True))
        text = re.sub(pattern, lambda m: moves[m[0]], text)
        text = re.sub(r"(?<![\w/.-])fmn(?![\w/.-])", self.names["service"], text)
        for person in ("alice", "bob", "carol"):
            text = re.sub(rf"\b{person}\b", self.names[person], text)
        return text

    def block(self, name: str) -> str:
        return self.rename(self.blocks[name][2])

    def run(self, name: str) -> None:
        subprocess.run(["/bin/sh", "-e", "-x", "-c", self.block(name)], cwd=self.root, check=True)


def read_guide(root: Path, names: dict[str, str]) -> Guide:
    guide = Guide(root, names)
    for match in MARK.finditer(README.read_text(encoding="utf-8")):
        guide.blocks[match["name"] if match["name"] != "file" else match["path"]] = (
            match["path"],
            match["mode"],
            match["body"],
        )
    return guide


#: The keepalive interval sshd runs with here (the guide's is 15 s).
TEST_INTERVAL = 2


def keepalive_settings(block: str) -> tuple[int, int]:
    """``ClientAliveInterval`` and ``ClientAliveCountMax`` of the guide's sshd block."""
    interval = re.search(r"^ClientAliveInterval (\d+)$", block, re.MULTILINE)
    count_max = re.search(r"^ClientAliveCountMax (\d+)$", block, re.MULTILINE)
    assert interval and count_max, block
    return int(interval[1]), int(count_max[1])


def keepalive_bounds(interval: int, count_max: int) -> tuple[int, int]:
    """When sshd drops a client that stopped answering, in seconds (the README's rule).

    OpenSSH 9.2 counts an unanswered check about every second interval: about
    ``interval * 2 * (count_max + 1)``, give or take one interval.
    """
    middle = interval * 2 * (count_max + 1)
    return middle - interval, middle + interval


def install_fmn(prefix: Path) -> None:
    """fmn "installed" at ``prefix`` (the README's /opt/fmn), runnable by every user.

    This checkout's virtualenv may sit on a Python other users can't reach (under
    /root); the system Python runs it instead, with this venv's packages on its path.
    """
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    subprocess.run([python, "-m", "venv", "--without-pip", str(prefix)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    target = prefix / "lib" / version / "site-packages"
    checkout = Path(__file__).resolve().parents[2]
    if _others_can_reach(site_packages) and _others_can_reach(checkout):
        (target / "fmn-checkout.pth").write_text(
            f"import site; site.addsitedir({str(site_packages)!r})\n"
        )
    else:
        # A clone under /root (CI's, say): the users can't reach it, so fmn and its
        # dependencies are copied into the prefix, as a real install would put them.
        shutil.copytree(
            site_packages,
            target,
            dirs_exist_ok=True,
            symlinks=True,
            ignore=shutil.ignore_patterns("__editable__*", "__pycache__"),
        )
        for package in ("fmn_core", "fmn_daemon", "fmn_tui", "fmn_bot"):
            shutil.copytree(
                checkout / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
            )
        # The migration scripts, where a non-editable install keeps them (data-files).
        shutil.copytree(
            checkout / "alembic",
            prefix / "share" / "fmn" / "alembic",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        subprocess.run(["chmod", "-R", "a+rX", str(prefix)], check=True)
    script = prefix / "bin" / "fmn-daemon"
    script.write_text(
        f"#!{prefix / 'bin' / 'python'} -I\nimport sys\nfrom fmn_daemon.cli import main\n"
        "sys.exit(main())\n"
    )
    script.chmod(0o755)


def _others_can_reach(path: Path) -> bool:
    """Whether a user other than root can read ``path`` (every parent searchable)."""
    for part in (path, *path.parents):
        mode = part.stat().st_mode
        if not mode & 0o001 or (part == path and not mode & 0o004):
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Screen:
    """An ssh session in a pty, its output run through a terminal emulator."""

    def __init__(self, child: pexpect.spawn, transcript: list[str], who: str) -> None:
        self.child = child
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""
        self.transcript = transcript
        self.who = who

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def pump(self, timeout: float) -> None:
        try:
            chunk = self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        self.raw += chunk
        self.stream.feed(chunk)

    def quiet(self, pause: float = 0.6) -> None:
        """Read until the screen has been still for ``pause`` seconds."""
        for _ in range(100):
            before = len(self.raw)
            self.pump(pause)
            if len(self.raw) == before:
                return

    def wait_for(self, text: str, timeout: float = 30, *, settled: bool = True) -> None:
        """Wait until ``text`` is on the screen once it has stopped changing; with
        ``settled=False``, until it is on the screen at all (a notification, which
        goes by itself after a few seconds, may be gone once the screen is still)."""
        deadline = time.monotonic() + timeout
        while True:
            if text in self.text() and not settled:
                return
            if text in self.text():
                # Textual may redraw (a table refilled); judge the settled frame.
                self.quiet()
                if text in self.text():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared for {self.who}:\n{self.text()}")
            self.pump(0.2)

    def send(self, *keys: str) -> None:
        for key in keys:
            self.child.send(key)
            time.sleep(0.05)

    def record(self, caption: str) -> None:
        self.transcript.append(f"--- {self.who}: {caption} ---\n{self.text()}\n")


@pytest.mark.slow  # a real sshd, three real users and a gateway: minutes, not seconds
def test_sshd_guide_two_users_and_an_escape(requirements, tmp_path):
    sfx = secrets.token_hex(3)
    names = {
        "service": f"fmnsv{sfx}",
        "group": f"fmnus{sfx}",
        "alice": f"alice{sfx}",
        "bob": f"bob{sfx}",
        "carol": f"carol{sfx}",
    }
    # Outside /tmp: sshd's StrictModes wants no world-writable directory above a home.
    root = Path(tempfile.mkdtemp(prefix="tuiguide-", dir="/var/lib"))
    root.chmod(0o755)
    for sub in ("bin", "etc", "run", "var/lib"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    install_fmn(root / "opt" / "fmn")
    guide = read_guide(root, names)
    assert set(guide.blocks) >= {
        "accounts",
        "config",
        "files",
        "users",
        "sshd",
        "admin-key",
        "/usr/local/bin/fmn-tui-shell",
        "/usr/local/bin/fmn-tui-admin",
    }, sorted(guide.blocks)
    transcript: list[str] = []
    processes: list[subprocess.Popen[bytes]] = []
    created_users: list[str] = []
    created_groups: list[str] = []
    logs: list[IO[bytes]] = []
    try:
        # --- 1, 2: accounts, configuration, database ---------------------------------
        guide.run("accounts")
        created_users.append(names["service"])
        created_groups.append(names["group"])
        (root / "fmn.toml").write_text(guide.block("config"), encoding="utf-8")
        guide.run("files")
        service = pwd.getpwnam(names["service"])
        config_path = root / "etc/fmn/fmn.toml"
        database_file = root / "var/lib/fmn/fmn.sqlite"
        assert database_file.stat().st_uid == service.pw_uid

        # --- 3: the gateway, as its unit says, as the service account -----------------
        unit = guide.rename(UNIT.read_text(encoding="utf-8"))
        settings = dict(
            line.split("=", 1) for line in unit.splitlines() if re.match(r"^[A-Z]\w+=", line)
        )
        assert settings["User"] == names["service"]
        # (A directory name, not the account: read it before renaming.)
        (runtime_name,) = re.findall(r"^RuntimeDirectory=(\S+)$", UNIT.read_text(), re.M)
        runtime = Path(guide.rename(f"/run/{runtime_name}"))
        runtime.mkdir(mode=int(settings["RuntimeDirectoryMode"], 8))
        runtime.chmod(int(settings["RuntimeDirectoryMode"], 8))
        os.chown(runtime, service.pw_uid, service.pw_gid)
        environment = {"PATH": "/usr/bin:/bin"}
        for line in unit.splitlines():
            if line.startswith("Environment="):
                key, value = line.removeprefix("Environment=").split("=", 1)
                environment[key] = value
        gateway_log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115
        logs.append(gateway_log)
        gateway = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={settings['User']}",
                f"--regid={settings['Group']}",
                "--init-groups",
                "--",
                *settings["ExecStart"].split(),
            ],
            env=environment,
            stdout=gateway_log,
            stderr=subprocess.STDOUT,
            cwd="/",
        )
        processes.append(gateway)
        socket_flag = re.search(r"--socket (\S+)", settings["ExecStart"])
        assert socket_flag is not None, "the unit's ExecStart names the gateway's socket"
        socket_path = socket_flag[1]
        wait_until(lambda: os.path.exists(socket_path), 30, "the gateway's socket")

        # --- 4: login shells and the two users ----------------------------------------
        for shell in ("/usr/local/bin/fmn-tui-shell", "/usr/local/bin/fmn-tui-admin"):
            _, mode, _ = guide.blocks[shell]
            target = Path(guide.rename(shell))
            target.write_text(guide.block(shell), encoding="utf-8")
            target.chmod(int(mode or "0755", 8))
        keys: dict[str, Path] = {}
        for person in ("alice", "bob", "carol"):
            key_file = root / f"key-{person}"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True
            )
            keys[person] = key_file
        for person in ("alice", "bob"):
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", names[person]], check=True)
            created_users.append(names[person])
            account = pwd.getpwnam(names[person])
            home = Path(account.pw_dir)
            (home / ".ssh").mkdir(mode=0o700)
            (home / ".ssh/authorized_keys").write_text(keys[person].with_suffix(".pub").read_text())
            for path in (home / ".ssh", home / ".ssh/authorized_keys"):
                os.chown(path, account.pw_uid, account.pw_gid)
        guide.run("users")

        # alice prepares the first trial's escape: a line in ~/.bashrc, PYTHONINSPECT.
        alice = pwd.getpwnam(names["alice"])
        alice_home = Path(alice.pw_dir)
        attack = root / "attack.py"
        attack.write_text(ATTACK, encoding="utf-8")
        attack.chmod(0o644)
        (alice_home / ".bashrc").write_text(
            f"{root / 'opt/fmn/bin/python'} {attack} {socket_path} {config_path} {database_file} "
            f"{names['bob']} {alice_home / 'attack.json'}\n"
        )
        (alice_home / ".pam_environment").write_text("PYTHONINSPECT=1\n")
        for path in (alice_home / ".bashrc", alice_home / ".pam_environment"):
            os.chown(path, alice.pw_uid, alice.pw_gid)

        # --- 6: the administrator's key on the service account ------------------------
        ssh_dir = Path(service.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        admin_line = guide.block("admin-key").strip()
        pub = keys["carol"].with_suffix(".pub").read_text().split()
        admin_line = re.sub(r"ssh-ed25519 \S+ \S+$", f"{pub[0]} {pub[1]} carol", admin_line)
        (ssh_dir / "authorized_keys").write_text(admin_line + "\n")
        (ssh_dir / "authorized_keys").chmod(0o600)
        for path in (ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(path, service.pw_uid, service.pw_gid)
        config_path.write_text(
            config_path.read_text() + f'admins = ["{names["carol"]}"]\n', encoding="utf-8"
        )

        # --- 5: sshd with the README's block --------------------------------------------
        port = free_port()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "hostkey")], check=True
        )
        sshd_config = root / "sshd_config"
        # The guide's keepalive, with its interval cut so that the frozen client
        # below is dropped in seconds; the guide's own figures follow from the same
        # formula (``keepalive_bounds``), checked against what the README promises.
        interval, count_max = keepalive_settings(guide.block("sshd"))
        assert keepalive_bounds(interval, count_max) == (75, 105)
        sshd_config.write_text(
            f"ListenAddress 127.0.0.1\nHostKey {root / 'hostkey'}\nPidFile {root / 'sshd.pid'}\n"
            "UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "LogLevel VERBOSE\n\n"
            + guide.block("sshd").replace(
                f"ClientAliveInterval {interval}\n", f"ClientAliveInterval {TEST_INTERVAL}\n"
            )
        )
        assert f"ClientAliveInterval {TEST_INTERVAL}\n" in sshd_config.read_text()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        subprocess.run([SSHD, "-t", "-f", str(sshd_config)], check=True)
        sshd_log = open(tmp_path / "sshd.log", "wb")  # noqa: SIM115
        logs.append(sshd_log)
        sshd = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(sshd_config), "-p", str(port)],
            stdout=sshd_log,
            stderr=subprocess.STDOUT,
        )
        processes.append(sshd)

        def port_open() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_until(port_open, 30, "sshd")

        def ssh_args(person: str, *extra: str, login: str | None = None) -> list[str]:
            return [
                "-i",
                str(keys[person]),
                "-p",
                str(port),
                "-F",
                "/dev/null",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                *extra,
                f"{login or names[person]}@127.0.0.1",
            ]

        def session(
            person: str,
            *extra: str,
            login: str | None = None,
            command: str = "",
            term: str = "xterm-256color",
        ) -> Screen:
            args = ["-tt", *ssh_args(person, *extra, login=login)] + ([command] if command else [])
            child = pexpect.spawn(
                "/usr/bin/ssh",
                args,
                env={"PATH": "/usr/bin:/bin", "TERM": term, "LANG": "C.UTF-8"},
                dimensions=(24, 80),
            )
            return Screen(child, transcript, person if login is None else f"{person} as admin")

        def finish(screen: Screen) -> None:
            screen.send("\x11")  # ctrl+q
            screen.child.expect(pexpect.EOF, timeout=30)
            screen.raw += screen.child.before or b""
            screen.child.close()
            assert screen.child.exitstatus == 0, screen.text()

        # --- alice: her own filter -----------------------------------------------------
        screen = session(
            "alice", "-o", "SetEnv=PYTHONINSPECT=1 TEXTUAL_DEBUG=1 COLORTERM=truecolor"
        )
        screen.wait_for("Recent")
        screen.record("logged in (contexts)")
        assert names["alice"] in screen.text()
        screen.send("f")
        screen.wait_for("Filters of email")
        screen.send("a")
        screen.wait_for("Name of the new filter")
        screen.send("alice koji", "\r")
        screen.wait_for("New filter, not saved yet")
        screen.send("\x13")
        screen.wait_for("Saved")
        screen.send("\x1b")
        screen.wait_for("alice koji")
        screen.record("her filters of email after adding one")
        finish(screen)
        # The escape routes of the trial led nowhere: no Python prompt after ctrl+q,
        # ~/.bashrc never ran (her login shell is fmn-tui-shell), 24-bit colour passed.
        assert b">>>" not in screen.raw
        assert not (alice_home / "attack.json").exists()
        assert b"\x1b[38;2;" in screen.raw

        # --- bob: sees none of it; his own filter and a destination awaiting its code ---
        screen = session("bob", "-o", "SetEnv=NO_COLOR=1 COLORTERM=truecolor")
        screen.wait_for("Recent")
        screen.record("logged in (contexts)")
        screen.send("f")
        screen.wait_for("Filters of email")
        assert "alice koji" not in screen.text()
        screen.send("a")
        screen.wait_for("Name of the new filter")
        screen.send("bob bodhi", "\r")
        screen.wait_for("New filter, not saved yet")
        screen.send("\x13")
        screen.wait_for("Saved")
        screen.send("\x1b")
        screen.wait_for("bob bodhi")
        screen.record("his filters of email (none of alice's)")
        assert "alice koji" not in screen.text()
        screen.send("\x1b")
        screen.wait_for("Recent")
        screen.send("d")
        screen.wait_for("New address")
        screen.send("s")
        screen.send("bob@example.org", "\r")
        screen.wait_for("on its way", settled=False)
        screen.record("his e-mail destination, waiting for its code")
        finish(screen)
        # NO_COLOR came through AcceptEnv: every colour is a grey.
        colours = re.findall(rb"\x1b\[(?:38|48);2;(\d+);(\d+);(\d+)", screen.raw)
        assert colours and all(r == g == b for r, g, b in colours)

        # --- TERM=dumb: monochrome too; ssh with a command: the TUI, not the command ---
        screen = session("alice", term="dumb")
        screen.wait_for("Recent")
        finish(screen)
        colours = re.findall(rb"\x1b\[(?:38|48);2;(\d+);(\d+);(\d+)", screen.raw)
        assert all(r == g == b for r, g, b in colours)
        front = subprocess.run(
            ["/usr/bin/ssh", *ssh_args("alice"), "ls", "/"], capture_output=True, timeout=60
        )
        assert b"needs a terminal" in front.stderr and b"etc" not in front.stdout
        assert front.returncode == 2
        # No shell behind the front door: no sftp, no port forwarding.
        sftp = subprocess.run(
            [
                "/usr/bin/sftp",
                "-b",
                "-",
                "-P",
                str(port),
                "-i",
                str(keys["alice"]),
                "-F",
                "/dev/null",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                f"{names['alice']}@127.0.0.1",
            ],
            input=b"ls /\n",
            capture_output=True,
            timeout=60,
        )
        assert sftp.returncode != 0 and b"etc" not in sftp.stdout
        forward = subprocess.run(
            [
                "/usr/bin/ssh",
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                f"0:127.0.0.1:{port}",
                *ssh_args("alice"),
            ],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert forward.returncode != 0 and b"forwarding failed" in forward.stderr
        transcript.append(
            "--- alice's front door: `ssh host ls /`, sftp, a port forward ---\n"
            f"ssh ls /: exit {front.returncode}: {front.stderr.decode().strip()}\n"
            f"sftp: exit {sftp.returncode}: {sftp.stderr.decode().strip()[:200]}\n"
            f"ssh -R: exit {forward.returncode}: {forward.stderr.decode().strip()[:200]}\n"
        )

        # --- carol, an administrator, through the service account's forced command ----
        screen = session("carol", login=names["service"], command=names["bob"])
        screen.wait_for("Recent")
        assert f"{names['bob']} (as admin)" in screen.text()
        screen.send("f")
        screen.wait_for("bob bodhi")
        screen.record("an administrator's view of bob's filters")
        finish(screen)

        # --- the database agrees: each has only their own ------------------------------
        config = load_config(str(config_path))
        database = Database(config)
        try:
            with database.begin() as s:

                def names_of(user: str) -> list[str]:
                    return [f.name for f in preferences.list_filters(s, Actor(user), "email")]

                assert names_of(names["alice"]) == ["alice koji"]
                assert names_of(names["bob"]) == ["bob bodhi"]
                bob_codes = (
                    s.query(Confirmation)
                    .join(Destination)
                    .join(Preference)
                    .join(User)
                    .filter(User.name == names["bob"])
                    .count()
                )
                assert bob_codes == 1
        finally:
            database.dispose()

        # --- keepalive: a frozen client is dropped, and its TUI ends --------------------
        screen = session("bob")
        screen.wait_for("Recent")
        bob_uid = pwd.getpwnam(names["bob"]).pw_uid

        def bob_tui_running() -> bool:
            found = subprocess.run(["ps", "-o", "args=", "-u", str(bob_uid)], capture_output=True)
            return b"fmn_tui" in found.stdout

        assert bob_tui_running()
        log_path = tmp_path / "sshd.log"
        seen = len(log_path.read_bytes())
        os.kill(screen.child.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            wait_until(
                lambda: b"not responding" in log_path.read_bytes()[seen:],
                300,
                "sshd to drop the frozen client",
            )
            dropped_after = time.monotonic() - frozen
            wait_until(lambda: not bob_tui_running(), 30, "bob's TUI to end with the session")
            ended_after = time.monotonic() - frozen
        finally:
            os.kill(screen.child.pid, signal.SIGCONT)
            screen.child.close(force=True)
        transcript.append(
            f"--- keepalive: sshd dropped a frozen client after {dropped_after:.0f} s; "
            f"the TUI ended {ended_after - dropped_after:.1f} s later ---\n"
        )
        low, high = keepalive_bounds(TEST_INTERVAL, count_max)
        # A second of slack each way for a loaded machine's scheduling.
        assert low - 1 <= dropped_after <= high + 1, (dropped_after, low, high)

        # --- alice escapes the way the trial did: bash as login shell, ~/.bashrc -------
        subprocess.run(["usermod", "-s", "/bin/bash", names["alice"]], check=True)
        escape = subprocess.run(
            ["/usr/bin/ssh", *ssh_args("alice")],
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        report = json.loads((alice_home / "attack.json").read_text())
        transcript.append(
            "--- alice with a shell (bash login shell, a line in ~/.bashrc, PYTHONINSPECT=1 in "
            "~/.pam_environment) tried: ---\n"
            + "\n".join(
                f"{what}: {' | '.join(map(str, result)) if isinstance(result, list) else result}"
                for what, result in report.items()
            )
            + f"\n(then the forced command said: {escape.stderr.decode().strip()})\n"
        )
        assert report["uid"] == alice.pw_uid
        for what in (
            "read the database file",
            "open the database with sqlite3",
            "list the state directory",
            "read fmn's configuration",
        ):
            assert report[what][0] == "refused", (what, report[what])
        assert report["start fmn-tui on the database"][0] == "refused"
        assert report["gateway: who am I"] == ["done", names["alice"]]
        assert report["gateway: bob's email context"][:2] == ["refused", "PermissionDenied"]
        assert report["gateway: remove bob's filter"][:2] == ["refused", "PermissionDenied"]
        assert report["gateway: the codes waiting to be sent"][:2] == [
            "refused",
            "MalformedRequest",
        ]
        assert report["gateway: try a code without it counting"][:2] == [
            "refused",
            "MalformedRequest",
        ]
        assert report["gateway: set a destination, read its code"] == ["done", "None"]
        mine = report["gateway: my own filters"]
        assert mine[0] == "done" and "alice koji" in mine[1] and "bob bodhi" not in mine[1]

        database = Database(config)
        try:
            with database.begin() as s:
                assert [
                    f.name for f in preferences.list_filters(s, Actor(names["bob"]), "email")
                ] == ["bob bodhi"]
                bob = s.query(User).filter_by(name=names["bob"]).one()
                assert not bob.confirm_failures
        finally:
            database.dispose()
    finally:
        text = "\n".join(transcript)
        (tmp_path / "transcript.txt").write_text(text, encoding="utf-8")
        if os.environ.get("FMN_GUIDE_TRANSCRIPT"):
            Path(os.environ["FMN_GUIDE_TRANSCRIPT"]).write_text(text, encoding="utf-8")
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
        for user in created_users:
            subprocess.run(["userdel", "-r", "-f", user], capture_output=True)
        for group in created_groups:
            subprocess.run(["groupdel", group], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


#: What alice runs from ~/.bashrc once she has a shell: every way at bob's data she has.
ATTACK = r"""
import json, os, sqlite3, subprocess, sys
from fmn_core.gateway import PreferenceCall, GatewayClient

sock, config, database, bob, out_path = sys.argv[1:6]
out = {"uid": os.getuid(), "PYTHONINSPECT in my shell": os.environ.get("PYTHONINSPECT")}


def attempt(what, action):
    try:
        out[what] = ["done", str(action())[:400]]
    except Exception as error:  # noqa: BLE001 - every refusal is the point
        out[what] = ["refused", type(error).__name__, str(error)[:200]]


attempt("read the database file", lambda: open(database, "rb").read(16))
attempt(
    "open the database with sqlite3",
    lambda: sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    .execute("select secret_hash from confirmations").fetchall(),
)
attempt("list the state directory", lambda: os.listdir(os.path.dirname(database)))
attempt("read fmn's configuration", lambda: open(config).read())


def tui_in_process():
    done = subprocess.run(
        [sys.executable, "-I", "-m", "fmn_tui", "--config", config],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise PermissionError(done.stderr.strip())
    return done.stdout


attempt("start fmn-tui on the database", tui_in_process)
client = GatewayClient.connect(sock)
attempt("gateway: who am I", lambda: client.hello().account)
attempt(
    "gateway: bob's email context",
    lambda: client.run([PreferenceCall("get_context", ("email",), {"user": bob})], trial=True),
)
attempt(
    "gateway: remove bob's filter",
    lambda: client.run([PreferenceCall("remove_filter", ("email", "bob bodhi"), {"user": bob})]),
)
attempt(
    "gateway: the codes waiting to be sent",
    lambda: client.run([PreferenceCall("pending_confirmation_codes", (), {})]),
)
attempt(
    "gateway: try a code without it counting",
    lambda: client.run([PreferenceCall("confirm", ("ABCD-1234",), {})], trial=True),
)
attempt(
    "gateway: set a destination, read its code",
    lambda: client.run(
        [PreferenceCall("set_destination", ("email", "alice@example.org"), {})], trial=True
    )[0].code,
)
attempt(
    "gateway: my own filters",
    lambda: [
        f.name
        for f in client.run([PreferenceCall("list_filters", ("email",), {})], trial=True)[0]
    ],
)
with open(out_path, "w") as out_file:
    json.dump(out, out_file, indent=1)
"""
