"""A thousand malformed deliveries, straight to RabbitMQ with pika, with valid ones between.

``fmn-daemon run`` (PostgreSQL, a queue of its own) gets 1,000 deliveries it must
drop — bodies that are not JSON, not UTF-8, in an unknown content encoding, JSON
that is not an object, known schemas with wrongly typed bodies, headers of the
wrong types, no ``message_id``, NUL characters in the id or the topic (PostgreSQL text cannot hold
them), 1 MiB of garbage — shuffled among well-formed messages and deliveries that
are odd but acceptable (an unknown schema header, which fedora-messaging itself
reads as a base message; 1 MiB bodies). Expected:

- the daemon keeps running, never stalls, and exits 0 on SIGTERM afterwards;
- ``fmn_messages_malformed_total`` on ``/metrics`` is exactly 1,000, and each
  malformed delivery has exactly one log line naming its id (the 100 without an
  id: one "(no id)" line each), and no traceback;
- every acceptable message is stored and notified as ``fmn_core.matcher`` says.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fedora_messaging import message as fm_message

from fmn_core.errors import MalformedMessage
from fmn_core.messages import facts_of, load_message

from .conftest import (
    Outgoing,
    Publisher,
    corpus_messages,
    count_rows,
    expected_recipients,
    outbox_rows,
    outgoing,
    set_up_watcher,
    upgrade_schema,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]

MIB = 1024 * 1024
#: Malformed deliveries per kind; 1,000 in all.
MALFORMED = {
    "not_json": 345,
    "not_utf8": 150,
    "bad_encoding": 50,
    "not_object": 100,
    "wrong_types": 150,
    "no_id": 100,
    "bad_headers": 50,
    "nul_id": 25,
    "nul_topic": 25,
    "huge_garbage": 5,
}
VALID = 200
UNKNOWN_SCHEMA = 50
HUGE_VALID = 3

DELIVERY = """\
[delivery]
idle_poll_seconds = 0.2
rate_limit_per_hour = 1000000
"""


def _corrupt(value: Any) -> Any:
    """The same shape with every leaf of the wrong type."""
    if isinstance(value, dict):
        return {key: _corrupt(item) for key, item in value.items()} if value else [1]
    if isinstance(value, list):
        return {"not": "a list"}
    if isinstance(value, str):
        return 12345
    if isinstance(value, bool) or value is None:
        return "neither"
    return "not a number"


def wrongly_typed(corpus: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(schema name, body)`` pairs: corpus bodies of known schemas, every value mistyped,
    which that schema refuses."""
    found = []
    for message in corpus:
        loaded = load_message(dict(message, id="probe"))
        if type(loaded) is fm_message.Message:
            continue
        name = fm_message.get_name(type(loaded))
        body = _corrupt(message["body"])
        headers = {"fedora_messaging_schema": name}
        try:
            load_message(
                {"id": "probe", "topic": message["topic"], "headers": headers, "body": body}
            )
        except MalformedMessage:
            found.append((message["topic"], {"schema": name, "body": body}))
    assert len(found) >= 10, "too few schema classes among the corpus messages"
    return [(topic, data) for topic, data in found]


