"""What the ingest, backlog and latency benchmarks share: corpus, broker, database, population.

- ``corpus_files()``: the corpus files, from ``tests/corpus/`` or ``FMN_CORPUS``
  (the tests' own locator, so both read the same files and the same override).
- ``corpus_templates()``: every corpus line fmn can decode, encoded the
  way fedora-messaging's publisher puts it on the wire (JSON body, the
  ``fedora_messaging_schema``, ``sent-at``, severity and filter headers).
- ``draw(templates, n)``: n messages drawn from them, each with its own uuid4
  id (the corpus holds about a thousand; the benchmarks need up to 100k).
- ``BenchBroker``: a uniquely named topic exchange and durable queue bound to
  it with ``#`` on the loopback RabbitMQ, the fedora-messaging TOML that names
  them, fast publishing with pika (no publisher confirms: the queue's depth
  is waited for instead), and deletion afterwards.
- ``BenchDatabase``: a fresh PostgreSQL database at the newest migration,
  dropped afterwards.
- ``store_population()``: a ``benchmarks/populations.py`` population written
  with bulk inserts (users, preferences, filters, rules, package owners), so
  10k users take seconds; the daemon then loads it like any other.

Everything talks to loopback only (``require_loopback``); every wait is bounded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(HERE), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pika  # noqa: E402
from populations import Population  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from fmn_core.errors import MalformedMessage  # noqa: E402
from fmn_core.matcher import Matcher  # noqa: E402
from fmn_core.messages import MessageFacts, facts_of, load_message  # noqa: E402
from fmn_core.models import Filter, PackageOwner, Preference, Rule, User  # noqa: E402
from fmn_daemon.ingest import decode_delivery  # noqa: E402

__all__ = [
    "AMQP_URL",
    "POSTGRES_URL",
    "BackendCpu",
    "BenchBroker",
    "BenchDatabase",
    "Check",
    "Template",
    "check_ingest",
    "corpus_files",
    "corpus_templates",
    "count_rows",
    "cpu_seconds",
    "decode_template",
    "draw",
    "expected_recipients",
    "outbox_triples",
    "print_services",
    "print_target",
    "require_loopback",
    "store_population",
    "write_fmn_config",
]

POSTGRES_URL = os.environ.get(
    "FMN_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("FMN_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def require_loopback(url: str, what: str) -> None:
    """Refuse to benchmark against anything but this machine."""
    host = pika.URLParameters(url).host if url.startswith("amqp") else make_url(url).host
    if host not in _LOOPBACK:
        raise SystemExit(f"{what} must be on loopback for a benchmark, not {host!r} ({url})")


def print_services(postgres_url: str = POSTGRES_URL, amqp_url: str = AMQP_URL) -> None:
    """Print the PostgreSQL and RabbitMQ versions the figures were taken with."""
    print("Services (loopback)")
    try:
        engine = create_engine(postgres_url)
        with engine.connect() as connection:
            version = connection.execute(text("SHOW server_version")).scalar_one()
        engine.dispose()
        print(f"  PostgreSQL: {version}")
    except Exception as exc:  # any failure: this line is only informative
        print(f"  PostgreSQL: not reachable ({type(exc).__name__})")
    try:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        properties = connection._impl.server_properties
        connection.close()
        print(f"  RabbitMQ:   {properties.get('product', '?')} {properties.get('version', '?')}")
    except (pika.exceptions.AMQPError, OSError) as exc:
        print(f"  RabbitMQ:   not reachable ({type(exc).__name__})")
    print(
        f"  load average (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} cores"
    )


def print_target(label: str, value: float, target: float, unit: str, *, at_least: bool) -> bool:
    """One ``target`` line: the figure, the target and whether it is met; returns that."""
    met = value >= target if at_least else value <= target
    relation = ">=" if at_least else "<="
    print(
        f"  target {label}: {value:,.1f} {unit} (target {relation} {target:,.0f} {unit}): "
        f"{'MET' if met else 'NOT MET'}"
    )
    return met


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Template:
    """One corpus message as it travels on the bus, ready to publish again and again."""

    topic: str
    body: bytes
    headers: dict[str, Any]
    facts: MessageFacts

    def properties(
        self, message_id: str, *, extra: dict[str, Any] | None = None
    ) -> pika.BasicProperties:
        """The AMQP properties fedora-messaging's publisher would send, with this id."""
        headers = {**self.headers, **extra} if extra else self.headers
        return pika.BasicProperties(
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
            headers=headers,
            message_id=message_id,
        )


