"""Hypothesis throws hostile arguments at every function of ``fmn_core.preferences``.

Types, sizes, unicode (lone surrogates, NUL, bidi controls), regex- and
glob-like text, huge numbers and durations go to the one write path the TUI and
the bot share, on SQLite and PostgreSQL. A call either works or raises a
``UserError`` (the sentence a front end shows as is); any other exception is a
bug. A call that raises has written nothing: the whole database is compared
before and after (``confirm`` alone records a wrong guess, by design, and may
change only the guess counter).
"""

from __future__ import annotations

import datetime as dt
import inspect
import string
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from core.test_authorization import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from fmn_core import preferences as prefs
from fmn_core.actions import ACTIONS
from fmn_core.config import CONTEXTS
from fmn_core.db import Database
from fmn_core.errors import UserError
from fmn_core.filters import MAX_FILTERS_PER_CONTEXT
from fmn_core.gateway import OPERATIONS
from fmn_core.models import Notification, StoredMessage, User
from fmn_core.preferences import Actor
from fmn_core.rules import default_catalog
from fmn_core.schedule import DELIVERY_MODES

from .conftest import env_int, faults_full

EXAMPLES = env_int("FMN_FAULTS_EXAMPLES", 600 if faults_full() else 80)

ALICE = Actor("alice")

#: Every character, lone surrogates and unassigned code points included.
ANY_CHAR = st.characters(exclude_categories=())
TRICKY = [
    "",
    " ",
    "\t",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udcff",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\ufeffkoji",
    "k\u0301oji",
    "\U0001d55c\U0001d560\U0001d55b\U0001d55a",
    "\uff4b\uff4f\uff4a\uff49",
    "KOJI",
    "koji ",
    "a" * 300,
    "é" * 1000,
    ".*",
    "(a+)+$",
    "[",
    "\\",
    "*",
    "?",
    "[!a-z]",
    "%s%n",
    "${jndi:ldap://x}",
    "{0}",
    "'; DROP TABLE users; --",
    "<script>",
    "../../etc/passwd",
    "file:///etc/passwd",
    "²",
    "٣",
    "0x10",
    "1e999",
    "-1",
    "9" * 40,
    "None",
    "null",
    "true",
]
texts = st.one_of(
    st.sampled_from(TRICKY),
    st.text(ANY_CHAR, max_size=40),
    st.text(st.sampled_from(".*+?[](){}^$|\\/-_:@~ " + string.ascii_letters), max_size=60),
    st.text(ANY_CHAR, min_size=150, max_size=400),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**9, 10**100]),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
junk = st.one_of(
    json_values,
    st.binary(max_size=20),
    st.just(object()),
    st.sampled_from([dt.timedelta(hours=1), dt.datetime(2030, 1, 1)]),
)
contexts = st.one_of(st.sampled_from([*CONTEXTS, "EMAIL", " irc ", "sms", ""]), texts, junk)
names = st.one_of(st.just("f"), st.just("F "), texts, junk)
durations = st.one_of(
    st.timedeltas(),
    st.sampled_from(
        [
            dt.timedelta.max,
            dt.timedelta.min,
            -dt.timedelta(days=1),
            dt.timedelta(days=999_999_999),
            dt.timedelta(0),
        ]
    ),
)
moments = st.one_of(
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
    st.sampled_from(
        [dt.datetime.max.replace(tzinfo=dt.UTC), dt.datetime.min.replace(tzinfo=dt.UTC)]
    ),
)
messages = st.one_of(
    st.just("m-1"),
    st.just("https://apps.fedoraproject.org/datagrepper/v2/id?id=m-1"),
    texts,
    junk,
)
actions = st.one_of(st.sampled_from(ACTIONS), texts, junk)
clock_times = st.one_of(
    st.none(), st.sampled_from(["08:00", "23:59", "24:00", "8", "08:60", "-1:00"]), texts, junk
)
time_zones = st.one_of(
    st.none(),
    st.sampled_from(["UTC", "Europe/Prague", "../../etc/passwd", "posix/UTC", "Factory"]),
    texts,
    junk,
)
RULES = sorted(spec.name for spec in default_catalog())
PARAMETERS = sorted({p.name for spec in default_catalog() for p in spec.parameters})
arguments = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(PARAMETERS), texts), json_values, max_size=4),
    st.dictionaries(st.sampled_from(PARAMETERS), texts, max_size=3),
    st.none(),
    junk,
    st.dictionaries(
        st.one_of(st.integers(), st.none(), st.text(max_size=3)), st.text(max_size=3), max_size=3
    ),
)
push_urls = st.builds(
    lambda scheme, host, rest: f"{scheme}://{host}{rest}",
    st.sampled_from(["ntfys", "ntfy", "json", "gotify", "file", "http", "JSON", "tgram"]),
    st.one_of(
        texts,
        st.sampled_from(
            [
                "ntfy.sh",
                "127.0.0.1",
                "[::1]",
                "0x7f000001",
                "localhost",
                "10.0.0.1",
                "169.254.169.254",
            ]
        ),
    ),
    st.one_of(st.just(""), texts.map(lambda t: "/" + t), texts.map(lambda t: "?" + t)),
)
addresses = st.one_of(texts, push_urls, junk, st.just("alice@example.org"))
actors = st.one_of(st.just(ALICE), st.builds(Actor, st.one_of(texts, junk), st.booleans()))
users = st.one_of(st.none(), st.just("alice"), st.just("bob"), texts, junk)
whole = st.one_of(st.integers(min_value=-3, max_value=12), numbers, junk)


