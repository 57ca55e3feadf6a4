"""Benchmark item 4, "Latency": from a message on the bus to the mail server taking the e-mail.

Run ``python benchmarks/latency.py`` from the project's virtualenv (PostgreSQL and
RabbitMQ on loopback); ``--quick`` publishes for 10 s instead of 30 s (what
``nox -s bench`` runs).

Set-up, all on loopback:

- an ``aiosmtpd`` SMTP server in a process of its own, reporting to this one
  when it accepts each mail and the mail's ``X-Fedmsg-Id`` header (the bus
  message's id, which ``fmn_core.rendering`` puts on every notification);
- a fresh PostgreSQL database with a few users (10 by default), imported
  through ``fmn_core.portability.import_preferences`` with a confirmed e-mail
  address each, and one ``topic_matches`` filter per corpus topic, every
  topic given to exactly one user: each published message becomes exactly one
  e-mail;
- the real daemon, ``fmn-daemon run --no-http`` as a subprocess (consumer and
  senders), with a generated configuration: that database, SMTP to the server
  above, and ``delivery.rate_limit_per_hour`` raised so that a user getting
  several mails a second is not switched to 15-minute digests (a safeguard
  that is not what this measures).

After a short warm-up, corpus messages (unique ids, fedora-messaging's headers)
are published at a steady rate for 30 s: 50 messages/s, then 500 (``--rates``),
each rate with its own baseline run and its own daemon. Latency is the time from
just before each ``basic_publish`` to the SMTP server accepting its mail; both
clocks are ``time.monotonic`` (the system's monotonic clock, the same in both
processes). Reported: p50, p90, p99, max, and
any message whose mail never came (or came twice).

Baselines in the same run, before the daemon starts: the least a bus-to-mail
bridge can take here, a bare relay thread (pika consumer on its own queue, no
database) under the same schedule, twice: once opening an ``smtplib`` connection
per mail, once keeping one connection open for every mail (as fmn's e-mail
transport does), which is the fair comparison.

CPU per mail: the daemon's user and system CPU time (``/proc/<pid>/stat``) from
the end of the warm-up to the last mail, divided by the mails; the relay's is its
thread's CPU time (``time.thread_time``) over its run.

Targets: p99 <= 50 ms at 50 messages/s, <= 100 ms at 500 messages/s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pika  # noqa: E402
from backlog import DaemonLog  # noqa: E402
from common import (  # noqa: E402
    BenchBroker,
    BenchDatabase,
    Template,
    corpus_templates,
    cpu_seconds,
    draw,
    machine_busy_seconds,
    print_services,
    print_target,
    write_fmn_config,
)
from machine import print_machine  # noqa: E402

from fmn_core.config import Config  # noqa: E402
from fmn_core.db import Database  # noqa: E402
from fmn_core.matcher import Matcher  # noqa: E402
from fmn_core.portability import import_preferences  # noqa: E402

#: p99 targets in milliseconds, by publishing rate (messages/s).
TARGETS_P99_MS: dict[float, float] = {50.0: 50.0, 500.0: 100.0}


# --------------------------------------------------------------------------- SMTP


@dataclass
class MailLog:
    """When each message id's mail was accepted (``time.monotonic``), thread-safe."""

    arrived: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: The same moments on the wall clock (``time.time``), to compare with the database's.
    arrived_wall: dict[str, float] = field(default_factory=dict)
    #: Message ids in the order their first mail came (``wait_for`` reads only what is new).
    order: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def note(self, message_id: str, now: float, wall: float) -> None:
        """``message_id``'s mail was accepted at ``now`` (monotonic) and ``wall``."""
        with self.changed:
            times = self.arrived[message_id]
            if not times:
                self.order.append(message_id)
            times.append(now)
            self.arrived_wall.setdefault(message_id, wall)
            self.changed.notify_all()

    def wait_for(self, ids: Sequence[str], timeout: float) -> None:
        """Block until every id has a mail, or ``timeout`` seconds passed.

        Each wake-up looks only at the mails that came since the last one: checking
        every id on each mail held this process's interpreter lock, which the SMTP
        server shares, for longer the further behind the mails were.
        """
        with self.changed:
            pending = set(ids).difference(self.arrived)
            seen = len(self.order)

            def done() -> bool:
                nonlocal seen
                pending.difference_update(self.order[seen:])
                seen = len(self.order)
                return not pending

            self.changed.wait_for(done, timeout=timeout)