def _corpus_locator() -> Any:
    """``tests/corpus/__init__.py``, loaded by its path.

    Not by putting ``tests/`` on ``sys.path``: its folders (``core``,
    ``daemon``, ...) would shadow installed modules of the same names.
    """
    spec = importlib.util.spec_from_file_location(
        "fmn_tests_corpus", ROOT / "tests" / "corpus" / "__init__.py"
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"can't load the corpus locator from {ROOT / 'tests' / 'corpus'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus_files() -> list[Path]:
    """The corpus files (``tests/corpus/``, or ``FMN_CORPUS``); a missing one stops the run."""
    locator = _corpus_locator()
    try:
        paths: list[Path] = locator.corpus_paths()
    except locator.CorpusMissing as exc:
        raise SystemExit(str(exc)) from None
    return paths


def corpus_templates(paths: Sequence[Path] | None = None) -> tuple[list[Template], int]:
    """Every corpus line fmn can decode, as a ``Template``; and how many lines it can't.

    The lines are loaded with ``fmn_core.messages.load_message`` (which finds a
    header-less message's schema class from its topic), then re-encoded by
    that class, as fedora-messaging's ``publish`` would: so the deliveries
    carry the schema header a live-bus message carries.
    """
    templates: list[Template] = []
    unreadable = 0
    for path in paths if paths is not None else corpus_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            data = json.loads(line)
            try:
                loaded = load_message(data)
            except MalformedMessage:
                unreadable += 1
                continue
            message = type(loaded)(
                body=loaded.body, topic=loaded.topic, headers=dict(data.get("headers") or {})
            )
            headers = dict(message._properties.headers or {})
            headers.pop("priority", None)
            templates.append(
                Template(
                    topic=message.topic,
                    body=message._encoded_body,
                    headers=headers,
                    facts=facts_of(loaded),
                )
            )
    return templates, unreadable


def draw(templates: Sequence[Template], n: int, seed: int = 0) -> list[tuple[int, str]]:
    """``n`` messages as (template index, unique message id): every template once, then random."""
    rng = random.Random(seed)
    indexes = list(range(len(templates)))
    rng.shuffle(indexes)
    chosen = (indexes * (n // len(indexes) + 1))[:n]
    rng.shuffle(chosen)
    return [(i, str(uuid.UUID(int=rng.getrandbits(128), version=4))) for i in chosen]


def decode_template(template: Template) -> Any:
    """The message fmn's consumer decodes from one delivery of ``template``."""
    return decode_delivery(template.topic, template.properties("expected"), template.body)


def expected_recipients(
    templates: Sequence[Template], population: Population
) -> list[frozenset[tuple[int, str]]]:
    """Each template's (user id, context) recipients, as ``fmn_core.matcher`` computes them.

    Compiled from the population's snapshots, not from the database: an
    independent check of what the daemon loads and writes.
    """
    matcher = Matcher.from_snapshots(population.users, ownership=population.ownership)
    return [
        frozenset((r.user_id, r.context) for r in matcher.recipients(facts_of(decode_template(t))))
        for t in templates
    ]


# --------------------------------------------------------------------------- broker


class BenchBroker:
    """A unique topic exchange and durable queue (bound with ``#``) on the loopback broker."""

    def __init__(self, amqp_url: str = AMQP_URL, tag: str | None = None) -> None:
        require_loopback(amqp_url, "RabbitMQ")
        self.amqp_url = amqp_url
        tag = tag or uuid.uuid4().hex[:10]
        self.queue = f"fmn-bench-{tag}"
        self.exchange = f"fmn-bench-x-{tag}"

    def __enter__(self) -> BenchBroker:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise SystemExit(f"RabbitMQ is not reachable at {self.amqp_url}: {exc!r}") from exc
        try:
            channel = connection.channel()
            channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            channel.queue_declare(self.queue, durable=True)
            channel.queue_bind(self.queue, self.exchange, routing_key="#")
        finally:
            connection.close()
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            channel = connection.channel()
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.exchange)
            connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass

    def write_config(self, path: Path, prefetch: int = 1000) -> Path:
        """fedora-messaging's TOML for this exchange and queue (what ``fmn-daemon run`` reads)."""
        path.write_text(
            f"""\
amqp_url = {json.dumps(self.amqp_url)}
publish_exchange = {json.dumps(self.exchange)}
passive_declares = false
topic_prefix = ""
callback = "builtins:print"

[tls]
ca_cert = ""
keyfile = ""
certfile = ""

[client_properties]
app = "fmn benchmarks"

[exchanges.{json.dumps(self.exchange)}]
type = "topic"
durable = true
auto_delete = false
arguments = {{}}

[queues.{json.dumps(self.queue)}]
durable = true
auto_delete = false
exclusive = false
arguments = {{}}

[[bindings]]
queue = {json.dumps(self.queue)}
exchange = {json.dumps(self.exchange)}
routing_keys = ["#"]

[qos]
prefetch_size = 0
prefetch_count = {prefetch}
""",
            encoding="utf-8",
        )
        return path

    def depth(self) -> tuple[int, int]:
        """(messages ready, consumers) of the queue."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            frame = connection.channel().queue_declare(self.queue, durable=True, passive=True)
            return int(frame.method.message_count), int(frame.method.consumer_count)
        finally:
            connection.close()

    @contextmanager
    def publisher(self) -> Iterator[Callable[[Template, str, dict[str, Any] | None], None]]:
        """``publish(template, message_id, extra_headers)`` over one connection."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        channel = connection.channel()

        def publish(
            template: Template, message_id: str, extra: dict[str, Any] | None = None
        ) -> None:
            channel.basic_publish(
                self.exchange,
                template.topic,
                template.body,
                template.properties(message_id, extra=extra),
            )

        try:
            yield publish
        finally:
            connection.close()

    def publish_all(
        self,
        templates: Sequence[Template],
        items: Iterable[tuple[int, str]],
        *,
        timeout: float = 300.0,
    ) -> tuple[int, float]:
        """Publish every (template, id) and wait until the queue holds them; (count, seconds)."""
        started = time.perf_counter()
        count = 0
        ready_before, _ = self.depth()
        with self.publisher() as publish:
            for index, message_id in items:
                publish(templates[index], message_id, None)
                count += 1
        deadline = time.monotonic() + timeout
        while True:
            ready, _ = self.depth()
            if ready >= ready_before + count:
                break
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"only {ready - ready_before} of {count} published messages "
                    f"reached {self.queue} within {timeout:.0f}s"
                )
            time.sleep(0.1)
        return count, time.perf_counter() - started


# --------------------------------------------------------------------------- database


class BenchDatabase:
    """A fresh PostgreSQL database at the newest migration; dropped on exit."""

    def __init__(self, admin_url: str = POSTGRES_URL, tag: str | None = None) -> None:
        require_loopback(admin_url, "PostgreSQL")
        self.admin_url = admin_url
        self.name = f"fmn_bench_{tag or uuid.uuid4().hex[:10]}"
        self.url = make_url(admin_url).set(database=self.name).render_as_string(hide_password=False)
        self._admin: Engine | None = None

    def __enter__(self) -> BenchDatabase:
        from fmn_core.schema import upgrade

        self._admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with self._admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        except Exception as exc:
            self._admin.dispose()
            raise SystemExit(f"PostgreSQL is not reachable at {self.admin_url}: {exc!r}") from exc
        upgrade(self.url)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._admin is not None
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()

    def engine(self) -> Engine:
        """A new engine on the benchmark database (dispose of it when done)."""
        return create_engine(self.url)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc; None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU-seconds every core of this machine has spent busy since boot (``/proc/stat``).

    Busy is everything but idle and I/O wait: user, nice, system, interrupts and
    steal, summed over the cores.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def broker_pids() -> list[int]:
    """The local RabbitMQ's processes (its Erlang VM, ``beam.smp``); empty if none is local."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class MachineCpu:
    """Where the whole machine's CPU went over one window: in all, and in the broker.

    With the consumers, PostgreSQL and RabbitMQ on one machine, a program's rate is
    bounded by the machine's cores divided by everything it costs per message, on
    whichever process that cost falls. This reads both sides of that division.
    """

    def __init__(self) -> None:
        self._machine = 0.0
        self._broker: dict[int, float] = {}

    def _broker_cpu(self) -> dict[int, float]:
        found = {pid: cpu_seconds(pid) for pid in broker_pids()}
        return {pid: cpu for pid, cpu in found.items() if cpu is not None}

    def start(self) -> None:
        self._machine = machine_busy_seconds()
        self._broker = self._broker_cpu()

    def stop(self) -> tuple[float, float | None]:
        """(machine CPU-seconds, broker CPU-seconds or None when no local broker was seen)."""
        machine = machine_busy_seconds() - self._machine
        now = self._broker_cpu()
        if not now:
            return machine, None
        return machine, sum(cpu - self._broker.get(pid, cpu) for pid, cpu in now.items())


class BackendCpu:
    """CPU time PostgreSQL's server processes spent on one database's connections.

    ``start()`` notes the backends connected now; ``stop()`` returns the CPU
    seconds they (and any that connected since) used in between. A backend that
    disconnected meanwhile is missed; the daemons keep pooled connections open.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._start: dict[int, float] = {}

    def _backends(self) -> dict[int, float]:
        with self.engine.connect() as connection:
            pids = (
                connection.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                .scalars()
                .all()
            )
        found = {pid: cpu_seconds(pid) for pid in pids}
        return {pid: cpu for pid, cpu in found.items() if cpu is not None}

    def start(self) -> None:
        self._start = self._backends()

    def stop(self) -> float:
        now = self._backends()
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in now.items())


