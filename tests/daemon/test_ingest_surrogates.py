"""A bus message with a lone surrogate escape is delivered, each one read as U+FFFD.

A producer that cuts UTF-16 text cuts an emoji in half (``"fix \\ud83d"``). The
standard library's JSON reader accepts such a body; PostgreSQL's ``json`` type
keeps the escape, which ``jsonb`` and PostgreSQL's JSON operators refuse, and text
read back with one cannot be encoded in UTF-8. Ingest replaces each lone surrogate
with the replacement character, on both databases; a pair (a whole emoji) is left
as it is. A replayed file and a requeued dead message are read the same way.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
from sqlalchemy import select, text

from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.messages import loads_strict, parse_line, replace_lone_surrogates
from fmn_core.models import Notification, StoredMessage
from fmn_core.outbox import claim_due
from fmn_core.preferences import Actor
from fmn_core.rendering import render
from fmn_daemon.ingest import read_delivery
from fmn_daemon.metrics import Metrics

from .conftest import RabbitMQ, publish
from .test_consumer import Running, count, koji, wait_until
from .test_poison import consumer_for

PAGURE_PR = "org.fedoraproject.prod.pagure.pull-request.new"
ALICE = Actor("alice")
GRINNING = "\U0001f600"


def strings(value: Any) -> Iterator[str]:
    """Every key and string in parsed JSON, all the way down."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def has_surrogate(value: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in value)


# The walker on parsed JSON.


def test_replace_lone_surrogates_in_keys_and_strings_at_any_depth() -> None:
    value = {
        "title": "fix \ud83d",
        "emoji": f"ok {GRINNING}",
        "k\udc00ey": [1, 2.5, None, True, "\udfff end", {"inner\ud800": ["a", ["\ud83d\ud83d"]]}],
        "plain": {"n": 10**30, "s": "caf\xe9"},
    }
    cleaned, replaced = replace_lone_surrogates(value)
    assert cleaned == {
        "title": "fix \ufffd",
        "emoji": f"ok {GRINNING}",
        "k\ufffdey": [
            1,
            2.5,
            None,
            True,
            "\ufffd end",
            {"inner\ufffd": ["a", ["\ufffd\ufffd"]]},
        ],
        "plain": {"n": 10**30, "s": "caf\xe9"},
    }
    assert replaced == 5
    # Keys keep their order, the renamed one in its place.
    assert list(cleaned) == ["title", "emoji", "k\ufffdey", "plain"]


def test_replace_lone_surrogates_leaves_clean_data_as_it_is() -> None:
    value = {"a": [f"x{GRINNING}", {"b": "caf\xe9"}], "c": 1}
    before = copy.deepcopy(value)
    cleaned, replaced = replace_lone_surrogates(value)
    assert (cleaned, replaced) == (before, 0)


@pytest.mark.parametrize("value", ["\ud83d", ["\ud83d"], {"\ud83d": "\ud83d"}])
def test_replace_lone_surrogates_at_the_top(value: Any) -> None:
    cleaned, replaced = replace_lone_surrogates(value)
    assert not any(has_surrogate(s) for s in strings(cleaned))
    assert "\ufffd" in "".join(strings(cleaned))
    assert replaced >= 1


def test_replace_lone_surrogates_nested_far_beyond_the_recursion_limit() -> None:
    deep: Any = "\ud800"
    for n in range(20_000):
        deep = [deep] if n % 2 else {"k\udc00": deep}
    cleaned, replaced = replace_lone_surrogates(deep)
    assert replaced == 10_001
    for _ in range(20_000):
        cleaned = cleaned[0] if isinstance(cleaned, list) else cleaned["k\ufffd"]
    assert cleaned == "\ufffd"


# read_delivery: the parsed body and the text stored agree.


