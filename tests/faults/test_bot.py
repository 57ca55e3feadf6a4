"""The IRC bot under hostile input, other people's data, and code guessing.

Everything goes through Limnoria's own machinery, as in ``tests/bot``: the
``FmnCase`` harness feeds ``PRIVMSG`` lines (with the IRCv3 ``account`` tag) to
the loaded plugin, which parses them with its converters and calls fmn's core
on a real database.

- Fuzzing: hypothesis-made command lines, and a sweep of known-nasty tokens
  through every command. A reply must never carry a traceback, an exception
  name or "internal error"; a refused command writes nothing (``confirm`` counts
  the wrong guess, by design).
- Authorization: bob runs EVERY ``fmn`` command naming alice's filters, codes
  and contexts; alice's data stays as it was and none of it shows in bob's replies.
- Confirmation codes through ``fmn confirm``: single use, expiring, and guessing
  locked out after ``confirmation.max_failures`` wrong codes.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import string
from typing import TYPE_CHECKING, Any

import pytest
from bot import conftest as bot_conftest
from core.test_authorization import snapshot
from core.test_destinations import PUSH
from core.test_push_urls import HOSTILE_URLS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from fmn_bot.plugin import COMMANDS
from fmn_core import preferences
from fmn_core.models import Confirmation, Destination, Preference, User, utcnow

from .conftest import env_int, faults_full

#: The bot tests' autouse fixtures (a database per case, Limnoria's format() while a
#: case runs); the harness is ``bot_conftest.FmnCase``.
_fmn_bot_database = bot_conftest._fmn_bot_database
_limnoria_format = getattr(bot_conftest, "_limnoria_format", None)

EXAMPLES = env_int("FMN_FAULTS_EXAMPLES", 400 if faults_full() else 60)

#: What a reply may never contain: a traceback, an exception's name, an internal error.
LEAK = re.compile(
    r"Traceback|internal error|An error has occurred|\b[A-Z][A-Za-z]*(?:Error|Exception)\b"
)
#: Tokens that have broken IRC bots before.
NASTY = [
    "²",
    "٣",
    '"',
    '"unclosed',
    '""',
    "'",
    "\\",
    "[",
    "]",
    "[fmn help]",
    "$nick",
    "|",
    "a" * 400,
    "é" * 120,
    "\u202e",
    "\x01ACTION",
    "\x02bold",
    "\x03",
    "x=y=z",
    "=",
    "app=",
    "=koji",
    "9" * 30,
    "-1",
    "0",
    "1e9",
    "(a+)+$",
    "*",
    "not",
    "NOT not",
    "%s%n",
    "ntfys://127.0.0.1/x",
    "file:///etc/passwd",
]
#: A message id named in explain and act commands.
MESSAGE_ID = "1f0b8a43-5c5e-4a57-9e3b-0d6c2a7d9c11"
#: A line per command, ``{}`` where the nasty token goes.
TEMPLATES = [
    "fmn {}",
    "fmn help {}",
    "fmn contexts {}",
    "fmn enable {}",
    "fmn disable {}",
    "fmn filters {}",
    "fmn show irc {}",
    "fmn add-filter irc {}",
    "fmn rename-filter irc f {}",
    "fmn rename-filter irc {} g",
    "fmn remove-filter irc {}",
    "fmn add-rule irc f {}",
    "fmn add-rule irc f app_is app={}",
    "fmn add-rule irc f not topic_matches pattern={}",
    'fmn add-rule irc f summary_contains text="{}"',
    "fmn remove-rule irc f {}",
    "fmn rules {}",
    "fmn set-address email {}",
    "fmn set-address push {}",
    "fmn set-address irc {}",
    "fmn confirm {}",
    "fmn digest irc {}",
    "fmn digest irc 5 {}",
    "fmn templates {}",
    "fmn use-template {} irc",
    "fmn preview irc {}",
    "fmn mute {}",
    "fmn unmute {}",
    "fmn resend-code {}",
    "fmn remove-address irc {}",
    "fmn remove-address {} x",
    "fmn daily irc {}",
    "fmn daily irc 08:00 {}",
    "fmn quiet irc {}",
    "fmn quiet irc 22:00-07:00 {}",
    "fmn delivery irc {} f",
    "fmn delivery irc urgent {}",
    "fmn pending {}",
    "fmn recent {}",
    "fmn why {}",
    "fmn why https://apps.fedoraproject.org/datagrepper/v2/id?id={}",
    "fmn mute-package {}",
    f"fmn mute-package {MESSAGE_ID} {{}}",
    "fmn mute-app {}",
    "fmn pause-filter {}",
    "fmn revoke-links {}",
]
IRC_TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00")
tokens = st.one_of(
    st.sampled_from(NASTY),
    st.text(IRC_TEXT, min_size=1, max_size=30),
    st.text(st.sampled_from(string.printable.strip() + "é²٣"), min_size=1, max_size=20),
    st.sampled_from(["irc", "email", "f", "app_is", "app=koji", "packager", "1h", "5", "not"]),
)
lines = st.builds(
    lambda command, words: " ".join(["fmn", command, *words]),
    st.one_of(st.sampled_from(COMMANDS), st.text(IRC_TEXT, min_size=1, max_size=12)),
    st.lists(tokens, max_size=6),
)


@pytest.fixture(autouse=True)
def _case_figures(request: pytest.FixtureRequest, figures: Any) -> None:
    """unittest cases take no fixtures: hand them ``figures`` as an attribute."""
    if request.instance is not None:
        request.instance.figures = figures


# The harness's base class for type checking only: at run time the cases are
# mixins (see the classes below).
if TYPE_CHECKING:
    _Case = bot_conftest.FmnCase
else:
    _Case = object


def test_bot_nasty_tokens_reach_every_command() -> None:
    assert sorted(set(COMMANDS) - {t.split()[1] for t in TEMPLATES if len(t.split()) > 1}) == []


class FaultsBotCase(_Case):
    """Helpers mixed into the bot cases below (a mixin: Limnoria's harness wraps test
    methods on the class that first runs them, so cases don't inherit tests)."""

    figures: Any

    def reply(self, line: str, *, private: bool = False) -> str:
        msg = self._feedMsg(line, private=private)
        assert msg is not None, f"no reply to {line!r}"
        return str(msg.args[1])

    def problem(self, line: str, *, private: bool = False) -> tuple[str, str | None]:
        """Send ``line``; its reply, and what is wrong with how it was handled (or None)."""
        before = snapshot(self.database)
        text = self.reply(line, private=private)
        # What the user typed may be echoed back ("'fmn AError' is not an fmn command").
        echoed = text
        for token in sorted(line.split(), key=len, reverse=True):
            echoed = echoed.replace(token, "")
        if LEAK.search(echoed):
            return text, f"{line!r} -> {text!r}"
        if text.startswith("Error:"):
            after = snapshot(self.database)
            if line.split()[1:2] == ["confirm"]:
                after, before = _no_guesses(after), _no_guesses(before)
            if after != before:
                return text, f"{line!r} was refused ({text!r}) but wrote"
        return text, None

    def seed(self) -> None:
        with self.database.begin() as session:
            actor = preferences.Actor("alice")
            if not any(f.name == "f" for f in preferences.list_filters(session, actor, "irc")):
                preferences.add_filter(session, actor, "irc", "f")
                preferences.add_rule(session, actor, "irc", "f", "app_is", {"app": "koji"})


def _no_guesses(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "users": [(name, muted) for name, muted, _failures in state["users"]]}


class TestBotFuzz(FaultsBotCase, bot_conftest.FmnCase):
    """Hostile lines through every command."""

    # The hostile-URL catalogue uses json URLs to test host checks: allow json here.
    fmn_toml = f"[push]\nallowed_schemes = {json.dumps(list(PUSH.allowed_schemes))}\n"

    def test_bot_nasty_tokens_in_every_command(self) -> None:
        self.seed()
        sent = refused = 0
        problems = []
        for template in TEMPLATES:
            for token in NASTY:
                line = template.format(token)
                text, problem = self.problem(line, private="set-address" in line)
                sent += 1
                refused += text.startswith("Error:")
                if problem:
                    problems.append(problem)
                self.seed()
        self.figures(
            commands=sent,
            refused=refused,
            templates=len(TEMPLATES),
            tokens=len(NASTY),
            bugs=len(problems),
        )
        assert not problems, "\n".join(problems)

    def test_bot_hostile_push_urls_refused_with_the_reason(self) -> None:
        refused = 0
        for url, reason in HOSTILE_URLS:
            if "resolves to" in reason or any(c in url for c in "\x00\r\n "):
                continue  # fake DNS only / not sendable on one IRC line
            # Limnoria reads [brackets] as a nested command unless quoted.
            typed = f'"{url}"' if "[" in url else url
            for context in ("push", "android"):
                text, problem = self.problem(f"fmn set-address {context} {typed}", private=True)
                assert problem is None, problem
                assert text.startswith("Error: This push URL is refused") and reason in text, (
                    url,
                    text,
                )
                refused += 1
        self.figures(hostile_push_urls_refused=refused)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(lines, st.booleans())
    def test_bot_fuzzed_lines(self, line: str, private: bool) -> None:
        self.seed()
        _text, problem = self.problem(line, private=private)
        assert problem is None, problem


class TestBotAuthorization(FaultsBotCase, bot_conftest.FmnCase):
    """Bob runs every command at alice's data."""

    def test_bot_every_command_refuses_another_users_data(self) -> None:
        secret_domain = "alice-domain.example"
        with self.database.begin() as session:
            alice = preferences.Actor("alice")
            preferences.add_filter(session, alice, "irc", "alice-secret")
            preferences.add_rule(session, alice, "irc", "alice-secret", "app_is", {"app": "koji"})
            preferences.add_filter(session, alice, "email", "alice-secret")
            pending = preferences.set_destination(
                session, alice, "email", f"alice.private@{secret_domain}"
            )
            preferences.set_digest(session, alice, "irc", 30, 0)
            preferences.mute(session, alice, dt.timedelta(hours=2))
        code = pending.code
        assert code is not None
        alice_before = self.alice_state()
        self.as_user("alice", "bob")  # bob's account, even under alice's nick
        lines = {
            "help": ["fmn help"],
            "contexts": ["fmn contexts"],
            "enable": ["fmn enable email"],
            "disable": ["fmn disable irc"],
            "filters": ["fmn filters", "fmn filters irc"],
            "show": ["fmn show irc alice-secret"],
            "add-filter": ["fmn add-filter irc bobs-own"],
            "rename-filter": ["fmn rename-filter irc alice-secret mine-now"],
            "remove-filter": ["fmn remove-filter irc alice-secret"],
            "add-rule": ["fmn add-rule irc alice-secret app_is app=bodhi"],
            "remove-rule": ["fmn remove-rule irc alice-secret 1"],
            "rules": ["fmn rules"],
            "set-address": [f"fmn set-address email alice.private@{secret_domain}"],
            "confirm": [f"fmn confirm {code}"],
            "digest": ["fmn digest irc off"],
            "templates": ["fmn templates"],
            "use-template": ["fmn use-template quiet irc"],
            "preview": ["fmn preview irc alice-secret", "fmn preview irc"],
            "mute": ["fmn mute 1h"],
            "unmute": ["fmn unmute"],
            "resend-code": ["fmn resend-code email"],
            "remove-address": [
                "fmn remove-address email",
                f"fmn remove-address email alice.private@{secret_domain}",
            ],
            "daily": ["fmn daily irc 08:00 Europe/Prague", "fmn daily irc off"],
            "quiet": ["fmn quiet irc 22:00-07:00", "fmn quiet irc off"],
            "delivery": [
                "fmn delivery irc instant alice-secret",
                "fmn delivery irc urgent alice-secret",
            ],
            "pending": ["fmn pending", "fmn pending irc"],
            "recent": ["fmn recent", "fmn recent irc"],
            # Explain and act name a message; whatever bob names, only his own
            # preferences are explained or changed.
            "why": [f"fmn why {MESSAGE_ID}", f"fmn why {MESSAGE_ID} irc"],
            "mute-package": [f"fmn mute-package {MESSAGE_ID}"],
            "mute-app": [f"fmn mute-app {MESSAGE_ID}"],
            "pause-filter": [f"fmn pause-filter {MESSAGE_ID}"],
            "revoke-links": ["fmn revoke-links"],
        }
        assert set(lines) == set(COMMANDS), set(COMMANDS) ^ set(lines)
        replies = []
        for command in COMMANDS:
            for line in lines[command]:
                text = self.reply(line, private=command in ("set-address", "confirm", "contexts"))
                assert not LEAK.search(text), (line, text)
                replies.append((line, text))
                assert self.alice_state() == alice_before, f"{line!r} changed alice's data"
        for line, text in replies:
            assert secret_domain not in text or line.startswith("fmn set-address"), (line, text)
            assert "alice-secret" not in text or "There is no filter" in text, (line, text)
        answers = dict(replies)
        for line in ("show", "rename-filter", "remove-filter", "add-rule", "remove-rule"):
            text = answers[lines[line][0]]
            assert text.startswith("Error: There is no filter called 'alice-secret'"), text
        assert answers[f"fmn confirm {code}"].startswith("Error:"), answers[f"fmn confirm {code}"]
        # Bob's set-address made a destination of his own, unconfirmed; alice's code
        # still confirms only alice's.
        self.as_user("alice", "alice")
        assert self.reply(f"fmn confirm {code}", private=True).startswith("Confirmed")
        self.figures(commands=len(COMMANDS), lines=len(replies), alice_changed=0)

    def alice_state(self) -> dict[str, Any]:
        with self.database.begin() as session:
            actor = preferences.Actor("alice")
            contexts = preferences.list_contexts(session, actor)
            user = session.scalars(select(User).where(User.name == "alice")).one()
            return {
                "contexts": contexts,
                "muted": user.muted_until,
                "failures": user.confirm_failures,
            }


class TestBotConfirmation(FaultsBotCase, bot_conftest.FmnCase):
    """``fmn confirm``: single use, expiring, guessing locked out."""

    fmn_toml = "[confirmation]\nmax_failures = 5\nlockout_minutes = 15\n"

    def pending_code(self, address: str) -> str:
        self.assertNotError(f"fmn set-address email {address}", private=True)
        with self.database.begin() as session:
            codes = [
                c for c in preferences.pending_confirmation_codes(session) if c.address == address
            ]
        assert len(codes) == 1
        return codes[0].code

    def test_bot_confirmation_codes_single_use_expiring_rate_limited(self) -> None:
        # Single use.
        code = self.pending_code("first@example.org")
        self.assertRegexp(f"fmn confirm {code.lower()}", r"^Confirmed", private=True)
        again = self.reply(f"fmn confirm {code}", private=True)
        assert again.startswith("Error:"), again
        # Expiring.
        code = self.pending_code("second@example.org")
        with self.database.begin() as session:
            session.execute(
                update(Confirmation).values(expires_at=utcnow() - dt.timedelta(seconds=1))
            )
        expired = self.reply(f"fmn confirm {code}", private=True)
        assert expired.startswith("Error:") and "expired" in expired, expired
        # Guessing: wrong codes are counted, then even the right one is refused.
        with self.database.begin() as session:
            destination = session.scalars(
                select(Destination)
                .join(Preference)
                .where(Destination.address == "second@example.org")
            ).one()
            preferences.remove_destination(
                session, preferences.Actor("alice"), "email", destination.id
            )
        code = self.pending_code("third@example.org")
        guesses = []
        for number in range(5):
            guesses.append(self.reply(f"fmn confirm WRONG{number:03d}", private=True))
        assert all(g.startswith("Error:") for g in guesses)
        assert "Too many wrong codes" in guesses[-1], guesses
        locked = self.reply(f"fmn confirm {code}", private=True)
        assert "Too many wrong codes" in locked, locked
        with self.database.begin() as session:
            user = session.scalars(select(User).where(User.name == "alice")).one()
            assert user.confirm_locked_until is not None and user.confirm_locked_until > utcnow()
            user.confirm_locked_until = utcnow() - dt.timedelta(seconds=1)
        self.assertRegexp(f"fmn confirm {code}", r"^Confirmed", private=True)
        self.figures(
            wrong_guesses_before_lockout=5,
            lockout_minutes=15,
            guesses_per_day_at_most=5 * 24 * 60 // 15,
        )
