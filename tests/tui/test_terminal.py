"""The real ``fmn-tui`` in a real pseudo-terminal: add a filter with two rules, preview, save."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sys
from pathlib import Path

import pexpect
import pytest

from fmn_core import preferences
from fmn_core.config import Config
from fmn_core.db import Database, make_engine
from fmn_core.models import Base

from .conftest import Core, store_messages

ME = pwd.getpwuid(os.getuid()).pw_name
# Colour and cursor sequences sit between the words on screen; match the words.
ANSI = re.compile(
    r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>NOM78c])"
)


class Terminal:
    """A pty running fmn-tui, read as plain text."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child
        self.seen = ""

    def wait_for(self, text: str, timeout: float = 20) -> None:
        """Wait until ``text`` appears on screen (after what was already waited for)."""
        while text not in self.seen:
            try:
                chunk = self.child.read_nonblocking(65536, timeout=timeout)
            except pexpect.TIMEOUT as exc:
                raise AssertionError(f"{text!r} never appeared: {self.seen[-800:]!r}") from exc
            self.seen += ANSI.sub("", chunk)
        self.seen = self.seen[self.seen.index(text) + len(text) :]

    def send(self, *keys: str) -> None:
        for key in keys:
            self.child.send(key)


@pytest.fixture
def installed() -> str:
    path = shutil.which("fmn-tui", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail("the fmn-tui console script is not installed in this environment")
    return path


def test_terminal_add_filter_with_two_rules_preview_and_save(tmp_path, installed):
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    database = Database(Config(database_url=url), engine)
    store_messages(database)
    config = tmp_path / "fmn.toml"
    config.write_text(f'database_url = "{url}"\n')
    env = dict(os.environ, TERM="xterm-256color", LANG="C.UTF-8")
    child = pexpect.spawn(
        installed,
        ["--config", str(config), "--log-file", str(tmp_path / "tui.log")],
        env=env,
        dimensions=(24, 80),
        encoding="utf-8",
        codec_errors="replace",
    )
    screen = Terminal(child)
    try:
        screen.wait_for("Recent")  # the contexts table's last column
        screen.send("f")
        screen.wait_for("Filters of email")
        screen.send("a")
        screen.wait_for("Name of the new filter")
        screen.send("koji tags", "\r")
        screen.wait_for("New filter, not saved yet")
        screen.send("a")
        screen.wait_for("Add a rule to")
        screen.send("app_is")
        screen.wait_for("the application's name")
        screen.send("\r")
        screen.wait_for("Add rule")
        screen.send("koji", "\x13")  # ctrl+s adds the rule
        screen.wait_for("app_is app=koji")
        screen.send("a")
        screen.wait_for("Add a rule to")
        screen.send("topic_matches")
        screen.wait_for("a glob on the full topic")
        screen.send("\r")
        screen.wait_for("Add rule")
        screen.send("*.buildsys.tag", "\r")
        screen.wait_for("topic_matches pattern=*.buildsys.tag")
        screen.send("p")
        screen.wait_for("2 of the latest 200 stored messages")
        screen.wait_for("colord-1.3.4-1.fc26")
        assert Core(database, ME).filters("email") == []  # previewed, not saved
        screen.send("\x1b")
        screen.wait_for("New filter, not saved yet")
        screen.send("\x13")  # ctrl+s saves the filter
        screen.wait_for("Saved")
        screen.send("\x11")  # ctrl+q
        child.expect(pexpect.EOF, timeout=20)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, screen.seen[-800:]
    core = Core(database, ME)
    assert core.filters("email") == [
        ("koji tags", True, 1, ["app_is app=koji", "topic_matches pattern=*.buildsys.tag"])
    ]
    assert [hit.topic for hit in core(preferences.preview, "email", "koji tags")] == [
        "org.fedoraproject.prod.buildsys.tag"
    ] * 2
    database.dispose()