def fedmsg_id(data: bytes) -> str | None:
    """The ``X-Fedmsg-Id`` header's value, read off the header lines as they are.

    Parsing the whole header block with ``email.parser`` for every mail cost the
    SMTP server (which shares this process's interpreter lock with the publisher)
    more than the rest of its work on the mail; fmn and the relays write this
    header on one line.
    """
    for line in data.splitlines():
        if not line.strip():
            return None  # the end of the headers
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"x-fedmsg-id":
            return value.strip().decode("ascii", "replace")
    return None


class _Handler:
    """The SMTP server's: each mail's ``X-Fedmsg-Id`` and the moments it was accepted."""

    def __init__(self, out: Any) -> None:
        self.out = out

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.out.send((fedmsg_id(data) or "(none)", time.monotonic(), time.time()))
        return "250 Message accepted for delivery"


def _serve_smtp(port: int, out: Any) -> None:
    """The benchmark's SMTP server, in a process of its own (see ``SmtpServer``)."""
    from aiosmtpd.controller import Controller

    controller = Controller(_Handler(out), hostname="127.0.0.1", port=port)
    controller.start()
    threading.Event().wait()  # until terminated


class SmtpServer:
    """aiosmtpd in a process of its own, reporting each mail to a ``MailLog``.

    It ran in this process before, where it shared the interpreter lock with the
    publisher and the bookkeeping: every mail's replies waited for them. Now only
    a thread here receives (id, monotonic, wall) for each mail; ``time.monotonic``
    is the same clock in both processes (Linux ``CLOCK_MONOTONIC``). Fmn and the
    bare relays use the same server.
    """

    def __init__(self, mails: MailLog) -> None:
        import multiprocessing

        self.mails = mails
        self.port = free_port()
        receiving, sending = multiprocessing.Pipe(duplex=False)
        self._receiving = receiving
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve_smtp, args=(self.port, sending), daemon=True
        )
        self._reader = threading.Thread(target=self._read, name="smtp-reader", daemon=True)

    def start(self) -> None:
        self._process.start()
        self._reader.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                smtplib.SMTP("127.0.0.1", self.port, timeout=2).quit()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the SMTP server did not start") from None
                time.sleep(0.1)

    def _read(self) -> None:
        while True:
            try:
                message_id, at, wall = self._receiving.recv()
            except (EOFError, OSError):
                return
            self.mails.note(message_id, at, wall)

    def cpu_seconds(self) -> float:
        """The server process's CPU-seconds so far (NaN once it is gone)."""
        pid = self._process.pid
        used = cpu_seconds(pid) if pid is not None else None
        return float("nan") if used is None else used

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(10)


@dataclass
class Usage:
    """What a run cost the SMTP server and the whole machine, beside its own CPU.

    The server stands in for a mail relay on another host, yet here it shares the
    machine's cores with the daemon, PostgreSQL and RabbitMQ: at 500 mails/s its
    CPU per mail says how much of the machine was left for the rest. Taken over a
    whole run: for fmn, the daemon's start, warm-up and stop are in it too.
    """

    server_s: float
    busy_s: float
    wall_s: float

    @classmethod
    def start(cls, server: SmtpServer) -> Usage:
        return cls(server.cpu_seconds(), machine_busy_seconds(), time.monotonic())

    def since(self, server: SmtpServer) -> Usage:
        return Usage(
            server.cpu_seconds() - self.server_s,
            machine_busy_seconds() - self.busy_s,
            time.monotonic() - self.wall_s,
        )

    def line(self, mails: int) -> str:
        cores = os.cpu_count() or 1
        return (
            f"SMTP server {self.server_s * 1000 / max(1, mails):.2f} ms CPU per mail; "
            f"machine busy {self.busy_s / max(self.wall_s, 1e-9) / cores * 100:.0f}% "
            f"of {cores} cores over {self.wall_s:.1f} s"
        )


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- publishing


def publish_steadily(
    broker: BenchBroker,
    templates: Sequence[Template],
    items: Sequence[tuple[int, str]],
    rate: float,
    wall: dict[str, float] | None = None,
) -> dict[str, float]:
    """Publish ``items`` at ``rate`` per second; when each was published (monotonic).

    ``wall`` (if given) gets the same moments on the wall clock.
    """
    sent: dict[str, float] = {}
    with broker.publisher() as publish:
        start = time.monotonic()
        for i, (index, message_id) in enumerate(items):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[message_id] = time.monotonic()
            if wall is not None:
                wall[message_id] = time.time()
            publish(templates[index], message_id, None)
    return sent


