"""Issue 10's hostile bus: ``fmn-daemon run`` fed what an attacker on the bus would send.

- ``test_hostile_stream_every_tenth_delivery``: the issue's "done when". Real
  corpus messages, and every tenth delivery hostile (each kind the issue found,
  plus the kinds the fuzzer below produces), into a quorum queue with a delivery
  limit and a dead-letter exchange, as docs/reliability.md tells operators to run
  it. Every real notification is delivered exactly once (outbox == what the
  matcher expects, one mail each), the daemon is never restarted, each hostile
  delivery is logged once, and peak RSS and file descriptors stay under bounds.
  The figures go to docs/reliability.md ("Hostile stream").
- ``test_fuzzed_deliveries_never_stop_the_daemon``: hypothesis draws whole AMQP
  deliveries (bodies, headers, properties, sizes, depths), each followed by a
  valid message that must arrive, through the same daemon process.
- ``test_fuzzed_replay_files_cost_only_their_bad_lines``: hypothesis draws
  message files mixing corpus lines with hostile ones for ``fmn-daemon replay``.
- ``test_quorum_delivery_limit_ends_a_frame_level_poison_loop``: what the broker
  side does on its own, for consumers without fmn's bounded decoder.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pika
import pytest
from daemon.conftest import write_fedora_messaging_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmn_core.text import for_log, one_line

from .conftest import (
    Outgoing,
    Publisher,
    count_rows,
    env_int,
    expected_recipients,
    faults_full,
    fresh_messages,
    mails_by_message,
    outbox_rows,
    outgoing,
    upgrade_schema,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]

MIB = 1024 * 1024
#: Peak RSS the daemon must stay under, whatever arrives (a 50 MB body included).
RSS_BOUND_MB = 700
#: Open file descriptors the daemon must stay under (the unit's default soft limit is 1024).
FD_BOUND = 200

def fuzz_examples() -> int:
    """Hypothesis examples of whole deliveries (replay files get half as many)."""
    return env_int("FMN_FUZZ_EXAMPLES", 400 if faults_full() else 60)


DAEMON_EXTRA = """\
[delivery]
idle_poll_seconds = 0.2
rate_limit_per_hour = 1000000
"""


# --------------------------------------------------------------------------- helpers


def quorum_config(path: Path, amqp_url: str, queue: str, exchange: str) -> Path:
    """fedora-messaging's config for a quorum queue with a delivery limit and a DLX.

    What docs/reliability.md tells operators to configure: a frame no consumer
    can decode is dead-lettered after ``x-delivery-limit`` redeliveries.
    """
    write_fedora_messaging_config(path, amqp_url, queue, exchange, ["#"])
    text = path.read_text(encoding="utf-8")
    arguments = (
        f'arguments = {{"x-queue-type" = "quorum", "x-delivery-limit" = 5, '
        f'"x-dead-letter-exchange" = {json.dumps(exchange + ".dead")}}}'
    )
    marker = f"[queues.{json.dumps(queue)}]"
    head, tail = text.split(marker)
    tail = tail.replace("arguments = {}", arguments, 1)
    path.write_text(head + marker + tail, encoding="utf-8")
    return path


def declare_dead_letters(amqp_url: str, exchange: str) -> str:
    """The dead-letter exchange and a queue that keeps what it gets; the queue's name."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange + ".dead", exchange_type="fanout", durable=True)
        channel.queue_declare(exchange + ".dead", durable=True)
        channel.queue_bind(exchange + ".dead", exchange + ".dead")
    finally:
        connection.close()
    return exchange + ".dead"