def operation(draw: Callable[[Any], Any]) -> tuple[str, Callable[[Any], Any]]:
    """Draw one call into the preference service: its description and the call."""
    name = draw(st.sampled_from(sorted(CALLS)))
    args = CALLS[name](draw)
    actor = draw(st.one_of(st.just(ALICE), actors))
    user = draw(users) if draw(st.booleans()) else None
    function = getattr(prefs, name)

    def call(session: Any) -> Any:
        if name in NO_USER_ARGUMENT or user is None:
            return function(session, actor, *args)
        return function(session, actor, *args, user=user)

    return f"{name}(actor={actor!r}, user={user!r}, args={args!r})"[:600], call


CALLS: dict[str, Callable[[Callable[[Any], Any]], tuple[Any, ...]]] = {
    "list_contexts": lambda d: (),
    "get_context": lambda d: (d(contexts),),
    "set_context_enabled": lambda d: (d(contexts), d(st.one_of(st.booleans(), junk))),
    "set_digest": lambda d: (d(contexts), d(whole), d(whole)),
    "list_filters": lambda d: (d(contexts),),
    "get_filter": lambda d: (d(contexts), d(names)),
    "add_filter": lambda d: (d(contexts), d(names)),
    "rename_filter": lambda d: (d(contexts), d(names), d(names)),
    "remove_filter": lambda d: (d(contexts), d(names)),
    "move_filter": lambda d: (d(contexts), d(names), d(whole)),
    "set_filter_active": lambda d: (d(contexts), d(names), d(st.one_of(st.booleans(), junk))),
    "set_filter_oneshot": lambda d: (d(contexts), d(names), d(st.one_of(st.booleans(), junk))),
    "add_rule": lambda d: (
        d(contexts),
        d(names),
        d(st.one_of(st.sampled_from(RULES), texts, junk)),
        d(arguments),
    ),
    "remove_rule": lambda d: (d(contexts), d(names), d(whole)),
    "set_rule_negated": lambda d: (
        d(contexts),
        d(names),
        d(whole),
        d(st.one_of(st.booleans(), junk)),
    ),
    "set_destination": lambda d: (d(contexts), d(addresses)),
    "resend_confirmation": lambda d: (d(contexts),),
    "remove_destination": lambda d: (d(contexts), d(whole)),
    "use_template": lambda d: (
        d(st.one_of(st.sampled_from(["packager", "quiet"]), texts, junk)),
        d(contexts),
    ),
    "preview": lambda d: (d(contexts), d(names)),
    "recent_notifications": lambda d: (),
    "mute": lambda d: (d(st.one_of(durations, moments, junk)),),
    "unmute": lambda d: (),
    "confirm": lambda d: (d(st.one_of(texts, junk, st.just("ABCD-EFGH"))),),
    "first_contact": lambda d: (),
    "take_notices": lambda d: (),
    "revoke_action_links": lambda d: (),
    "pending_notifications": lambda d: (),
    "explain": lambda d: (d(messages),),
    "plan_action": lambda d: (d(messages), d(actions)),
    "act_on_notification": lambda d: (d(messages), d(actions)),
    "pause_filter": lambda d: (d(contexts), d(names), d(st.one_of(st.none(), moments, junk))),
    "set_filter_delivery": lambda d: (
        d(contexts),
        d(names),
        d(st.one_of(st.sampled_from(DELIVERY_MODES), texts, junk)),
    ),
    "set_filter_urgent": lambda d: (d(contexts), d(names), d(st.one_of(st.booleans(), junk))),
    "set_daily_digest": lambda d: (d(contexts), d(clock_times), d(time_zones)),
    "set_quiet_hours": lambda d: (d(contexts), d(clock_times), d(clock_times), d(time_zones)),
}
#: Operations that take an actor but no ``user=``.
NO_USER_ARGUMENT = frozenset({"confirm", "first_contact"})
#: Gateway operations not drawn above, and why.
NOT_DRAWN = {"list_templates": "takes no actor and no argument: the same list for everyone"}