@dataclass
class Latencies:
    """Latencies in milliseconds of the mails that came, and what went wrong."""

    values: list[float]
    missing: int
    duplicated: int

    def percentile(self, p: float) -> float:
        if not self.values:
            return float("nan")
        ordered = sorted(self.values)
        rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))  # nearest rank
        return ordered[rank]

    def line(self) -> str:
        if not self.values:
            return "no mail arrived"
        return (
            f"{len(self.values):,} mails: p50 {self.percentile(50):.0f} ms, "
            f"p90 {self.percentile(90):.0f} ms, p99 {self.percentile(99):.0f} ms, "
            f"max {max(self.values):.0f} ms, mean {statistics.fmean(self.values):.0f} ms"
        )


def measure(mails: MailLog, sent: dict[str, float]) -> Latencies:
    """Match mails to publications by message id."""
    values: list[float] = []
    missing = duplicated = 0
    with mails.lock:
        for message_id, at in sent.items():
            times = mails.arrived.get(message_id)
            if not times:
                missing += 1
                continue
            duplicated += len(times) > 1
            values.append((times[0] - at) * 1000)
    return Latencies(values, missing, duplicated)


# --------------------------------------------------------------------------- baseline


@dataclass
class RelayRun:
    """A baseline relay's latencies and its thread's CPU time."""

    latencies: Latencies
    cpu_seconds: float


def relay(
    broker: BenchBroker,
    smtp_port: int,
    stop: threading.Event,
    started: threading.Event,
    reuse: bool,
    cpu: list[float],
) -> None:
    """A bare bus-to-mail bridge: consume, send one mail per message.

    ``reuse`` keeps one SMTP connection open for every mail; otherwise each mail
    opens (and quits) its own.
    """
    began = time.thread_time()
    connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=100)
    kept: list[smtplib.SMTP] = []

    def on_message(ch: Any, method: Any, properties: Any, _body: bytes) -> None:
        text = (
            f"From: relay@example.org\r\nTo: someone@example.org\r\n"
            f"Subject: {method.routing_key}\r\nX-Fedmsg-Id: {properties.message_id}\r\n"
            f"\r\nA message.\r\n"
        )
        if reuse:
            if not kept:
                kept.append(smtplib.SMTP("127.0.0.1", smtp_port, timeout=15))
            kept[0].sendmail("relay@example.org", ["someone@example.org"], text)
        else:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=15) as smtp:
                smtp.sendmail("relay@example.org", ["someone@example.org"], text)
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(broker.queue, on_message)
    started.set()
    try:
        while not stop.is_set():
            connection.process_data_events(time_limit=0.05)
    finally:
        for smtp in kept:
            smtp.quit()
        connection.close()
        cpu.append(time.thread_time() - began)


def run_baseline(
    templates: Sequence[Template],
    items: Sequence[tuple[int, str]],
    rate: float,
    smtp_port: int,
    mails: MailLog,
    *,
    reuse: bool,
) -> RelayRun:
    """The relay's latencies under the same schedule, and its CPU time."""
    cpu: list[float] = []
    with BenchBroker() as broker:
        stop, started = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=relay,
            args=(broker, smtp_port, stop, started, reuse, cpu),
            name="relay",
            daemon=True,
        )
        thread.start()
        started.wait(30)
        try:
            sent = publish_steadily(broker, templates, items, rate)
            mails.wait_for(list(sent), timeout=30)
        finally:
            stop.set()
            thread.join(30)
    return RelayRun(measure(mails, sent), cpu[0] if cpu else float("nan"))


@dataclass
class Split:
    """Each mail's latency cut where its outbox row was written (wall clocks, ms)."""

    to_row: list[float]
    from_row: list[float]

    def line(self) -> str:
        if not self.to_row:
            return "no rows found"
        probe = Latencies(self.to_row, 0, 0)
        rest = Latencies(self.from_row, 0, 0)
        return (
            f"bus -> outbox row written (consumer, matcher, writer) p50 "
            f"{probe.percentile(50):.0f} ms, p99 {probe.percentile(99):.0f} ms; "
            f"row written -> SMTP accepted (commit, wake, claim, render, send) p50 "
            f"{rest.percentile(50):.0f} ms, p99 {rest.percentile(99):.0f} ms"
        )