def count_rows(engine: Engine, table: str) -> int:
    """``SELECT count(*)`` of a table."""
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def outbox_triples(engine: Engine) -> set[tuple[str, int, str]]:
    """Every outbox row as (message id, user id, context)."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT message_id, user_id, context FROM notifications"))
        return {(r[0], r[1], r[2]) for r in rows}


@dataclass(frozen=True)
class Check:
    """One verification after a run: what was found, and whether that is right."""

    text: str
    ok: bool

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'FAILED'}: {self.text}"


def check_ingest(
    engine: Engine,
    broker: BenchBroker,
    items: Sequence[tuple[int, str]],
    expected: Sequence[frozenset[tuple[int, str]]],
) -> list[Check]:
    """Nothing lost: the queue is empty, every message stored, the outbox exactly as expected."""
    ready, _ = broker.depth()
    checks = [Check(f"{ready:,} messages left in the queue", ready == 0)]
    stored = count_rows(engine, "messages")
    checks.append(Check(f"{stored:,} of {len(items):,} messages stored", stored == len(items)))
    want = {
        (message_id, user, context)
        for index, message_id in items
        for user, context in expected[index]
    }
    got = outbox_triples(engine)
    missing, extra = len(want - got), len(got - want)
    checks.append(
        Check(
            f"outbox holds {len(got):,} rows, matcher expects {len(want):,} "
            f"({missing} missing, {extra} extra)",
            not missing and not extra,
        )
    )
    return checks


def store_population(
    engine: Engine, population: Population, *, chunk: int = 5000
) -> dict[str, int]:
    """Write a population with bulk inserts; return the row count of each table.

    Ids are the population's own user ids; filters get fresh ids (a filter
    shared by two contexts of a snapshot becomes two rows, as it would be in
    the database). The sequences are moved past the ids used.
    """
    users: list[dict[str, Any]] = []
    preferences: list[dict[str, Any]] = []
    filters: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for user in population.users:
        users.append({"id": user.user_id, "name": user.name})
        for context in user.contexts:
            preference_id = len(preferences) + 1
            preferences.append(
                {
                    "id": preference_id,
                    "user_id": user.user_id,
                    "context": context.context,
                    "enabled": context.enabled,
                }
            )
            for position, filter_ in enumerate(context.filters):
                filter_id = len(filters) + 1
                filters.append(
                    {
                        "id": filter_id,
                        "preference_id": preference_id,
                        "name": filter_.name,
                        "active": filter_.active,
                        "position": position,
                    }
                )
                for rule_position, rule in enumerate(filter_.rules):
                    rules.append(
                        {
                            "id": len(rules) + 1,
                            "filter_id": filter_id,
                            "name": rule.name,
                            "arguments": dict(rule.arguments),
                            "negated": rule.negated,
                            "position": rule_position,
                        }
                    )
    # MapOwnership keeps its owner -> packages map private; it is the whole truth here.
    owners = [
        {"namespace": "rpms", "package": package, "owner": owner}
        for owner, packages in sorted(population.ownership._packages.items())
        for package in sorted(packages)
    ]
    with engine.begin() as connection:
        for model, rows in (
            (User, users),
            (Preference, preferences),
            (Filter, filters),
            (Rule, rules),
            (PackageOwner, owners),
        ):
            table = model.__table__
            for start in range(0, len(rows), chunk):
                connection.execute(insert(table), rows[start : start + chunk])
            if rows and "id" in rows[0]:
                connection.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT max(id) FROM {table.name}))"
                    )
                )
        connection.execute(text("ANALYZE"))
    return {
        "users": len(users),
        "preferences": len(preferences),
        "filters": len(filters),
        "rules": len(rules),
        "package_owners": len(owners),
    }


def write_fmn_config(path: Path, database_url: str, extra: str = "") -> Path:
    """fmn's TOML with this database (plus ``extra`` TOML)."""
    path.write_text(f"database_url = {json.dumps(database_url)}\n{extra}", encoding="utf-8")
    return path