def read(body: bytes, encoding: str = "utf-8") -> tuple[Any, str]:
    properties = pika.BasicProperties(message_id="m-1", headers={}, content_encoding=encoding)
    message, body_json = read_delivery("org.fedoraproject.test.koji.x", properties, body)
    return message.body, body_json


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"title": "fix \\ud83d"}', {"title": "fix \ufffd"}),
        (b'{"title": "fix \\uDE00 x"}', {"title": "fix \ufffd x"}),
        (
            b'{"k\\udc00": ["\\ud83d\\ud83d", "\\ud83d\\ude00"]}',
            {"k\ufffd": ["\ufffd\ufffd", GRINNING]},
        ),
        # An escaped backslash before the escape: the pair after it is lone.
        (b'{"t": "\\\\ud83d\\udc00"}', {"t": "\\ud83d\ufffd"}),
        # Beside what only the standard library reads (19 digits), in either order.
        (
            b'{"n": 12345678901234567890, "t": "\\ud800"}',
            {"n": 12345678901234567890, "t": "\ufffd"},
        ),
    ],
)
def test_read_delivery_replaces_lone_surrogates_and_stores_that(body: bytes, expected: Any) -> None:
    data, body_json = read(body)
    assert data == expected
    assert loads_strict(body_json) == expected
    body_json.encode("utf-8")  # what a database driver does with it


@pytest.mark.parametrize(
    "body",
    [
        b'{"title": "fix \\ud83d\\ude00"}',
        b'{"title": "caf\\u00e9 \\\\ud83d"}',
        b'{"n": 12345678901234567890, "t": "\\ud83d\\ude00"}',
        '{"title": "fix \U0001f600"}'.encode(),
    ],
)
def test_read_delivery_keeps_the_text_when_nothing_is_lone(body: bytes) -> None:
    data, body_json = read(body)
    assert body_json == body.decode()
    assert data == json.loads(body)


def test_read_delivery_replaces_a_lone_surrogate_another_encoding_decodes_to() -> None:
    # UTF-7 decodes "+2AA-" to a lone surrogate character, not an escape.
    data, body_json = read(b'{"t": "a+2AA-b", "u": "\\ud800"}', "utf-7")
    assert data == {"t": "a\ufffdb", "u": "\ufffd"}
    assert loads_strict(body_json) == data


# Through the real consumer, on both databases.


@pytest.fixture
def database(committed: Database) -> Database:
    """A committed database: the consumer runs its own transactions."""
    return committed


def pagure_pr_body(corpus: list[str], title: str) -> bytes:
    """A corpus Pagure pull request's body as JSON, with ``title`` written in as is.

    ``title`` is JSON string text, escapes included: a lone surrogate cannot be
    written by ``json.dumps`` from a Python string that UTF-8 can carry.
    """
    data = next(
        d
        for d in map(json.loads, corpus)
        if d["topic"] == PAGURE_PR and "title" in d["body"].get("pullrequest", {})
    )
    body = copy.deepcopy(data["body"])
    body["pullrequest"]["title"] = "@TITLE@"
    body["k\U0001f600ey"] = {"deeper": [{"\\udc00": "tail"}]}
    raw = json.dumps(body).encode()
    raw = raw.replace(b'"@TITLE@"', b'"' + title.encode() + b'"')
    # The key written above as an escaped backslash becomes a lone surrogate escape.
    raw = raw.replace(b'"\\\\udc00"', b'"lone key \\udc00"')
    return raw