def split_at_the_outbox(db_url: str, published: dict[str, float], mails: MailLog) -> Split:
    """Where each measured mail's time went: before its outbox row was written, and after."""
    from sqlalchemy import select

    from fmn_core.models import Notification

    database = Database(Config(database_url=db_url))
    try:
        with database.begin() as session:
            written = dict(
                session.execute(
                    select(Notification.message_id, Notification.created_at).where(
                        Notification.message_id.in_(list(published))
                    )
                ).all()
            )
    finally:
        database.dispose()
    to_row: list[float] = []
    from_row: list[float] = []
    with mails.lock:
        for message_id, at in published.items():
            row = written.get(message_id)
            accepted = mails.arrived_wall.get(message_id)
            if row is None or accepted is None:
                continue
            to_row.append((row.timestamp() - at) * 1000)
            from_row.append((accepted - row.timestamp()) * 1000)
    return Split(to_row, from_row)


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # utime and stime are fields 14 and 15 of stat(5); after "pid (comm)" they are 11, 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- fmn


def bench_preferences(topics: Sequence[str], users: int) -> dict[str, Any]:
    """``users`` users with a confirmed address each; every topic given to exactly one of them."""
    filters: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for i, topic in enumerate(topics):
        filters[i % users].append(
            {
                "name": f"topic {i}",
                "rules": [{"rule": "topic_matches", "args": {"pattern": topic}}],
            }
        )
    return {
        "users": [
            {
                "name": f"benchuser{u:02d}",
                "contexts": {
                    "email": {
                        "enabled": True,
                        "destinations": [f"benchuser{u:02d}@example.org"],
                        "filters": filters[u],
                    }
                },
            }
            for u in range(users)
        ]
    }


def single_recipient_templates(db_url: str, templates: Sequence[Template]) -> list[int]:
    """Indexes of the templates that reach exactly one user (so one mail each)."""
    database = Database(Config(database_url=db_url))
    try:
        with database.begin() as session:
            matcher = Matcher.load(session)
    finally:
        database.dispose()
    return [i for i, t in enumerate(templates) if len(matcher.recipients(t.facts)) == 1]


