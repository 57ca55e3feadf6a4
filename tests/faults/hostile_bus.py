"""Helpers of the hostile-bus tests (issue 10): hostile deliveries, publishing, gauges.

Shared by ``test_hostile.py`` (the stream, the quorum queue) and ``test_fuzz_bus.py``
(hypothesis over deliveries and replay files).
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pika
from daemon.conftest import write_fedora_messaging_config

from fmn_core.text import for_log

from .conftest import (
    Outgoing,
    Publisher,
    env_int,
    faults_full,
)

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
                assert preferences.confirm(session, actor, pending.code).confirmed
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
    if kind == "infinite_number":  # infinity to Python, which no encoder writes back: refused
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


def publish_to_default_exchange(amqp_url: str, items: list[Outgoing]) -> None:
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