def deliveries(rng: random.Random) -> tuple[list[Outgoing], dict[str, int], list[dict[str, Any]]]:
    """The shuffled deliveries, the malformed ids by kind, and the acceptable messages."""
    corpus = corpus_messages()
    bad: list[Outgoing] = []
    kinds: dict[str, int] = {}

    def ident(kind: str, number: int) -> str:
        kinds[f"bad-{kind}-{number:04d}"] = 1
        return f"bad-{kind}-{number:04d}"

    def sample() -> dict[str, Any]:
        return rng.choice(corpus)

    def truncated(raw: bytes) -> bytes:
        # A proper prefix of a JSON object is never JSON.
        return raw[: rng.randrange(1, len(raw))]

    garbage: list[Callable[[int], bytes]] = [
        lambda n: b"{not json",
        lambda n: b"",
        lambda n: b"}{",
        lambda n: truncated(json.dumps(sample()["body"]).encode()),
        lambda n: bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 200))),
        lambda n: b'{"a": 1,}',
        lambda n: b"NaN-ish " * n,
    ]
    for n in range(MALFORMED["not_json"]):
        m = sample()
        bad.append(Outgoing(ident("not_json", n), m["topic"], garbage[n % len(garbage)](n)))
    for n in range(MALFORMED["not_utf8"]):
        m = sample()
        latin1 = ('{"text": "caf\u00e9 ' + str(n) + '"}').encode("latin-1")
        body = latin1 if n % 2 else b'{"a": "\xff\xfe\xfd"}'
        bad.append(Outgoing(ident("not_utf8", n), m["topic"], body))
    for n in range(MALFORMED["bad_encoding"]):
        m = sample()
        bad.append(
            Outgoing(
                ident("bad_encoding", n),
                m["topic"],
                json.dumps(m["body"]).encode(),
                content_encoding=f"x-no-such-codec-{n}",
            )
        )
    scalars = [b"[]", b"[1, 2, 3]", b"42", b'"a string"', b"null", b"true", b"-0.5e9"]
    for n in range(MALFORMED["not_object"]):
        bad.append(Outgoing(ident("not_object", n), sample()["topic"], scalars[n % len(scalars)]))
    typed = wrongly_typed(corpus)
    for n in range(MALFORMED["wrong_types"]):
        topic, data = typed[n % len(typed)]
        bad.append(
            Outgoing(
                ident("wrong_types", n),
                topic,
                json.dumps(data["body"]).encode(),
                {"fedora_messaging_schema": data["schema"]},
            )
        )
    for n in range(MALFORMED["no_id"]):
        m = sample()
        bad.append(Outgoing(None if n % 2 else "", m["topic"], json.dumps(m["body"]).encode()))
    for n in range(MALFORMED["bad_headers"]):
        m = sample()
        headers = {"sent-at": n, "fedora_messaging_severity": 99 + n}
        bad.append(
            Outgoing(ident("bad_headers", n), m["topic"], json.dumps(m["body"]).encode(), headers)
        )
    for n in range(MALFORMED["nul_id"]):
        m = sample()
        bad.append(
            Outgoing(ident("nul_id", n) + "\x00nul", m["topic"], json.dumps(m["body"]).encode())
        )
    for n in range(MALFORMED["nul_topic"]):
        m = sample()
        bad.append(
            Outgoing(ident("nul_topic", n), m["topic"] + "\x00.nul", json.dumps(m["body"]).encode())
        )
    for n in range(MALFORMED["huge_garbage"]):
        bad.append(
            Outgoing(ident("huge_garbage", n), sample()["topic"], b'{"x": "' + b"\xff" * MIB + b'"')
        )
    assert len(bad) == sum(MALFORMED.values()) == 1000

    good: list[dict[str, Any]] = []
    for n in range(VALID):
        good.append(dict(sample(), id=f"good-{n:04d}-{uuid.uuid4().hex[:8]}"))
    for n in range(UNKNOWN_SCHEMA):
        m = sample()
        good.append(
            {
                "id": f"unknown-schema-{n:04d}",
                "topic": m["topic"],
                "body": m["body"],
                "headers": {"fedora_messaging_schema": f"no.such.schema:V{n}"},
            }
        )
    for n in range(HUGE_VALID):
        good.append(
            {
                "id": f"huge-valid-{n}",
                "topic": "org.fedoraproject.prod.faults.huge",
                "headers": {},
                "body": {"blob": "é" * (MIB // 2), "n": n},
            }
        )
    everything = bad + [outgoing(m) for m in good]
    rng.shuffle(everything)
    return everything, kinds, good


_DROPPED = re.compile(
    r"message (bad-[a-z0-9_]+-\d{4})[^:]*: (?:malformed, dropped|dropped|the database)"
)


def dropped_lines(log: str) -> Iterator[str]:
    for line in log.splitlines():
        if "dropped" in line:
            yield line


def test_malformed_deliveries_are_counted_logged_once_and_never_stop_the_daemon(
    empty_postgres_url: str, rabbitmq: Any, make_daemon: Any, figures: Any
) -> None:
    url = empty_postgres_url
    rng = random.Random(1000)
    upgrade_schema(url)
    set_up_watcher(url)
    items, malformed_ids, good = deliveries(rng)
    expected = expected_recipients(url, good)
    assert len(expected) == len(good)  # the watcher gets every acceptable message

    daemon = make_daemon(url, rabbitmq.config_path, extra=DELIVERY)
    daemon.start()
    started = time.monotonic()
    publisher = Publisher(rabbitmq.amqp_url, rabbitmq.exchange)
    try:
        for item in items:
            publisher.publish(item)
    finally:
        publisher.close()

    def processed() -> bool:
        metrics = daemon.metrics()
        return bool(metrics["fmn_messages_in_total"] >= len(items) and rabbitmq.queue_depth() == 0)

    try:
        wait_for(processed, timeout=90, what="every delivery taken off the queue", interval=0.5)
        wait_for(
            lambda: count_rows(url, "messages") >= len(good),
            timeout=60,
            what="every acceptable message stored",
            interval=0.5,
        )
        wait_for(
            lambda: (
                all(r[3] == "sent" for r in outbox_rows(url))
                and len(outbox_rows(url)) >= len(expected)
            ),
            timeout=60,
            what="every notification sent",
            interval=0.5,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{daemon.output()[-3000:]}") from None
    seconds = time.monotonic() - started
    metrics = daemon.metrics()
    assert daemon.alive(), daemon.output()[-3000:]
    assert daemon.stop() == 0, daemon.output()[-3000:]
    log = daemon.output()

    lines = list(dropped_lines(log))
    per_id = Counter(m.group(1) for line in lines if (m := _DROPPED.search(line)))
    no_id_lines = sum(1 for line in lines if "(no id)" in line)
    logged_twice = {i: n for i, n in per_id.items() if n > 1}
    not_logged = set(malformed_ids) - set(per_id)
    rows = outbox_rows(url)
    stored = count_rows(url, "messages")
    by_kind = Counter(i.split("-")[1] for i in per_id)
    figures(
        published=len(items),
        malformed=sum(MALFORMED.values()),
        valid=VALID,
        unknown_schema_accepted=UNKNOWN_SCHEMA,
        huge_valid_accepted=HUGE_VALID,
        malformed_counter=int(metrics["fmn_messages_malformed_total"]),
        without_schema_counter=int(metrics["fmn_messages_without_schema_total"]),
        logged_by_kind=dict(sorted(by_kind.items())),
        no_id_lines=no_id_lines,
        logged_twice=len(logged_twice),
        not_logged=len(not_logged),
        stored=stored,
        notifications=len(rows),
        db_errors=int(metrics["fmn_db_errors_total"]),
        seconds=round(seconds, 1),
    )
    assert int(metrics["fmn_messages_in_total"]) == len(items)
    assert int(metrics["fmn_messages_malformed_total"]) == 1000
    assert not not_logged, sorted(not_logged)[:10]
    assert not logged_twice, logged_twice
    assert no_id_lines == MALFORMED["no_id"]
    assert "Traceback" not in log
    # Only PostgreSQL catches a NUL in an id or topic: each such delivery costs a failed
    # batch (retried one message at a time) and counts as a database error, at most twice.
    nul = MALFORMED["nul_id"] + MALFORMED["nul_topic"]
    assert int(metrics["fmn_db_errors_total"]) <= 2 * nul
    assert stored == len(good)
    assert {(m, u, c) for m, u, c, _s, _a in rows} == expected
    assert all(state == "sent" for _m, _u, _c, state, _a in rows)
    # The odd-but-acceptable ones are stored as base messages.
    assert facts_of(load_message(good[VALID])).schema == "base.message"