def run_fmn(
    templates: Sequence[Template],
    items: Sequence[tuple[int, str]],
    warmup: Sequence[tuple[int, str]],
    rate: float,
    config: Path,
    fm_config: Path,
    broker: BenchBroker,
    mails: MailLog,
    workdir: Path,
    settle: float,
    db_url: str,
    *,
    split_processes: bool = False,
) -> tuple[Latencies, Latencies, int | None, list[str], float, Split]:
    """Start the daemon, warm it up, publish steadily, stop it.

    ``split_processes``: the consumer (``run --no-deliver``) and the senders (``run
    --no-consume``) as two daemons on the same database, as a busy deployment runs
    them, each with its own interpreter lock; the senders wake on the consumer's
    commits through PostgreSQL's NOTIFY.

    Returns the warm-up's and the measured latencies, the exit status (the worst of
    the daemons'), the log's tail, the daemons' CPU seconds from the end of the
    warm-up to the last mail, and the measured mails' latency split where their
    outbox rows were written.
    """
    env = {**os.environ, "XDG_STATE_HOME": str(workdir / "state"), "FMN_LOG_LEVEL": "INFO"}
    command = [
        sys.executable,
        "-m",
        "fmn_daemon.cli",
        "--config",
        str(config),
        "run",
        "--fedora-messaging-config",
        str(fm_config),
        "--no-http",
        "--startup-timeout",
        "120",
    ]
    roles = [("consumer", ["--no-deliver"]), ("senders", ["--no-consume"])]
    daemons: list[tuple[subprocess.Popen[str], DaemonLog]] = []
    for name, flags in roles if split_processes else [("daemon", [])]:
        daemon = subprocess.Popen(
            [*command, *flags], env=env, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        log = DaemonLog(daemon.stderr, workdir / f"{name}.log", ("daemon ready",))
        daemons.append((daemon, log))
    try:
        deadline = time.monotonic() + 150
        for daemon, log in daemons:
            while "daemon ready" not in log.seen:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start:\n  " + "\n  ".join(log.tail[-15:]))
                time.sleep(0.05)
        warm_sent = publish_steadily(broker, templates, warmup, rate)
        mails.wait_for(list(warm_sent), timeout=30)
        cpu_before = sum(process_cpu_seconds(daemon.pid) for daemon, _ in daemons)
        wall: dict[str, float] = {}
        sent = publish_steadily(broker, templates, items, rate, wall)
        mails.wait_for(list(sent), timeout=settle)
        cpu = sum(process_cpu_seconds(daemon.pid) for daemon, _ in daemons) - cpu_before
    finally:
        codes: list[int | None] = []
        for daemon, _ in daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
        for daemon, log in daemons:
            try:
                codes.append(daemon.wait(60))
            except subprocess.TimeoutExpired:
                daemon.kill()
                codes.append(daemon.wait(10))
            log.join(5)
    code = next((c for c in codes if c != 0), 0)
    tail = [line for _, log in daemons for line in log.tail]
    split = split_at_the_outbox(db_url, wall, mails)
    return measure(mails, warm_sent), measure(mails, sent), code, tail, cpu, split


def _senders_config(database_url: str, port: int) -> Config:
    """The senders' configuration for the sender-only modes: the sink's port, no rate limit."""
    from fmn_core.config import DeliveryConfig, HttpConfig, SmtpConfig

    return Config(database_url=database_url).replace(
        smtp=SmtpConfig(host="127.0.0.1", port=port, timeout_seconds=5),
        http=HttpConfig(public_url="https://fmn.example.org", secret_key="benchmark"),
        delivery=DeliveryConfig(rate_limit_per_hour=1_000_000),
    )


def _email_users(db: Database) -> list[int]:
    """Ten users, each with one confirmed e-mail address; their ids."""
    from fmn_core.models import Destination, Preference, User

    with db.begin() as session:
        users = [User(name=f"user{n}") for n in range(10)]
        session.add_all(users)
        session.flush()
        for user in users:
            preference = Preference(user_id=user.id, context="email", enabled=True)
            session.add(preference)
            session.flush()
            session.add(
                Destination(
                    preference_id=preference.id, address=f"{user.name}@example.org", confirmed=True
                )
            )
        return [user.id for user in users]


def sender_cpu(single: int, due: int) -> None:
    """The senders' CPU per mail in this process, without the consumer or the bus.

    The real ``Senders`` on a fresh PostgreSQL database (10 users with a confirmed
    address), mailing aiosmtpd's ``Sink`` in a subprocess (so the server's CPU is
    not counted); ``time.process_time()`` around the rounds only. "One at a time"
    commits one row and runs one round, ``single`` times, as at a low rate; "due at
    once" drains ``due`` rows committed together, as under load.
    """
    import asyncio
    import uuid

    from fmn_core.models import Notification, StoredMessage
    from fmn_daemon.delivery import Senders
    from fmn_daemon.metrics import Metrics

    templates, _ = corpus_templates()
    port = free_port()
    sink = ["-c", "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{port}"]
    server = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", *sink])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                smtplib.SMTP("127.0.0.1", port, timeout=2).quit()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the SMTP sink did not start") from None
                time.sleep(0.1)
        with BenchDatabase() as bench:
            config = _senders_config(bench.url, port)
            db = Database(config)
            user_ids = _email_users(db)

            def add_rows(count: int, start: int) -> None:
                with db.begin() as session:
                    for n in range(start, start + count):
                        template = templates[n % len(templates)]
                        message = StoredMessage(
                            id=str(uuid.uuid4()),
                            topic=template.topic,
                            body=json.loads(template.body),
                            headers=template.headers,
                        )
                        session.add(message)
                        session.flush()
                        session.add(
                            Notification(
                                message_id=message.id,
                                user_id=user_ids[n % len(user_ids)],
                                context="email",
                                filter_name="benchmark",
                            )
                        )

            senders = Senders(db, config, Metrics())

            async def measure() -> tuple[float, float]:
                one = 0.0
                for n in range(single):
                    add_rows(1, n)
                    started = time.process_time()
                    # As ``run`` does: codes are looked for every poll interval only.
                    handled, _more = await senders._start_round(codes=n == 0)
                    await senders._await_inflight(None)
                    one += time.process_time() - started
                    assert handled == 1, handled
                add_rows(due, single)
                started = time.process_time()
                handled = await senders.drain(600)
                many = time.process_time() - started
                assert handled == due, handled
                return one, many

            one, many = asyncio.run(measure())
            db.engine.dispose()
        print(
            f"  senders, one row at a time: {single} mails, "
            f"{one * 1000 / single:.2f} ms CPU per mail"
        )
        print(f"  senders, {due:,} rows due at once: {many * 1000 / due:.3f} ms CPU per mail")
    finally:
        server.terminate()
        server.wait(10)


def _smtp_sink() -> tuple[subprocess.Popen[bytes], int]:
    """aiosmtpd's ``Sink`` in a subprocess (its CPU is not this process's); its port."""
    port = free_port()
    sink = ["-c", "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{port}"]
    server = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", *sink])
    deadline = time.monotonic() + 20
    while True:
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=2).quit()
            return server, port
        except OSError:
            if time.monotonic() > deadline:
                server.terminate()
                raise SystemExit("the SMTP sink did not start") from None
            time.sleep(0.1)


