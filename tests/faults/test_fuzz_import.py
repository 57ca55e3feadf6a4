"""Hypothesis throws hostile preference files at ``fmn-daemon prefs import``'s core.

Each example is a whole file, as bytes: real exports with one part replaced by
something hostile (wrong types, NaN and Infinity, huge numbers, control
characters, lone surrogates, feed tokens another user holds, deep nesting), raw
junk, bracket bombs, truncated and non-UTF-8 text. It goes through
``parse_preferences`` and ``import_preferences`` in one unit of work, on SQLite
and PostgreSQL, and must end one of two ways:

- a clean import: the users it names are there as the file says, or
- ``ImportRejected`` naming a path, and the database exactly as before (all or
  nothing; no half-written import).

Any other exception (``RecursionError``, a database error, "internal error") is a
bug.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from core.test_authorization import snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from fmn_core import preferences as prefs
from fmn_core.db import Database
from fmn_core.errors import ImportRejected
from fmn_core.models import Destination
from fmn_core.portability import export_preferences, import_preferences, parse_preferences
from fmn_core.preferences import Actor

from .conftest import env_int, faults_full

EXAMPLES = env_int("FMN_FAULTS_EXAMPLES", 400 if faults_full() else 60)

#: A file fmn itself would export: the base most mutations start from.
BASE: dict[str, Any] = {
    "users": [
        {
            "name": "alice",
            "contexts": {
                "email": {
                    "enabled": True,
                    "destinations": ["alice@example.org"],
                    "digest": {"minutes": 60, "count": 5, "at": "08:00", "timezone": "UTC"},
                    "quiet_hours": {"from": "22:00", "to": "07:00", "timezone": "Europe/Prague"},
                    "filters": [
                        {
                            "name": "my builds",
                            "active": True,
                            "oneshot": False,
                            "delivery": "digest",
                            "urgent": True,
                            # Past: the file stays valid whenever the test runs.
                            "paused_until": "2026-01-01T00:00:00+00:00",
                            "rules": [
                                {"rule": "app_is", "args": {"app": "koji"}},
                                {"rule": "triggered_by_me", "args": {}, "negated": True},
                                {
                                    "rule": "package_involved",
                                    "args": {"package": "kernel"},
                                    "negated": True,
                                    "expires_at": "2026-01-01T00:00:00+00:00",
                                },
                            ],
                        }
                    ],
                },
                "rss": {"destinations": ["A" * 32]},
            },
        },
        {"name": "bob", "contexts": {"irc": {"destinations": ["bob"], "filters": []}}},
    ]
}

HOSTILE_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63,
    10**40,
    1.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "\x1b[31m",
    "\u202e",
    "\r\nBcc: x",
    "a" * 5000,
    [],
    {},
    [[[[]]]],
    {"": {"": {}}},
    ["a"] * 50,
    "ALICETOKEN" * 4,
]
#: JSON values of any shape, bounded.
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True),
        st.text(st.characters(exclude_categories=()), max_size=30),
        st.sampled_from(HOSTILE_VALUES),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=10), children, max_size=4),
    ),
    max_leaves=20,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*path, index)))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real file with one part replaced (or one key added) by something hostile."""
    document = copy.deepcopy(BASE)
    path = draw(st.sampled_from(_paths(document)))
    value = draw(st.one_of(st.sampled_from(HOSTILE_VALUES), json_values))
    if not path:
        document = value
    else:
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) or not isinstance(parent, dict):
            parent[path[-1]] = value
        else:
            parent[draw(st.text(max_size=8))] = value
    text = json.dumps(document, allow_nan=True, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """Brackets nested around a real file's values, from harmless to deadly."""
    depth = draw(st.sampled_from([5, 20, 31, 33, 100, 985, 1000, 5000, 50_000]))
    opener = draw(st.sampled_from(["[", '{"a":']))
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + draw(st.sampled_from(["1", '"x"', "NaN", ""])) + closer * depth
    where = draw(st.sampled_from(["top", "args", "filters", "destinations"]))
    if where == "top":
        return inner.encode()
    document = copy.deepcopy(BASE)
    slot = "SLOT-PLACEHOLDER"
    email = document["users"][0]["contexts"]["email"]
    if where == "args":
        email["filters"][0]["rules"][0]["args"]["app"] = slot
    elif where == "filters":
        email["filters"] = slot
    else:
        email["destinations"] = slot
    return json.dumps(document).replace(json.dumps(slot), inner).encode()


junk = st.one_of(
    st.binary(max_size=300),
    st.text(st.characters(exclude_categories=()), max_size=200).map(
        lambda t: t.encode("utf-8", "surrogatepass")
    ),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"{}",
            b'{"users": NaN}',
            b'{"users": Infinity}',
            b'{"users": [], "users": [1]}',
            b'{"users": [',
            b'\xef\xbb\xbf{"users": []}',
            b'{"users": [' + b"9" * 5000 + b"]}",
            b'{"users": "\\ud800"}',
        ]
    ),
    st.binary(max_size=200).map(lambda b: json.dumps(BASE).encode()[: len(b)]),
)
files = st.one_of(mutated(), nested(), junk, st.just(json.dumps(BASE).encode()))


def seed(db: Database) -> None:
    """An existing user holding a feed token, so files can collide with it."""
    with db.begin() as session:
        if not prefs.list_contexts(session, Actor("carol")):
            import_preferences(
                session,
                {
                    "users": [
                        {
                            "name": "carol",
                            "contexts": {"live": {"destinations": ["ALICETOKEN" * 4]}},
                        }
                    ]
                },
            )


@pytest.mark.slow
def test_fuzz_import_files_clean_import_or_clear_refusal(db: Database, figures: Any) -> None:
    outcomes: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(files)
    def check(raw: bytes) -> None:
        seed(db)
        before = snapshot(db)
        try:
            data = parse_preferences(raw)
            with db.begin() as session:
                summary = import_preferences(session, data, resolve=False)
        except ImportRejected as error:
            outcomes["refused"] = outcomes.get("refused", 0) + 1
            assert error.problems and all(path for path, _ in error.problems)
            assert str(error).startswith("Nothing was imported:")
            assert snapshot(db) == before, f"{raw[:200]!r} was refused but wrote"
            return
        except Exception as error:
            raise AssertionError(
                f"{raw[:200]!r} raised {type(error).__name__}: {str(error)[:300]}"
            ) from error
        outcomes["imported"] = outcomes.get("imported", 0) + 1
        with db.begin() as session:
            exported = {u["name"]: u for u in export_preferences(session)["users"]}
            tokens = list(
                session.scalars(
                    select(Destination.feed_token).where(Destination.feed_token.is_not(None))
                )
            )
        assert len(tokens) == len(set(tokens)), "two destinations share a feed token"
        for user in data["users"]:
            stored = exported.get(user["name"])
            assert stored is not None or not user.get("contexts"), user["name"]
            for context, wanted in user.get("contexts", {}).items():
                assert stored is not None and context in stored["contexts"]
                got = stored["contexts"][context]
                assert len(got["destinations"]) == len(wanted.get("destinations", []))
                assert len(got["filters"]) == len(wanted.get("filters", []))
        assert summary.users == len(data["users"])

    check()
    figures(backend=db.engine.dialect.name, examples=sum(outcomes.values()), **outcomes)
    assert outcomes.get("refused", 0) > 0