def test_fuzz_preferences_draws_every_operation_front_ends_can_call() -> None:
    assert sorted(OPERATIONS - CALLS.keys() - NOT_DRAWN.keys()) == []
    assert sorted(CALLS.keys() - OPERATIONS) == []


def seed(db: Database) -> None:
    """Alice has filter ``f`` (with a rule) in email and an address there, and was
    notified of message ``m-1`` by it (what ``explain`` and the actions read)."""
    with db.begin() as session:
        view = prefs.get_context(session, ALICE, "email")
        if not any(f.name == "f" for f in view.filters):
            if len(view.filters) >= MAX_FILTERS_PER_CONTEXT:
                prefs.remove_filter(session, ALICE, "email", view.filters[-1].name)
            prefs.add_filter(session, ALICE, "email", "f")
            prefs.add_rule(session, ALICE, "email", "f", "app_is", {"app": "koji"})
        if not view.destinations:
            prefs.set_destination(session, ALICE, "email", "alice@example.org")
        if session.get(StoredMessage, "m-1") is None:
            body = {"tag": "f40-updates", "name": "kernel", "owner": "alice"}
            session.add(
                StoredMessage(
                    id="m-1", topic="org.fedoraproject.prod.buildsys.tag", body=body, headers={}
                )
            )
            session.flush()
            alice = session.scalars(select(User.id).where(User.name == "alice")).one()
            session.add(
                Notification(message_id="m-1", user_id=alice, context="email", filter_name="f")
            )