def _write_steadily(url: str, user_ids: list[int], rate: float, seconds: float) -> None:
    """Commit outbox rows at ``rate`` per second for ``seconds``, announcing each commit.

    Runs in a process of its own, as the consumer's writer would: one commit every
    10 ms with the rows due by then, ``created_at`` set just before the commit.
    """
    import uuid

    from fmn_core.models import Notification, StoredMessage, utcnow
    from fmn_core.outbox import announce_new_rows

    templates, _ = corpus_templates()
    db = Database(Config(database_url=url))
    start = time.monotonic()
    written = 0
    total = int(rate * seconds)
    while written < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if due > written:
            with db.begin() as session:
                messages = []
                for n in range(written, due):
                    template = templates[n % len(templates)]
                    messages.append(
                        StoredMessage(
                            id=str(uuid.uuid4()),
                            topic=template.topic,
                            body=json.loads(template.body),
                            headers=template.headers,
                        )
                    )
                session.add_all(messages)
                session.flush()
                now = utcnow()
                session.add_all(
                    Notification(
                        message_id=message.id,
                        user_id=user_ids[n % len(user_ids)],
                        context="email",
                        filter_name="benchmark",
                        created_at=now,
                    )
                    for n, message in zip(range(written, due), messages, strict=True)
                )
                announce_new_rows(session)
            written = due
        time.sleep(max(0.0, start + (written / rate) + 0.01 - time.monotonic()))
    db.dispose()