@pytest.mark.rabbitmq
def test_consumer_delivers_a_message_with_a_lone_surrogate_on_both_databases(
    database: Database, rabbitmq: RabbitMQ, corpus: list[str]
) -> None:
    with database.begin() as session:
        preferences.add_filter(session, ALICE, "email", "prs")
        preferences.add_rule(session, ALICE, "email", "prs", "app_is", {"app": "pagure"})
        preferences.add_filter(session, ALICE, "irc", "koji")
        preferences.add_rule(session, ALICE, "irc", "koji", "app_is", {"app": "koji"})
    cut = pagure_pr_body(corpus, "fix \\ud83d cut")
    whole = pagure_pr_body(corpus, "fix \\ud83d\\ude00 whole")
    headers = {"fedora_messaging_schema": "pagure.pull-request.new"}
    cut_id, whole_id = f"cut-{uuid.uuid4()}", f"whole-{uuid.uuid4()}"
    metrics = Metrics()
    consumer = consumer_for(database, rabbitmq, metrics)
    consumer.connect()
    # Batch-mates on either side, all in one batch.
    publish(rabbitmq, [koji(n) for n in range(3)])
    rabbitmq.publish_raw(cut, routing_key=PAGURE_PR, headers=headers, message_id=cut_id)
    rabbitmq.publish_raw(whole, routing_key=PAGURE_PR, headers=headers, message_id=whole_id)
    publish(rabbitmq, [koji(n) for n in range(3, 6)])
    run = Running(consumer)
    try:
        wait_until(lambda: count(database, Notification) == 8, timeout=30)
        wait_until(lambda: rabbitmq.queue_depth() == 0)
    finally:
        run.halt()
    assert metrics.get("messages_dead") == 0
    assert metrics.get("messages_malformed") == 0
    assert metrics.get("db_errors") == 0
    assert count(database, StoredMessage) == 8

    with database.begin() as session:
        stored = {m.id: m for m in session.scalars(select(StoredMessage))}
        # The text each database holds, parsed strictly: valid JSON, surrogates replaced.
        held = {
            row.id: loads_strict(row.body)
            for row in session.execute(
                text("SELECT id, CAST(body AS TEXT) AS body FROM messages WHERE id IN (:a, :b)"),
                {"a": cut_id, "b": whole_id},
            )
        }
        if database.engine.dialect.name == "postgresql":
            # ``jsonb`` reads the stored text again, as anything querying the body would.
            session.execute(text("SELECT body::jsonb FROM messages")).all()
        recipients = set(
            session.execute(select(Notification.message_id, Notification.context)).all()
        )
    assert {(cut_id, "email"), (whole_id, "email")} <= recipients

    cut_body, whole_body = stored[cut_id].body, stored[whole_id].body
    assert cut_body["pullrequest"]["title"] == "fix \ufffd cut"
    assert cut_body[f"k{GRINNING}ey"] == {"deeper": [{"lone key \ufffd": "tail"}]}
    assert whole_body["pullrequest"]["title"] == f"fix {GRINNING} whole"
    assert whole_body[f"k{GRINNING}ey"] == {"deeper": [{"lone key \ufffd": "tail"}]}
    assert held == {cut_id: cut_body, whole_id: whole_body}
    for message in (stored[cut_id], stored[whole_id]):
        for value in [*strings(message.body), message.summary or "", message.url or ""]:
            assert not has_surrogate(value), value
    assert (stored[cut_id].summary or "").endswith("fix \ufffd cut")

    # What the bot and the TUI show, and what a feed or a mail is rendered from.
    with database.begin() as session:
        views = preferences.recent_notifications(session, ALICE, context="email")
        hits = preferences.preview(session, ALICE, "email", "prs")
        claimed = claim_due(session, worker="t", contexts=["email"], limit=10, lease_seconds=60)
    shown = {v.message_id: v.summary for v in views}
    assert shown[cut_id].endswith("fix \ufffd cut")
    assert shown[whole_id].endswith(f"fix {GRINNING} whole")
    assert {h.message_id: h.summary for h in hits}[cut_id] == shown[cut_id]
    (rendered,) = [render(c) for c in claimed if c.message_id == cut_id]
    assert "fix \ufffd cut" in rendered.subject and "fix \ufffd cut" in rendered.text
    for value in (*shown.values(), rendered.subject, rendered.text, rendered.short):
        value.encode("utf-8")


def test_a_replayed_or_requeued_line_reads_a_lone_surrogate_as_a_delivery_does() -> None:
    # ``fmn-daemon replay`` and ``messages requeue`` read lines with ``parse_line``.
    line = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "topic": PAGURE_PR,
            "headers": {},
            "body": {"title": "fix \ud83d", "emoji": GRINNING, "\udc00key": ["\udfff"]},
        }
    )
    assert "\\ud83d" in line  # json.dumps escapes the lone half: the line holds an escape
    body = parse_line(line).body
    assert body["title"] == "fix \ufffd"
    assert body["emoji"] == GRINNING
    assert body["\ufffdkey"] == ["\ufffd"]
    assert not any(has_surrogate(s) for s in strings(body))