def without_guesses(state: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without the wrong-guess counter (the one thing ``confirm`` may write)."""
    return {**state, "users": [(name, muted) for name, muted, _failures in state["users"]]}


@pytest.mark.slow
def test_fuzz_preferences_only_user_errors_and_nothing_written(db: Database, figures: Any) -> None:
    seen: dict[str, int] = {}
    refused: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        seed(db)
        described, call = operation(data.draw)
        name = described.split("(", 1)[0]
        seen[name] = seen.get(name, 0) + 1
        before = snapshot(db)
        try:
            with db.begin() as session:
                call(session)
        except UserError as error:
            refused[type(error).__name__] = refused.get(type(error).__name__, 0) + 1
            text = str(error)
            assert text and "Traceback" not in text, described
            after = snapshot(db)
            if name == "confirm":
                assert without_guesses(after) == without_guesses(before), described
            else:
                assert after == before, f"{described} raised {error!r} but wrote"
        except Exception as error:
            raise AssertionError(f"{described} raised {type(error).__name__}: {error}") from error

    check()
    figures(
        backend=db.engine.dialect.name,
        examples=sum(seen.values()),
        operations=len(seen),
        refused=sum(refused.values()),
        refusals=dict(sorted(refused.items())),
    )


#: Sane arguments for each call; the sweep below replaces one at a time with a hostile value.
SANE: dict[str, tuple[Any, ...]] = {
    "get_context": ("email",),
    "set_context_enabled": ("email", True),
    "set_digest": ("email", 5, 0),
    "list_filters": ("email",),
    "get_filter": ("email", "f"),
    "add_filter": ("email", "g"),
    "rename_filter": ("email", "f", "g"),
    "remove_filter": ("email", "f"),
    "move_filter": ("email", "f", 1),
    "set_filter_active": ("email", "f", True),
    "set_filter_oneshot": ("email", "f", False),
    "add_rule": ("email", "f", "app_is", {"app": "bodhi"}),
    "remove_rule": ("email", "f", 1),
    "set_rule_negated": ("email", "f", 1, True),
    "set_destination": ("push", "ntfys://ntfy.sh/alice-topic"),
    "resend_confirmation": ("email",),
    "remove_destination": ("email", 999_999),
    "use_template": ("quiet", "irc"),
    "preview": ("email", "f"),
    "mute": (dt.timedelta(hours=1),),
    "confirm": ("WRONGCODE",),
    "explain": ("m-1",),
    "plan_action": ("m-1", "mute-package"),
    "act_on_notification": ("m-1", "mute-package"),
    "pause_filter": ("email", "f", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
    "set_filter_delivery": ("email", "f", "digest"),
    "set_filter_urgent": ("email", "f", True),
    "set_daily_digest": ("email", "08:00", "Europe/Prague"),
    "set_quiet_hours": ("email", "22:00", "07:00", "Europe/Prague"),
}
#: Sane keyword arguments; the sweep gives each, in turn, a hostile value too.
SANE_KEYWORDS: dict[str, dict[str, Any]] = {
    "add_filter": {"oneshot": True},
    "add_rule": {"negated": True, "expires_at": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)},
    "set_digest": {"at": "08:00", "timezone": "UTC"},
    "plan_action": {"context": "email", "days": 3},
    "act_on_notification": {"context": "email", "choice": "kernel", "days": 3},
    "pending_notifications": {"context": "email", "limit": 5},
    "recent_notifications": {"context": "email", "limit": 5},
    "preview": {"limit": 5},
}
#: Gateway operations with no argument to sweep.
NO_ARGUMENTS = frozenset(
    {"first_contact", "list_contexts", "list_templates", "revoke_action_links", "take_notices"}
    | {"unmute"}
)


def test_fuzz_preferences_sweeps_every_argument_front_ends_can_give() -> None:
    swept = SANE.keys() | SANE_KEYWORDS.keys() | NO_ARGUMENTS
    assert sorted(OPERATIONS - swept) == []
    for name in OPERATIONS - NO_ARGUMENTS:
        parameters = inspect.signature(getattr(prefs, name)).parameters
        positional = [p for p in parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        keywords = {p.name for p in parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert len(SANE.get(name, ())) == len(positional) - 2, name  # session, actor
        assert sorted(keywords - SANE_KEYWORDS.get(name, {}).keys() - {"user"}) == [], name


HOSTILE: list[Any] = [
    "\ud800",
    "x\udcff",
    "\x00",
    "a\x00b",
    "",
    " ",
    "\u202e",
    "a" * 5000,
    "(a+)+$",
    "²",
    "app=koji",
    "ntfys://ntfy.sh/\ud800",
    "json://[::1]:8080/x",
    None,
    0,
    -1,
    2**70,
    1.5,
    float("nan"),
    True,
    [],
    {},
    ["a"],
    {"a": 1},
    {1: "x", "app": "y"},
    b"bytes",
    object(),
    dt.timedelta.max,
    dt.timedelta.min,
    dt.timedelta(days=999_999_999),
    dt.datetime(2030, 1, 1),
    dt.datetime.max.replace(tzinfo=dt.UTC),
]


Call = tuple[str, list[Any], dict[str, Any]]


def sweep(db: Database, calls: Iterable[Call]) -> tuple[int, int, list[str]]:
    """Make each call in turn: only ``UserError`` may come out, and a refused call
    writes nothing. How many calls, how many refused, and what went wrong."""
    count = refused = 0
    failures: list[str] = []
    seed(db)
    state = snapshot(db)
    for name, args, kwargs in calls:
        described = f"{name}{tuple(args)!r} {kwargs!r}"[:300]
        count += 1
        try:
            with db.begin() as session:
                getattr(prefs, name)(session, ALICE, *args, **kwargs)
        except UserError:
            refused += 1
            after = snapshot(db)
            same = (
                without_guesses(after) == without_guesses(state)
                if name == "confirm"
                else after == state
            )
            if not same:
                failures.append(f"{described}: refused but wrote")
            state = after
        except Exception as error:
            failures.append(f"{described}: {type(error).__name__}: {str(error)[:120]}")
        else:
            seed(db)
            state = snapshot(db)
    return count, refused, failures


@pytest.mark.slow
def test_fuzz_preferences_hostile_values_in_every_argument(db: Database, figures: Any) -> None:
    """Each argument of each call, in turn, gets each hostile value; the rest are sane."""

    def calls() -> Iterator[Call]:
        for name in sorted(SANE.keys() | SANE_KEYWORDS.keys()):
            sane, sane_keywords = SANE.get(name, ()), SANE_KEYWORDS.get(name, {})
            for position in [*range(len(sane)), *sane_keywords]:
                for value in HOSTILE:
                    args, kwargs = list(sane), dict(sane_keywords)
                    if isinstance(position, int):
                        args[position] = value
                    else:
                        kwargs[position] = value
                    yield name, args, kwargs

    count, refused, failures = sweep(db, calls())
    figures(backend=db.engine.dialect.name, calls=count, refused=refused, bugs=len(failures))
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_fuzz_preferences_hostile_addresses_in_every_context(db: Database, figures: Any) -> None:
    """The sweep above sets push addresses; each context checks its own kind of address."""
    calls: Iterator[Call] = (
        ("set_destination", [context, value], {})
        for context in sorted(CONTEXTS)
        for value in [*HOSTILE, *TRICKY]
    )
    count, refused, failures = sweep(db, calls)
    figures(backend=db.engine.dialect.name, calls=count, refused=refused, bugs=len(failures))
    assert not failures, "\n".join(failures)