def sender_steady(rate: float, seconds: float) -> None:
    """The real ``Senders.run`` alone, under outbox rows committed at a steady ``rate``.

    Rows are committed (and announced) by a separate process every 10 ms, for one
    second more than ``seconds``, which is not counted (the senders open their SMTP
    sessions and database connections then); the SMTP server is aiosmtpd's
    ``Sink`` in another process. Latency is each row's ``sent_at``
    minus its ``created_at`` (committed -> outcome recorded, so it includes the
    SMTP send and the commit of the outcome); CPU is this process's
    ``time.process_time()`` while the senders run, per mail.
    """
    import asyncio
    import datetime as dt
    import multiprocessing

    from sqlalchemy import select

    from fmn_core.models import Notification
    from fmn_daemon import cli
    from fmn_daemon.delivery import Senders
    from fmn_daemon.metrics import Metrics

    # As ``fmn-daemon run`` sets it, where it does.
    switch = getattr(cli, "THREAD_SWITCH_SECONDS", None)
    if switch is not None:
        sys.setswitchinterval(switch)
    server, port = _smtp_sink()
    try:
        with BenchDatabase() as bench:
            config = _senders_config(bench.url, port)
            db = Database(config)
            user_ids = _email_users(db)
            total = int(rate * (seconds + 1))
            senders = Senders(db, config, Metrics())

            async def run() -> float:
                stop = asyncio.Event()
                task = asyncio.create_task(senders.run(stop))
                await asyncio.sleep(0.5)  # listening
                started = time.process_time()
                writer = multiprocessing.get_context("spawn").Process(
                    target=_write_steadily, args=(bench.url, user_ids, rate, seconds + 1)
                )
                writer.start()
                deadline = time.monotonic() + seconds + 120
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    if not writer.is_alive() and senders.metrics.get("notifications_sent") >= total:
                        break
                cpu = time.process_time() - started
                stop.set()
                await task
                writer.join(10)
                return cpu

            cpu = asyncio.run(run())
            with db.begin() as session:
                rows = session.execute(
                    select(Notification.created_at, Notification.sent_at, Notification.state)
                ).all()
            db.dispose()
        # The first second opens the SMTP sessions and the pool's connections: not counted.
        first = min(row.created_at for row in rows) + dt.timedelta(seconds=1)
        values = [
            (row.sent_at - row.created_at).total_seconds() * 1000
            for row in rows
            if row.sent_at is not None and row.created_at >= first
        ]
        latencies = Latencies(values, sum(1 for row in rows if row.state != "sent"), 0)
        print(f"  senders at {rate:g} rows/s for {seconds:g} s: {latencies.line()}")
        print(
            f"  rows not sent: {latencies.missing}; senders' CPU {cpu:.1f} s, "
            f"{cpu * 1000 / max(1, len(values)):.2f} ms per mail"
        )
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates",
        default="50,500",
        help="messages per second, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to publish")
    parser.add_argument("--users", type=int, default=10, help="users with an e-mail address")
    parser.add_argument("--quick", action="store_true", help="publish for 10 s (nox -s bench)")
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="seconds to wait for the last mails after publishing",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare relays")
    parser.add_argument(
        "--split",
        action="store_true",
        help="also run the consumer and the senders as two daemons (a busy deployment)",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=None,
        help="delivery.senders for the daemon (default: fmn's default)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON (for plots)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument(
        "--sender-cpu",
        action="store_true",
        help="only measure the senders' CPU per mail in this process (no bus, no consumer)",
    )
    parser.add_argument(
        "--sender-steady",
        type=float,
        metavar="RATE",
        help="only run the senders in this process under outbox rows committed at RATE/s",
    )
    args = parser.parse_args(argv)
    if args.sender_steady:
        print_machine()
        print_services()
        print(f"\nSenders alone under a steady {args.sender_steady:g} rows/s\n")
        sender_steady(args.sender_steady, 10.0 if args.quick else args.seconds)
        return 0
    if args.sender_cpu:
        print_machine()
        print_services()
        print("\nSenders' CPU per mail (in process; SMTP sink in a subprocess)\n")
        sender_cpu(400, 3000)
        return 0
    seconds = 10.0 if args.quick else args.seconds
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    print_machine()
    print_services()
    print(
        f"\nLatency: {', '.join(f'{r:g}' for r in rates)} messages/s for {seconds:g}s each, "
        f"{args.users} users with a confirmed e-mail address; PostgreSQL, RabbitMQ and SMTP "
        "on loopback\n"
    )
    templates, _ = corpus_templates()
    topics = sorted({t.topic for t in templates})
    mails = MailLog()
    server = SmtpServer(mails)
    server.start()
    smtp_port = server.port
    ok = True
    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="fmn-bench-") as tmp, BenchDatabase() as db:
            workdir = Path(tmp)
            config_text = (
                f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n'
                'from_address = "notifications@example.org"\n'
                '[http]\nenabled = false\nsecret_key = "benchmark-only"\n'
                "[delivery]\nrate_limit_per_hour = 1000000\n"
                + (f"senders = {args.senders}\n" if args.senders else "")
            )
            if args.senders:
                print(f"  delivery.senders = {args.senders}")
            config = write_fmn_config(workdir / "fmn.toml", db.url, config_text)
            database = Database(Config(database_url=db.url))
            try:
                with database.begin() as session:
                    summary = import_preferences(
                        session, bench_preferences(topics, args.users), resolve=False
                    )
            finally:
                database.dispose()
            usable = single_recipient_templates(db.url, templates)
            print(
                f"  imported {summary.users} users, {summary.filters} filters; "
                f"{len(usable)} of {len(templates)} corpus messages reach exactly one user"
            )
            pool = [templates[i] for i in usable]
            for n, rate in enumerate(rates):
                count = int(rate * seconds)
                seed = args.seed + 10 * n
                items = draw(pool, count, seed)
                warmup = draw(pool, max(10, int(rate)), seed + 1)
                load_before = os.getloadavg()[0]
                baselines: dict[str, RelayRun] = {}
                usage: dict[str, tuple[Usage, int]] = {}
                if not args.no_baseline:
                    for label, reuse, offset in (("per mail", False, 2), ("reused", True, 3)):
                        began = Usage.start(server)
                        baselines[label] = run_baseline(
                            pool,
                            draw(pool, count, seed + offset),
                            rate,
                            smtp_port,
                            mails,
                            reuse=reuse,
                        )
                        usage[f"baseline, connection {label}"] = (
                            began.since(server),
                            len(baselines[label].latencies.values),
                        )
                figures: dict[str, Any] = {
                    "rate": rate,
                    "baseline": _percentiles(
                        baselines["per mail"].latencies if baselines else None
                    ),
                    "baseline_reused": _percentiles(
                        baselines["reused"].latencies if baselines else None
                    ),
                }
                topologies = [("fmn", "", False)]
                if args.split:
                    topologies.append(("fmn_split", ", consumer and senders as two daemons", True))
                for k, (key, topology, split_processes) in enumerate(topologies):
                    if k:  # each topology gets messages of its own
                        items = draw(pool, count, seed + 4)
                        warmup = draw(pool, max(10, int(rate)), seed + 5)
                        load_before = os.getloadavg()[0]
                    began = Usage.start(server)
                    with BenchBroker() as broker:
                        fm_config = broker.write_config(workdir / f"fm-{n}-{key}.toml")
                        warm, measured, code, tail, cpu, split = run_fmn(
                            pool,
                            items,
                            warmup,
                            rate,
                            config,
                            fm_config,
                            broker,
                            mails,
                            workdir,
                            args.settle,
                            db.url,
                            split_processes=split_processes,
                        )
                    load = (load_before, os.getloadavg()[0])
                    usage[key] = (began.since(server), len(warm.values) + len(measured.values))
                    met = _report(
                        rate,
                        count,
                        baselines,
                        warm,
                        measured,
                        code,
                        tail,
                        load,
                        args.settle,
                        cpu,
                        topology=topology,
                    )
                    for label, (used, received) in usage.items():
                        # The relays' figures once, beside the first topology's.
                        if (label.startswith("baseline") and not k) or label == key:
                            print(f"  {label}: {used.line(received)}")
                    ok &= met
                    print(f"  where it went: {split.line()}")
                    figures.setdefault("load", list(load))
                    figures[key] = _percentiles(measured)
                    figures[f"{key}_cpu_ms_per_mail"] = _per_mail_ms(cpu, measured)
                    for label, (used, received) in usage.items():
                        if label.startswith("baseline") or label == key:
                            name = "smtp_server_ms_per_mail"
                            figures.setdefault(name, {})[label] = (
                                used.server_s * 1000 / max(1, received)
                            )
                            figures.setdefault("machine_busy_share", {})[label] = used.busy_s / (
                                max(used.wall_s, 1e-9) * (os.cpu_count() or 1)
                            )
                runs.append(figures)
    finally:
        server.stop()
    if args.json:
        Path(args.json).write_text(
            json.dumps({"seconds": seconds, "runs": runs}, indent=1), encoding="utf-8"
        )
        print(f"\n  figures written to {args.json}")
    print(f"\nall targets and checks met: {'yes' if ok else 'NO'}")
    return 0