def queue_count(amqp_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def delete_broker_objects(amqp_url: str, queues: list[str], exchanges: list[str]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for name in queues:
            channel.queue_delete(name)
        for name in exchanges:
            channel.exchange_delete(name)
    finally:
        connection.close()


def set_up_mail_watcher(database_url: str) -> str:
    """User ``watcher``, whose email gets every message; the address."""
    from fmn_core import preferences
    from fmn_core.config import Config
    from fmn_core.db import Database
    from fmn_core.preferences import Actor

    address = "watcher@example.org"
    db = Database(Config(database_url=database_url))
    try:
        with db.begin() as session:
            actor = Actor("watcher")
            preferences.add_filter(session, actor, "email", "everything")
            preferences.add_rule(
                session, actor, "email", "everything", "topic_matches", {"pattern": "*"}
            )
            pending = preferences.set_destination(session, actor, "email", address)
            if pending.code is not None:
                preferences.confirm(session, actor, pending.code)
    finally:
        db.dispose()
    return address


class Gauge:
    """Samples a process's RSS and open file descriptors from /proc while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.max_fds = max(self.max_fds, self.fds())

    def peak_rss_mb(self) -> float:
        """VmHWM: the kernel's own peak resident set size of the process."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        assert match, status
        return int(match.group(1)) / 1024

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def deep_object(depth: int, leaf: str = '"x"') -> bytes:
    return ('{"a": ' * depth + leaf + "}" * depth).encode()


def deep_headers(depth: int) -> dict[str, Any]:
    headers: Any = "leaf"
    for _ in range(depth):
        headers = {"h": headers}
    return dict(headers)


def publish_all(amqp_url: str, exchange: str, items: list[Outgoing]) -> None:
    """Publish ``items`` in order. pika's encoder recurses, so deep headers need a big
    stack and a raised recursion limit: this thread gets both (the daemon gets neither)."""
    failure: list[BaseException] = []

    def run() -> None:
        publisher = Publisher(amqp_url, exchange)
        try:
            for item in items:
                publisher.publish(item)
        except BaseException as exc:  # reported in the test's thread
            failure.append(exc)
        finally:
            publisher.close()

    old_limit = sys.getrecursionlimit()
    old_stack = threading.stack_size(256 * MIB)
    sys.setrecursionlimit(max(old_limit, 20_000))
    try:
        thread = threading.Thread(target=run, name="hostile-publisher")
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old_stack)
        sys.setrecursionlimit(old_limit)
    if failure:
        raise failure[0]


# --------------------------------------------------------------------------- hostile kinds

CONTROL = "\x1b[31m\x07\x01\r\nforged: line"


def hostile_delivery(kind: str, n: int, sample: dict[str, Any]) -> tuple[Outgoing, str | None]:
    """One hostile delivery of ``kind``; and the id its one log line names (None: no id)."""
    ident = f"hostile-{kind}-{n:03d}"
    topic = sample["topic"]
    body = json.dumps(sample["body"]).encode()
    if kind == "deep_body_10000":
        return Outgoing(ident, topic, deep_object(10_000)), ident
    if kind == "deep_body_980":
        return Outgoing(ident, topic, deep_object(980)), ident
    if kind == "deep_body_988":
        return Outgoing(ident, topic, deep_object(988)), ident
    if kind == "deep_headers_3000":
        return Outgoing(ident, topic, body, deep_headers(3000)), ident
    if kind == "huge_body_50mb":
        return Outgoing(ident, topic, b'{"blob": "' + b"x" * (50 * MIB) + b'"}'), ident
    if kind == "wide_headers":
        # Past ingest.max_header_bytes, within the broker's frame_max (128 KiB by default).
        return Outgoing(ident, topic, body, {f"k{i}": "v" * 100 for i in range(1000)}), ident
    if kind == "nan_body":
        return Outgoing(ident, topic, b'{"x": NaN, "y": Infinity}'), ident
    if kind == "infinite_number":  # JSON to Python, not to PostgreSQL: a dead message
        return Outgoing(ident, topic, b'{"n": 1e999}'), ident
    if kind == "control_id_malformed":  # refused (not an object); its id has CR/LF/ESC
        return Outgoing(ident + CONTROL, topic, b"[1, 2]"), for_log(ident + CONTROL, limit=120)
    if kind == "no_id":
        return Outgoing(None, topic, deep_object(5000)), None
    if kind == "binary_garbage":
        rng = random.Random(n)
        return Outgoing(ident, topic, bytes(rng.randrange(256) for _ in range(4096))), ident
    raise AssertionError(kind)


HOSTILE_KINDS = (
    "deep_body_10000",
    "deep_body_980",
    "deep_body_988",
    "deep_headers_3000",
    "huge_body_50mb",
    "wide_headers",
    "nan_body",
    "infinite_number",
    "control_id_malformed",
    "no_id",
    "binary_garbage",
)
#: The 50 MB ones are few: each costs the broker and the daemon 50 MB of reading.
HUGE_EVERY = 4


# --------------------------------------------------------------------------- the stream


def test_hostile_stream_every_tenth_delivery(
    empty_postgres_url: str,
    rabbitmq: Any,
    smtp_server: Any,
    make_daemon: Any,
    figures: Any,
    tmp_path: Path,
) -> None:
    url = empty_postgres_url
    upgrade_schema(url)
    address = set_up_mail_watcher(url)
    real_count = env_int("FMN_HOSTILE_REAL", 5000 if faults_full() else 900)
    real = fresh_messages(real_count, "real", seed=10)
    # Valid but hostile-looking: control characters in the id and the topic; delivered
    # (once) with clean headers and log lines.
    sample = real[0]
    tricky = [
        dict(sample, id=f"tricky-{n:02d}{CONTROL}", topic=sample["topic"] + f".x{CONTROL}")
        for n in range(5)
    ]
    deliverable = real + tricky
    expected = expected_recipients(url, deliverable)
    assert len(expected) == len(deliverable)

    rng = random.Random(1010)
    items: list[Outgoing] = []
    hostile_ids: dict[str, str | None] = {}
    kinds: Counter[str] = Counter()
    queue_of_valid = [outgoing(m) for m in deliverable]
    rng.shuffle(queue_of_valid)
    n = 0
    while queue_of_valid:
        for _ in range(9):
            if queue_of_valid:
                items.append(queue_of_valid.pop())
        kind = HOSTILE_KINDS[n % len(HOSTILE_KINDS)]
        if kind == "huge_body_50mb" and (n // len(HOSTILE_KINDS)) % HUGE_EVERY:
            kind = "deep_body_10000"
        item, logged_as = hostile_delivery(kind, n, rng.choice(real))
        items.append(item)
        hostile_ids[f"{kind}-{n}"] = logged_as
        kinds[kind] += 1
        n += 1

    fm_config = quorum_config(
        tmp_path / "quorum.toml", rabbitmq.amqp_url, rabbitmq.queue + "-q", rabbitmq.exchange
    )
    dead_letters = declare_dead_letters(rabbitmq.amqp_url, rabbitmq.exchange)
    daemon = make_daemon(url, fm_config, smtp_port=smtp_server.port, extra=DAEMON_EXTRA)
    try:
        daemon.start()
        assert daemon.process is not None
        pid = daemon.process.pid
        gauge = Gauge(pid)
        fds_at_start = gauge.fds()
        started = time.monotonic()
        publish_all(rabbitmq.amqp_url, rabbitmq.exchange, items)

        def delivered() -> bool:
            rows = outbox_rows(url)
            return len(rows) >= len(expected) and all(r[3] == "sent" for r in rows)

        try:
            wait_for(
                lambda: daemon.metrics()["fmn_messages_in_total"] >= len(items),
                timeout=300,
                what="every delivery taken",
                interval=0.5,
            )
            wait_for(delivered, timeout=300, what="every notification sent", interval=0.5)
            smtp_server.wait_for(len(expected), timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{daemon.output()[-4000:]}") from None
        seconds = time.monotonic() - started
        metrics = daemon.metrics()
        gauge.stop()
        peak_rss = gauge.peak_rss_mb()
        fds_at_end = gauge.fds()
        assert daemon.alive() and daemon.process.pid == pid and daemon.runs == 1
        assert daemon.stop() == 0, daemon.output()[-3000:]
        dead_lettered = queue_count(rabbitmq.amqp_url, dead_letters)
    finally:
        delete_broker_objects(
            rabbitmq.amqp_url, [rabbitmq.queue + "-q", dead_letters], [dead_letters]
        )
    log = daemon.output()
    rows = outbox_rows(url)
    mails = mails_by_message(smtp_server)
    expected_mails = {(one_line(message_id), address) for message_id, _u, _c in expected}

    logged_once = {
        key: log.count(f"message {shown}:") for key, shown in hostile_ids.items() if shown
    }
    no_id_lines = sum(1 for line in log.splitlines() if "message (no id):" in line)
    refused = sum(1 for k in hostile_ids if not k.startswith("infinite_number"))
    figures(
        deliveries=len(items),
        real=len(real),
        valid_with_control_characters=len(tricky),
        hostile=len(hostile_ids),
        hostile_kinds=dict(sorted(kinds.items())),
        notifications=len(rows),
        mails=sum(mails.values()),
        malformed_counter=int(metrics["fmn_messages_malformed_total"]),
        dead_messages=int(metrics["fmn_messages_dead_total"]),
        dead_lettered_by_broker=dead_lettered,
        peak_rss_mb=round(peak_rss),
        fds_start=fds_at_start,
        fds_max=gauge.max_fds,
        fds_end=fds_at_end,
        daemon_runs=daemon.runs,
        seconds=round(seconds, 1),
    )
    assert {(m, u, c) for m, u, c, _s, _a in rows} == expected
    assert all(state == "sent" for _m, _u, _c, state, _a in rows)
    assert set(mails) == expected_mails and set(mails.values()) == {1}
    assert int(metrics["fmn_messages_malformed_total"]) == refused
    assert int(metrics["fmn_messages_dead_total"]) == kinds["infinite_number"]
    assert count_rows(url, "dead_messages") == kinds["infinite_number"]
    assert {k: v for k, v in logged_once.items() if v != 1} == {}
    assert no_id_lines == kinds["no_id"]
    assert "Traceback" not in log
    assert not any(c in log for c in "\x1b\x07\x01")
    assert "\nforged: line" not in log
    assert "lost the broker connection" not in log
    assert peak_rss < RSS_BOUND_MB
    assert gauge.max_fds < FD_BOUND
    # fmn's own bounds handled everything: the broker never had to dead-letter.
    assert dead_lettered == 0


# --------------------------------------------------------------------------- fuzzing


# Any character UTF-8 can carry (so no lone surrogates), control characters included.
printable_or_not = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
header_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    printable_or_not,
    st.binary(max_size=30),
)


@st.composite
def header_tables(draw: st.DrawFn) -> dict[str, Any]:
    """Header tables: wide or deep (iteratively built up to 3,000 levels)."""
    shape = draw(st.sampled_from(["flat", "wide", "deep", "nested"]))
    if shape == "flat":
        return draw(st.dictionaries(st.text(max_size=20), header_leaf, max_size=8))
    if shape == "wide":
        width = draw(st.integers(min_value=100, max_value=2500))
        return {f"k{i}": "v" * 40 for i in range(width)}
    if shape == "deep":
        table: Any = draw(header_leaf)
        for _ in range(draw(st.integers(min_value=10, max_value=3000))):
            table = {"d": table} if draw(st.booleans()) else {"l": [table]}
        return dict(table) if isinstance(table, dict) else {"v": table}
    return draw(
        st.recursive(
            st.dictionaries(st.text(max_size=5), header_leaf, max_size=3),
            lambda inner: st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=20,
        )
    )


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Bodies: JSON of any depth or size, near-JSON, binary, other encodings."""
    shape = draw(
        st.sampled_from(
            ["object", "json", "deep", "deep_array", "huge", "binary", "constants", "text"]
        )
    )
    if shape == "object":
        leaves = st.one_of(st.none(), st.integers(), printable_or_not)
        return json.dumps(draw(st.dictionaries(printable_or_not, leaves, max_size=6))).encode()
    if shape == "json":
        value = draw(
            st.recursive(
                st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), printable_or_not),
                lambda inner: st.one_of(
                    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner)
                ),
                max_leaves=30,
            )
        )
        return json.dumps(value).encode()
    if shape == "deep":
        return deep_object(draw(st.integers(min_value=60, max_value=20_000)))
    if shape == "deep_array":
        depth = draw(st.integers(min_value=60, max_value=20_000))
        return b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
    if shape == "huge":
        size = draw(st.integers(min_value=4 * MIB, max_value=12 * MIB))
        return b'{"blob": "' + b"y" * size + b'"}'
    if shape == "binary":
        return draw(st.binary(max_size=2000))
    if shape == "constants":
        return draw(st.sampled_from([b'{"a": NaN}', b'{"a": -Infinity}', b'{"n": 1e999}']))
    return draw(printable_or_not).encode("utf-8")


@st.composite
def deliveries(draw: st.DrawFn) -> Outgoing:
    marker = f"fuzz-{uuid.uuid4().hex[:10]}"
    message_id = draw(
        st.one_of(
            st.just(marker),
            st.just(marker + CONTROL),
            st.just(marker + "x" * 230),  # AMQP short strings end at 255 bytes
            st.none(),
        )
    )
    topic = draw(
        st.one_of(
            st.just("org.fedoraproject.prod.fuzz.thing"),
            st.text(min_size=1, max_size=55).map(lambda t: "org.fuzz." + t),
        )
    )
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16", "x-nope", None]))
    return Outgoing(
        message_id, topic, draw(bodies()), draw(header_tables()), content_encoding=encoding
    )


def stored_ids(url: str, prefix: str) -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id FROM messages WHERE id LIKE :p"), {"p": prefix + "%"}
            )
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def test_fuzzed_deliveries_never_stop_the_daemon(
    empty_postgres_url: str, rabbitmq: Any, make_daemon: Any, figures: Any
) -> None:
    """Each drawn delivery is followed by a valid message, which must arrive; the daemon lives."""
    from .conftest import set_up_watcher

    url = empty_postgres_url
    upgrade_schema(url)
    set_up_watcher(url)
    daemon = make_daemon(url, rabbitmq.config_path, extra=DAEMON_EXTRA)
    daemon.start()
    assert daemon.process is not None
    pid = daemon.process.pid
    gauge = Gauge(pid)
    valid: list[dict[str, Any]] = []
    fuzzed: list[Outgoing] = []
    started = time.monotonic()

    @settings(
        max_examples=fuzz_examples(),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(delivery=deliveries())
    def one(delivery: Outgoing) -> None:
        message = fresh_messages(1, f"fuzz-valid-{len(valid):04d}", seed=len(valid))[0]
        publish_all(rabbitmq.amqp_url, rabbitmq.exchange, [delivery, outgoing(message)])
        valid.append(message)
        fuzzed.append(delivery)
        wait_for(
            lambda: message["id"] in stored_ids(url, message["id"]),
            timeout=60,
            what=f"the valid message after {delivery.message_id!r}",
            interval=0.1,
        )
        assert daemon.alive(), daemon.output()[-3000:]

    try:
        one()
        expected = expected_recipients(url, valid)
        wait_for(
            lambda: {(m, u, c) for m, u, c, s, _a in outbox_rows(url) if s == "sent"} >= expected,
            timeout=120,
            what="every valid message's notification sent",
            interval=0.5,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{daemon.output()[-3000:]}") from None
    gauge.stop()
    peak_rss = gauge.peak_rss_mb()
    assert daemon.alive() and daemon.runs == 1
    assert daemon.stop() == 0, daemon.output()[-3000:]
    log = daemon.output()
    rows = outbox_rows(url)
    fuzz_stored = stored_ids(url, "fuzz-")
    for_valid = {(m, u, c) for m, u, c, _s, _a in rows if m.startswith("fuzz-valid-")}
    assert for_valid == expected
    # Each refused delivery with an id: one line; accepted ones: none saying "dropped".
    lines = [line for line in log.splitlines() if "dropped" in line or "put aside" in line]
    wrong: dict[str, int] = {}
    for item in fuzzed:
        if item.message_id is None:
            continue
        marker = item.message_id[:15]
        seen = sum(1 for line in lines if marker in line)
        accepted = any(i.startswith(marker) for i in fuzz_stored)
        if seen != (0 if accepted else 1):
            wrong[marker] = seen
    no_id = sum(1 for item in fuzzed if item.message_id is None)
    figures(
        examples=len(fuzzed),
        accepted=sum(1 for i in fuzz_stored if not i.startswith("fuzz-valid-")),
        no_id=no_id,
        valid_delivered=len(for_valid),
        peak_rss_mb=round(peak_rss),
        fds_max=gauge.max_fds,
        seconds=round(time.monotonic() - started, 1),
    )
    assert wrong == {}, wrong
    assert sum(1 for line in lines if "message (no id):" in line) == no_id
    assert "Traceback" not in log
    assert peak_rss < RSS_BOUND_MB
    assert gauge.max_fds < FD_BOUND


hostile_lines = st.one_of(
    st.text(max_size=200).filter(lambda t: t.strip() != "" and "\n" not in t and "\r" not in t),
    st.integers(min_value=50, max_value=30_000).map(
        lambda d: '{"id": "deep", "topic": "a.b", "body": ' + "[" * d + "]" * d + "}"
    ),
    st.sampled_from(
        [
            '{"topic": "a.b", "body": {}}',
            '{"id": null, "topic": "a.b", "body": {}}',
            '{"id": 42, "topic": "a.b", "body": {}}',
            '{"id": "nan", "topic": "a.b", "body": {"x": NaN}}',
            '{"id": "inf", "topic": "a.b", "body": {"x": -Infinity}}',
            "[1, 2, 3]",
            '"just a string"',
            '{"id": "no-body", "topic": "a.b"}',
        ]
    ),
    st.integers(min_value=300_000, max_value=600_000).map(
        lambda n: '{"id": "huge", "topic": "a.b", "body": {"x": "' + "z" * n + '"}}'
    ),
)


def test_fuzzed_replay_files_cost_only_their_bad_lines(tmp_path: Path, corpus: list[str]) -> None:
    """Hostile lines among corpus lines: each costs its line, the others are stored once."""
    from fmn_core.config import Config, IngestConfig
    from fmn_core.db import Database
    from fmn_core.schema import upgrade
    from fmn_daemon.replay import replay

    runs: list[int] = []

    @settings(
        max_examples=max(1, fuzz_examples() // 2),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        picks=st.lists(st.integers(min_value=0, max_value=len(corpus) - 1), min_size=1, max_size=8),
        bad=st.lists(hostile_lines, min_size=1, max_size=6),
        seed=st.integers(min_value=0, max_value=1000),
    )
    def one(picks: list[int], bad: list[str], seed: int) -> None:
        run = len(runs)
        runs.append(run)
        url = f"sqlite:///{tmp_path / f'replay-{run}.sqlite'}"
        upgrade(url)
        limits = IngestConfig(max_body_bytes=256 * 1024, max_header_bytes=16 * 1024)
        db = Database(Config(database_url=url, ingest=limits))
        good = []
        for n, index in enumerate(picks):
            data = json.loads(corpus[index])
            data["id"] = f"good-{run}-{n}"
            good.append(json.dumps(data))
        lines = [(line, True) for line in good] + [(line, False) for line in bad]
        random.Random(seed).shuffle(lines)
        path = tmp_path / f"replay-{run}.jsonl"
        path.write_text("\n".join(line for line, _ in lines) + "\n", encoding="utf-8")
        out = io.StringIO()
        try:
            stats = replay(db, path, out, dry_run=False, as_json=True, batch_size=3)
            with db.begin() as session:
                from sqlalchemy import text

                stored = {row[0] for row in session.execute(text("SELECT id FROM messages"))}
        finally:
            db.dispose()
        records = [json.loads(line) for line in out.getvalue().splitlines()]
        bad_numbers = {n for n, (_, ok) in enumerate(lines, start=1) if not ok}
        errors = [r["line"] for r in records if "error" in r]
        assert sorted(errors) == sorted(bad_numbers)
        assert stats.errors == len(bad)
        assert {f"good-{run}-{n}" for n in range(len(good))} <= stored
        assert "None" not in stored
        ok_ids = [r["id"] for r in records if "id" in r]
        assert sorted(ok_ids) == sorted(f"good-{run}-{n}" for n in range(len(good)))

    one()
    assert runs


def test_quorum_delivery_limit_ends_a_frame_level_poison_loop(rabbitmq: Any, figures: Any) -> None:
    """A consumer without fmn's bounded decoder loses its connection on every try; the
    quorum queue's ``x-delivery-limit`` dead-letters the frame, and the queue moves on."""
    queue = rabbitmq.queue + "-qq"
    dead = declare_dead_letters(rabbitmq.amqp_url, rabbitmq.exchange)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.amqp_url))
    try:
        connection.channel().queue_declare(
            queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 3,
                "x-dead-letter-exchange": rabbitmq.exchange + ".dead",
            },
        )
    finally:
        connection.close()
    try:
        publish_to_queue = [
            Outgoing("frame-poison", queue, b"{}", deep_headers(3000)),
            Outgoing("behind-it", queue, b"{}"),
        ]
        _publish_default_exchange(rabbitmq.amqp_url, publish_to_queue)
        # A plain pika consumer in a process of its own: no bounded decoder there.
        script = textwrap.dedent(
            f"""
            import pika
            for attempt in range(10):
                try:
                    c = pika.BlockingConnection(pika.URLParameters({rabbitmq.amqp_url!r}))
                    ch = c.channel()
                    method, properties, body = ch.basic_get({queue!r})
                    if method is not None:
                        ch.basic_ack(method.delivery_tag)
                    c.close()
                    print(attempt, properties.message_id if properties else None, flush=True)
                    if properties is not None and properties.message_id == "behind-it":
                        break
                except Exception as exc:
                    print(attempt, "lost", type(exc).__name__, flush=True)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        lines = done.stdout.splitlines()
        lost = sum(1 for line in lines if "lost" in line)
        figures(rabbitmq_lost_connections=lost, consumer_log=lines)
        assert lines and lines[-1].endswith("behind-it"), done.stdout + done.stderr
        assert 1 <= lost <= 4
        assert queue_count(rabbitmq.amqp_url, dead) == 1
    finally:
        delete_broker_objects(rabbitmq.amqp_url, [queue, dead], [dead])


def _publish_default_exchange(amqp_url: str, items: list[Outgoing]) -> None:
    failure: list[BaseException] = []

    def run() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for item in items:
                channel.basic_publish(
                    "",
                    item.topic,
                    item.body,
                    pika.BasicProperties(message_id=item.message_id, headers=item.headers),
                )
        except BaseException as exc:
            failure.append(exc)
        finally:
            connection.close()

    old_limit = sys.getrecursionlimit()
    old_stack = threading.stack_size(256 * MIB)
    sys.setrecursionlimit(max(old_limit, 20_000))
    try:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old_stack)
        sys.setrecursionlimit(old_limit)
    if failure:
        raise failure[0]