def _percentiles(latencies: Latencies | None) -> dict[str, float] | None:
    if latencies is None or not latencies.values:
        return None
    return {
        "p50": latencies.percentile(50),
        "p90": latencies.percentile(90),
        "p99": latencies.percentile(99),
        "max": max(latencies.values),
        "count": len(latencies.values),
        "missing": latencies.missing,
    }


def _per_mail_ms(cpu_seconds: float, latencies: Latencies) -> float:
    if not latencies.values:
        return float("nan")
    return cpu_seconds * 1000 / len(latencies.values)


def _report(
    rate: float,
    count: int,
    baselines: dict[str, RelayRun],
    warm: Latencies,
    measured: Latencies,
    code: int | None,
    tail: list[str],
    load: tuple[float, float],
    settle: float,
    cpu: float,
    *,
    topology: str = "",
) -> bool:
    target = TARGETS_P99_MS.get(rate, max(TARGETS_P99_MS.values()))
    print(
        f"\nResults at {rate:g} messages/s{topology} (load average, 1 min, before/after: "
        f"{load[0]:.1f} / {load[1]:.1f})"
    )
    for label, run in baselines.items():
        print(
            f"  baseline (bare pika -> smtplib relay, SMTP connection {label}, no database): "
            f"{run.latencies.line()}; CPU {_per_mail_ms(run.cpu_seconds, run.latencies):.2f} "
            "ms per mail (relay thread)"
        )
    print(f"  fmn warm-up (not counted): {warm.line()}")
    print(f"  fmn: {measured.line()}")
    print(
        f"  fmn CPU: {cpu:.1f} s for {len(measured.values):,} mails, "
        f"{_per_mail_ms(cpu, measured):.2f} ms per mail (whole daemon: consumer, "
        "ingest, senders)"
    )
    if measured.values:
        below = sum(1 for v in measured.values if v <= target)
        print(f"  {below / len(measured.values) * 100:.1f}% of mails within {target:.0f} ms")
    for label, run in baselines.items():
        if run.latencies.values and measured.values:
            difference = measured.percentile(99) - run.latencies.percentile(99)
            print(f"  p99 vs. baseline (connection {label}): {difference:+.0f} ms")
    print(
        f"  check {'ok' if not measured.missing else 'FAILED'}: "
        f"{measured.missing} of {count:,} messages got no mail within {settle:.0f}s "
        "of the last publication"
    )
    print(
        f"  check {'ok' if not measured.duplicated else 'FAILED'}: "
        f"{measured.duplicated} messages got more than one mail"
    )
    print(f"  daemon exit status after SIGTERM: {code}")
    ok = not measured.missing and not measured.duplicated and code == 0
    if code != 0:
        for line in tail[-10:]:
            print(f"    {line}")
    ok &= print_target(
        f"p99 at {rate:g} messages/s{topology}",
        measured.percentile(99),
        target,
        "ms",
        at_least=False,
    )
    return ok


if __name__ == "__main__":
    sys.exit(main())
