"""Benchmark item 2, "Ingest": how many bus messages per second one fmn process takes in.

Run ``python benchmarks/ingest.py`` from the project's virtualenv (PostgreSQL and
RabbitMQ on loopback), as ``nox -s bench`` does; ``--quick`` for a short run.

Set-up: a fresh PostgreSQL database at the newest migration holding a 10k-user
population (``benchmarks/populations.py``, written with bulk inserts), and N
messages (20,000 by default) drawn from the shared corpus, each with its own
id, published to a unique durable queue the way fedora-messaging publishes
(schema headers included) before any consumer starts.

Each scenario gets its own queue with the same N messages (new ids) and an
empty outbox, and runs its consumers in separate processes:

- **bare pika**: the transport's limit: a ``pika`` ``BlockingConnection`` with the
  prefetch fmn's consumer uses, acking each delivery as it arrives (a bare
  consumer's natural ack), nothing else; its clocks are read once per 100
  deliveries, as fmn's are once per batch;
- **baseline**: fedora-messaging's own consumer (``fedora_messaging.api.consume``,
  the same TOML, prefetch 1000) with a callback that does nothing: decoding
  and acking only, one message at a time;
- **fmn, 1 process**: ``fmn_daemon.consumer.Consumer``, the class ``fmn-daemon
  run`` runs, with delivery off: decode, store, match, write the outbox, commit,
  ack, in batches of ``ingest.batch_size``. Its matcher is loaded before the
  clock starts;
- **fmn, 2 and 4 processes** competing on one queue (``--processes``; this
  machine has 2 cores, shared with PostgreSQL and RabbitMQ).

Throughput is the messages acked divided by the time from a process's first
delivery to its last ack; for several processes, all messages over the first
delivery to the last ack of any. Bare pika and one fmn process run ``--pairs``
times (3), interleaved and alternately first, and each side's figure is all its
messages over all its windows: the ratio between them is the goal, and a run of
20,000 messages lasts 1-3 s where 5,000 lasted a few tenths, which this
machine's speed alone moves by a third. Each fmn run is then checked: the queue is
empty, every message is stored, and the outbox holds exactly the rows that
``fmn_core.matcher`` computes for these messages and users (none lost, none
extra). Targets (issue 16): >= 4,000 messages/s per process, and >= 0.65x bare
pika in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import (  # noqa: E402
    BackendCpu,
    BenchBroker,
    BenchDatabase,
    Check,
    MachineCpu,
    Template,
    check_ingest,
    corpus_templates,
    draw,
    expected_recipients,
    print_services,
    print_target,
    store_population,
    write_fmn_config,
)
from machine import print_machine  # noqa: E402
from populations import build_population, corpus_names  # noqa: E402
from sqlalchemy import text  # noqa: E402

TARGET_PER_PROCESS = 4000.0
#: Ingest of one process against bare pika consume+ack, measured in the same run.
TARGET_VS_PIKA = 0.65

# Shared-memory slots per worker: first delivery and last ack (time.time()), acked count,
# ready flag, the process's CPU time (time.process_time()) at the first delivery and last ack.
_FIRST, _LAST, _ACKED, _READY, _CPU_FIRST, _CPU_LAST, _SLOTS = range(7)


# --------------------------------------------------------------------------- workers


def _fmn_worker(
    fmn_config: str,
    fm_config: str,
    slots: Any,
    slot: int,
    go: Any,
    stop: Any,
    results: Any,
    profile_dir: str | None = None,
) -> None:
    """One fmn consumer process: load the matcher, wait for ``go``, consume until ``stop``."""
    import logging

    logging.basicConfig(
        level=logging.WARNING, format="worker %(process)d %(levelname)s %(name)s: %(message)s"
    )
    from fmn_core.config import load_config
    from fmn_core.db import Database
    from fmn_core.messages import prepare_validators
    from fmn_daemon.cli import THREAD_SWITCH_SECONDS
    from fmn_daemon.consumer import Consumer, load_broker_settings
    from fmn_daemon.metrics import Metrics

    base = slot * _SLOTS
    # The timing hooks below wrap these two; fail at once if they were renamed.
    for hook in ("_on_message", "_ack"):
        if not callable(getattr(Consumer, hook, None)):
            raise SystemExit(
                f"fmn_daemon.consumer.Consumer has no {hook}(); update "
                "benchmarks/ingest.py's timing hooks"
            )

    class TimedConsumer(Consumer):
        """fmn's consumer, noting when deliveries start and how far acks have got."""

        def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
            if not slots[base + _FIRST]:
                slots[base + _FIRST] = time.time()
                slots[base + _CPU_FIRST] = time.process_time()
            super()._on_message(channel, method, properties, body)

        def _ack(self, item: Any, first: str, last: str) -> int | None:
            tag = super()._ack(item, first, last)
            if tag is not None:
                slots[base + _LAST] = time.time()
                slots[base + _CPU_LAST] = time.process_time()
                slots[base + _ACKED] = tag  # acks are cumulative (multiple=True) on one channel
            return tag

    if profile_dir:
        # One profiler per thread (cProfile sees only the thread it runs in), on
        # each thread's own CPU clock: idle waits don't count, work does.
        import cProfile

        def profiled(method: Any, label: str) -> Any:
            def run(self: Any, *args: Any) -> Any:
                profiler = cProfile.Profile(time.thread_time)
                profiler.enable()
                try:
                    return method(self, *args)
                finally:
                    profiler.disable()
                    name = threading.current_thread().name
                    profiler.dump_stats(os.path.join(profile_dir, f"{label}-{slot}-{name}.prof"))

            return run

        TimedConsumer.run = profiled(Consumer.run, "amqp")  # type: ignore[method-assign]
        TimedConsumer._write_loop = profiled(  # type: ignore[method-assign]
            Consumer._write_loop, "writer"
        )

    # As ``fmn-daemon run`` sets it: the consumer's threads hand the interpreter
    # lock to each other at the daemon's switch interval, not Python's default.
    sys.setswitchinterval(THREAD_SWITCH_SECONDS)
    config = load_config(fmn_config)
    db = Database(config)
    metrics = Metrics()
    consumer = TimedConsumer(db, load_broker_settings(fm_config), metrics)
    consumer.load_matcher()
    prepare_validators()  # as Consumer.run does first: start-up, not per-message cost
    slots[base + _READY] = 1
    go.wait()
    halt = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(halt,), name="consumer")
    thread.start()
    stop.wait()
    halt.set()
    thread.join(60)
    db.dispose()
    results.put((slot, metrics.snapshot()))


def _baseline_worker(fm_config: str, total: int, slots: Any, go: Any) -> None:
    """fedora-messaging's own consumer with a callback that does nothing but count."""
    os.environ["FEDORA_MESSAGING_CONF"] = fm_config
    from fedora_messaging import api
    from fedora_messaging.exceptions import HaltConsumer

    seen = 0

    def callback(_message: Any) -> None:
        nonlocal seen
        now = time.time()
        if not seen:
            slots[_FIRST] = now
            slots[_CPU_FIRST] = time.process_time()
        seen += 1
        slots[_LAST] = now
        slots[_CPU_LAST] = time.process_time()
        slots[_ACKED] = seen
        if seen >= total:
            raise HaltConsumer(exit_code=0, requeue=False)

    slots[_READY] = 1
    go.wait()
    with contextlib.suppress(HaltConsumer):
        api.consume(callback)


def _pika_worker(
    amqp_url: str, queue_name: str, prefetch: int, total: int, slots: Any, go: Any
) -> None:
    """The transport's limit: bare pika, consume and ack each delivery, nothing else."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    seen = 0

    def callback(ch: Any, method: Any, _properties: Any, _body: bytes) -> None:
        nonlocal seen
        if not seen:
            slots[_FIRST] = time.time()
            slots[_CPU_FIRST] = time.process_time()
        ch.basic_ack(delivery_tag=method.delivery_tag)
        seen += 1
        # Clocks and shared memory are touched once per 100 deliveries, not per
        # delivery: fmn's consumer is timed once per batch, and the transport's
        # limit should not carry a cost of the measuring that fmn does not.
        if seen % 100 == 0 or seen >= total:
            slots[_LAST] = time.time()
            slots[_CPU_LAST] = time.process_time()
            slots[_ACKED] = seen
        if seen >= total:
            ch.stop_consuming()

    channel.basic_consume(queue_name, callback)
    slots[_READY] = 1
    go.wait()
    channel.start_consuming()
    connection.close()


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """One scenario's figures."""

    name: str
    processes: int
    acked: list[int]
    windows: list[float]
    total_window: float
    cpu: list[float]
    postgres_cpu: float | None
    load: tuple[float, float]
    checks: list[Check]
    #: CPU-seconds of the whole machine, and of the local broker, while consuming.
    machine_cpu: float | None = None
    broker_cpu: float | None = None
    #: The runs this one pools (``pooled``), in the order they ran.
    parts: list[Outcome] = field(default_factory=list)

    @property
    def total_rate(self) -> float:
        return sum(self.acked) / self.total_window if self.total_window > 0 else 0.0

    def rates(self) -> list[float]:
        return [a / w if w > 0 else 0.0 for a, w in zip(self.acked, self.windows, strict=True)]

    def cpu_rates(self) -> list[float]:
        """Messages per CPU-second of each process: its rate if it had a core to itself."""
        return [a / c if c > 0 else 0.0 for a, c in zip(self.acked, self.cpu, strict=True)]


def pooled(name: str, outcomes: list[Outcome]) -> Outcome:
    """One-process runs taken as one: all their messages over all their windows.

    The same as one run as long as all of them, so a short disturbance weighs
    on the figure by its length, and no run is chosen over another.
    """
    if len(outcomes) == 1:
        return outcomes[0]

    def total(values: list[float | None]) -> float | None:
        return None if any(v is None for v in values) else sum(v or 0.0 for v in values)

    return Outcome(
        name,
        1,
        [sum(sum(o.acked) for o in outcomes)],
        [sum(sum(o.windows) for o in outcomes)],
        sum(o.total_window for o in outcomes),
        [sum(sum(o.cpu) for o in outcomes)],
        total([o.postgres_cpu for o in outcomes]),
        (min(o.load[0] for o in outcomes), max(o.load[1] for o in outcomes)),
        [check for o in outcomes for check in o.checks],
        total([o.machine_cpu for o in outcomes]),
        total([o.broker_cpu for o in outcomes]),
        parts=outcomes,
    )


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.05)


def run_scenario(
    name: str,
    processes: int,
    *,
    kind: str,
    templates: list[Template],
    n: int,
    seed: int,
    fmn_config: Path,
    db: BenchDatabase,
    expected: list[frozenset[tuple[int, str]]],
    workdir: Path,
    timeout: float,
    profile_dir: str | None = None,
) -> Outcome:
    """Publish ``n`` messages to a fresh queue, then let ``processes`` consumers drain it.

    ``kind`` is ``pika`` (bare consume+ack), ``fm`` (fedora-messaging, no-op
    callback) or ``fmn`` (fmn's consumer, checked afterwards).
    """
    baseline = kind != "fmn"
    engine = db.engine()
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE notifications, messages"))
    ctx = mp.get_context("spawn")
    with BenchBroker() as broker:
        fm_config = broker.write_config(workdir / f"fedora-messaging-{broker.queue}.toml")
        items = draw(templates, n, seed)
        published, seconds = broker.publish_all(templates, items)
        print(
            f"  {name}: published {published:,} messages in {seconds:.1f}s "
            f"({published / seconds:,.0f}/s)",
            flush=True,
        )
        slots = ctx.Array("d", _SLOTS * processes, lock=False)
        go, stop = ctx.Event(), ctx.Event()
        results = ctx.Queue()
        if kind == "fm":
            workers = [ctx.Process(target=_baseline_worker, args=(str(fm_config), n, slots, go))]
        elif kind == "pika":
            # The prefetch fmn's consumer asks for, from the same configuration.
            from fmn_core.config import load_config
            from fmn_daemon.broker import load_broker_settings
            from fmn_daemon.consumer import prefetch_for

            ingest = load_config(fmn_config).ingest
            prefetch = prefetch_for(
                load_broker_settings(str(fm_config)), ingest.batch_size, ingest.writers
            )
            print(f"  {name}: prefetch {prefetch:,}, as fmn's consumer asks for", flush=True)
            workers = [
                ctx.Process(
                    target=_pika_worker,
                    args=(broker.amqp_url, broker.queue, prefetch, n, slots, go),
                )
            ]
        else:
            workers = [
                ctx.Process(
                    target=_fmn_worker,
                    args=(
                        str(fmn_config),
                        str(fm_config),
                        slots,
                        i,
                        go,
                        stop,
                        results,
                        profile_dir,
                    ),
                )
                for i in range(processes)
            ]
        load_before = os.getloadavg()[0]
        for worker in workers:
            worker.start()
        try:
            _wait_for(
                lambda: (
                    all(slots[i * _SLOTS + _READY] for i in range(processes))
                    or not all(w.is_alive() for w in workers)
                ),
                180,
                "the consumers' start-up",
            )
            dead = [w.exitcode for w in workers if not w.is_alive()]
            if dead:
                raise SystemExit(
                    f"{name}: a consumer process exited during start-up (exit status {dead[0]})"
                )
            backends = BackendCpu(engine)
            backends.start()
            machine = MachineCpu()
            machine.start()
            go.set()
            acked = lambda: sum(int(slots[i * _SLOTS + _ACKED]) for i in range(processes))  # noqa: E731
            if baseline:
                _wait_for(
                    lambda: acked() >= n or not workers[0].is_alive(),
                    timeout,
                    f"{name} consuming {n} messages",
                )
            else:
                _wait_for(
                    lambda: acked() >= n or not any(w.is_alive() for w in workers),
                    timeout,
                    f"{name} acking {n} messages",
                )
            machine_cpu, broker_cpu = machine.stop()
            postgres_cpu = None if baseline else backends.stop()
        finally:
            stop.set()
            counters: dict[int, dict[str, int]] = {}
            if not baseline:
                alive = sum(w.is_alive() for w in workers)
                with contextlib.suppress(queue.Empty):
                    while len(counters) < alive:
                        slot, snapshot = results.get(timeout=60)
                        counters[slot] = snapshot
            for worker in workers:
                worker.join(60)
                if worker.is_alive():
                    worker.terminate()
                    worker.join(10)
        load = (load_before, os.getloadavg()[0])
        firsts = [slots[i * _SLOTS + _FIRST] for i in range(processes)]
        cpu = [
            slots[i * _SLOTS + _CPU_LAST] - slots[i * _SLOTS + _CPU_FIRST] for i in range(processes)
        ]
        lasts = [slots[i * _SLOTS + _LAST] for i in range(processes)]
        counts = [int(slots[i * _SLOTS + _ACKED]) for i in range(processes)]
        if baseline:
            ready, _ = broker.depth()
            checks = [
                Check(f"{ready:,} messages left in the queue", ready == 0),
                Check(f"the callback ran for {sum(counts):,} of {n:,} messages", sum(counts) == n),
            ]
        else:
            checks = check_ingest(engine, broker, items, expected)
            for counter in ("messages_malformed", "db_errors"):
                total = sum(c.get(counter, 0) for c in counters.values())
                checks.append(
                    Check(
                        f"{counter} = {total} in {len(counters)} of {processes} processes' metrics",
                        total == 0 and len(counters) == processes,
                    )
                )
            batches = sum(c.get("batches", 0) for c in counters.values())
            if batches:
                print(
                    f"  {name}: {batches} batches, {n / batches:.0f} messages per batch on average",
                    flush=True,
                )
    engine.dispose()
    windows = [
        last - first if first and last else 0.0 for first, last in zip(firsts, lasts, strict=True)
    ]
    started = [f for f in firsts if f]
    total_window = max(lasts) - min(started) if started else 0.0
    return Outcome(
        name,
        processes,
        counts,
        windows,
        total_window,
        cpu,
        postgres_cpu,
        load,
        checks,
        machine_cpu,
        broker_cpu,
    )


def per_message_us(outcome: Outcome) -> dict[str, float] | None:
    """The whole machine's CPU per message, in µs, and its parts: consumers, PostgreSQL, broker.

    "rest" is what no named part took: the benchmark's own polling, the kernel's
    network work not charged to a process, and whatever else ran on the machine.
    """
    total = sum(outcome.acked)
    if not total or outcome.machine_cpu is None:
        return None
    parts = {
        "machine": outcome.machine_cpu,
        "consumers": sum(outcome.cpu),
        "postgres": outcome.postgres_cpu or 0.0,
        "broker": outcome.broker_cpu or 0.0,
    }
    us = {key: value / total * 1e6 for key, value in parts.items()}
    us["rest"] = us["machine"] - us["consumers"] - us["postgres"] - us["broker"]
    return us


def report(outcome: Outcome, baselines: dict[str, Outcome]) -> bool:
    """Print one scenario; return whether its checks passed."""
    print(f"\n{outcome.name}")
    print(
        f"  {sum(outcome.acked):,} messages in {outcome.total_window:.2f}s: "
        f"{outcome.total_rate:,.0f} messages/s"
    )
    for i, (acked, window, rate, cpu, cpu_rate) in enumerate(
        zip(
            outcome.acked,
            outcome.windows,
            outcome.rates(),
            outcome.cpu,
            outcome.cpu_rates(),
            strict=True,
        ),
        1,
    ):
        print(
            f"    process {i}: {acked:,} messages in {window:.2f}s: {rate:,.0f} messages/s; "
            f"{cpu:.2f} CPU-seconds: {cpu_rate:,.0f} messages per CPU-second"
        )
    for i, part in enumerate(outcome.parts, 1):
        us = per_message_us(part)
        machine = f"; whole machine {us['machine']:.0f} us per message" if us else ""
        print(
            f"    run {i} of {len(outcome.parts)}: {sum(part.acked):,} messages in "
            f"{part.total_window:.2f}s: {part.total_rate:,.0f} messages/s{machine}"
        )
    if outcome.postgres_cpu is not None:
        total = sum(outcome.acked)
        print(
            f"  PostgreSQL backends: {outcome.postgres_cpu:.2f} CPU-seconds "
            f"({outcome.postgres_cpu / total * 1e6:.0f} us per message)"
        )
    us = per_message_us(outcome)
    if us is not None:
        cores = os.cpu_count() or 1
        print(
            f"  whole machine: {us['machine']:.0f} us of CPU per message (consumers "
            f"{us['consumers']:.0f}, PostgreSQL {us['postgres']:.0f}, RabbitMQ {us['broker']:.0f}, "
            f"the rest {us['rest']:.0f}); at that cost {cores} cores allow at most "
            f"{cores / us['machine'] * 1e6:,.0f} messages/s"
        )
    print(f"  load average (1 min) before/after: {outcome.load[0]:.1f} / {outcome.load[1]:.1f}")
    for label, base in baselines.items():
        if base is not outcome and base.total_rate:
            line = f"  vs. {label}: {outcome.total_rate / base.total_rate:.2f}x"
            mine, theirs = outcome.cpu_rates(), base.cpu_rates()
            if outcome.processes == 1 and mine[0] and theirs[0]:
                line += f" ({mine[0] / theirs[0]:.2f}x per CPU-second)"
            print(line)
    met = True
    for check in outcome.checks:
        print(f"  check {check}")
        met &= check.ok
    return met


def profile_table(profile_dir: str, top: int = 12) -> list[tuple[str, float, float]]:
    """Where the fmn processes' CPU went, by area: (area, CPU-seconds, share)."""
    import pstats

    areas: dict[str, float] = {}
    functions: dict[str, float] = {}
    for path in sorted(Path(profile_dir).glob("*.prof")):
        stats = pstats.Stats(str(path))
        for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
            own = row[2]  # tottime: the function's own time, without its callees
            key = f"{Path(filename).name}:{function}"
            functions[key] = functions.get(key, 0.0) + own
            area = _area(filename, function)
            if area != "built-ins (other)":
                areas[area] = areas.get(area, 0.0) + own
                continue
            # isinstance, len, getattr…: their time goes to the area of whoever called them.
            callers: dict[tuple[str, int, str], tuple[Any, ...]] = row[4]
            counted = 0.0
            for (caller_file, _caller_line, caller_function), calls in callers.items():
                share = calls[2]  # own time of this function under this caller
                caller_area = _area(caller_file, caller_function)
                areas[caller_area] = areas.get(caller_area, 0.0) + share
                counted += share
            if own > counted:
                areas[area] = areas.get(area, 0.0) + own - counted
    total = sum(areas.values()) or 1.0
    rows = sorted(((a, t, t / total) for a, t in areas.items()), key=lambda r: -r[1])
    print(
        f"\nProfile (cProfile, per-thread CPU clock; {total:.2f} CPU-seconds in the "
        "consumer threads)"
    )
    print("  | area | CPU-s | share |\n  |---|---|---|")
    for area, seconds, share in rows:
        print(f"  | {area} | {seconds:.2f} | {share:.0%} |")
    print("  top functions by own time:")
    for key, seconds in sorted(functions.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {seconds / total:5.1%}  {key}")
    return rows


#: Profile areas by where a function lives (first match wins).
_AREAS: list[tuple[str, str]] = [
    ("jsonschema_rs", "schema validation"),
    ("/jsonschema/", "schema validation"),
    ("/referencing/", "schema validation"),
    ("/rpds", "schema validation"),
    ("/json/", "JSON encode/decode"),
    ("_json", "JSON encode/decode"),
    ("/pika/", "pika: frames, dispatch, acks"),
    ("/psycopg", "psycopg: statements, results"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("fmn_core/matcher", "matching"),
    ("fmn_core/rules", "matching"),
    ("fmn_core/filters", "matching"),
    ("fedora_messaging", "schema classes (fedora-messaging and message schemas)"),
    ("_schema", "schema classes (fedora-messaging and message schemas)"),
    ("fmn_core/messages", "decoding, facts (fmn_core.messages)"),
    ("fmn_daemon/ingest", "ingest batch (fmn_daemon.ingest)"),
    ("fmn_daemon/consumer", "consumer loop (fmn_daemon.consumer)"),
    ("fmn_core/display", "display columns"),
    ("fmn_core/wording", "display columns"),
    ("socket", "sockets, select"),
    ("select", "sockets, select"),
    ("threading", "threads, queues, locks"),
    ("queue", "threads, queues, locks"),
]


def _area(filename: str, function: str) -> str:
    probe = f"{filename}:{function}"
    for needle, area in _AREAS:
        if needle in probe:
            return area
    if filename == "~":  # built-ins: named by the function
        if "json" in function:
            return "JSON encode/decode"
        if "socket" in function or "select" in function or "poll" in function:
            return "sockets, select"
        if "lock" in function or "acquire" in function:
            return "threads, queues, locks"
        return "built-ins (other)"
    return "other Python"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per scenario")
    parser.add_argument("--users", type=int, default=10_000, help="population size")
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="bare pika and 1-process fmn runs, interleaved, alternately first; the "
        "ratio is over all of them (default: 3)",
    )
    parser.add_argument("--quick", action="store_true", help="5,000 messages, one pair")
    parser.add_argument(
        "--processes",
        default="1,2,4",
        help="fmn process counts to run, comma-separated (default: 1,2,4)",
    )
    parser.add_argument(
        "--baselines",
        default="pika,fedora-messaging",
        help="baselines to run first: pika, fedora-messaging, or none",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="profile the 1-process fmn run with cProfile into DIR and print where its CPU went",
    )
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON (for plots)")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds each scenario may take at most"
    )
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args(argv)
    n = 5_000 if args.quick else args.messages
    pairs = 1 if args.quick else args.pairs
    if pairs < 1:
        parser.error("--pairs must be at least 1")
    counts = [int(c) for c in args.processes.split(",") if c.strip()]
    wanted = {b.strip() for b in args.baselines.split(",")} - {"none", ""}

    print_machine()
    print_services()
    print(
        f"\nIngest: {n:,} messages per scenario, {args.users:,} users, PostgreSQL and "
        "RabbitMQ on loopback\n"
    )
    templates, unreadable = corpus_templates()
    print(f"  corpus: {len(templates)} messages usable ({unreadable} unreadable)")
    population = build_population(args.users, corpus_names(t.facts for t in templates))
    expected = expected_recipients(templates, population)
    per_message = sum(len(e) for e in expected) / len(expected)
    print(
        f"  population: {len(population.users):,} users, {population.filters:,} filters; "
        f"{per_message:.2f} recipients per corpus message on average"
    )

    baselines: dict[str, Outcome] = {}
    runs: list[Outcome] = []
    bare_runs: list[Outcome] = []
    single_runs: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="fmn-bench-") as tmp, BenchDatabase() as db:
        workdir = Path(tmp)
        engine = db.engine()
        started = time.perf_counter()
        rows = store_population(engine, population)
        engine.dispose()
        print(f"  database {db.name}: {rows} in {time.perf_counter() - started:.1f}s", flush=True)
        fmn_config = write_fmn_config(workdir / "fmn.toml", db.url)
        common = dict(
            templates=templates,
            n=n,
            fmn_config=fmn_config,
            db=db,
            expected=expected,
            workdir=workdir,
            timeout=args.timeout,
        )
        # The ratio's two sides, interleaved and alternately first, so that a
        # passing disturbance of the machine falls on both; the other
        # scenarios run once.
        for pair in range(pairs):
            sides = [
                side
                for side, wanted_here in (("pika", "pika" in wanted), ("fmn", 1 in counts))
                if wanted_here
            ]
            for side in sides if pair % 2 == 0 else sides[::-1]:
                if side == "pika":
                    bare_runs.append(
                        run_scenario(
                            f"baseline: bare pika, consume+ack (pair {pair + 1})",
                            1,
                            kind="pika",
                            seed=args.seed + 10 * pair,
                            **common,
                        )
                    )
                else:
                    if args.profile:
                        os.makedirs(args.profile, exist_ok=True)
                    single_runs.append(
                        run_scenario(
                            f"fmn consumer, 1 process (pair {pair + 1})",
                            1,
                            kind="fmn",
                            seed=args.seed + 1 + 10 * pair,
                            profile_dir=args.profile if pair == 0 else None,
                            **common,
                        )
                    )
        if bare_runs:
            baselines["bare pika consume+ack"] = pooled(
                "baseline: bare pika, consume+ack", bare_runs
            )
        if "fedora-messaging" in wanted:
            baselines["fedora-messaging no-op"] = run_scenario(
                "baseline: fedora-messaging consumer, no-op callback",
                1,
                kind="fm",
                seed=args.seed,
                **common,
            )
        for i, processes in enumerate(counts):
            if processes == 1:
                runs.append(pooled("fmn consumer, 1 process", single_runs))
                continue
            runs.append(
                run_scenario(
                    f"fmn consumer, {processes} processes",
                    processes,
                    kind="fmn",
                    seed=args.seed + 1 + i,
                    **common,
                )
            )
    print("\nResults")
    met = True
    for outcome in [*baselines.values(), *runs]:
        met &= report(outcome, baselines)
    print("\nScale-out (N processes on one queue)")
    print("  | processes | total msg/s | per process | load (1 min) |\n  |---|---|---|---|")
    for outcome in runs:
        per = " / ".join(f"{r:,.0f}" for r in outcome.rates())
        print(
            f"  | {outcome.processes} | {outcome.total_rate:,.0f} | {per} | "
            f"{outcome.load[0]:.1f}-{outcome.load[1]:.1f} |"
        )
    profile_rows = profile_table(args.profile) if args.profile else []
    print("\nGoals")
    single = next((o for o in runs if o.processes == 1), None)
    if single is not None:
        met &= print_target(
            "ingest, 1 process", single.total_rate, TARGET_PER_PROCESS, "messages/s", at_least=True
        )
        bare = baselines.get("bare pika consume+ack")
        if bare is not None and bare.total_rate:
            ratio = single.total_rate / bare.total_rate
            ok = ratio >= TARGET_VS_PIKA
            print(
                f"  target ingest / bare pika consume+ack, same run: {ratio:.2f}x "
                f"(target >= {TARGET_VS_PIKA:.2f}x): {'MET' if ok else 'NOT MET'}"
            )
            bare_cpu = bare.cpu_rates()[0]
            if bare_cpu:
                print(
                    "    per CPU-second (each as if it had a core to itself): "
                    f"{single.cpu_rates()[0] / bare_cpu:.2f}x"
                )
            mine, theirs = per_message_us(single), per_message_us(bare)
            if mine and theirs:
                # On a saturated machine each rate is cores / whole-machine cost, so
                # the wall-clock ratio can't pass the ratio of the two costs.
                print(
                    f"    whole machine per message: fmn {mine['machine']:.0f} us, bare pika "
                    f"{theirs['machine']:.0f} us: the ratio of what this machine allows is "
                    f"{theirs['machine'] / mine['machine']:.2f}x; "
                    f"{TARGET_VS_PIKA:.2f}x needs fmn's whole cost <= "
                    f"{theirs['machine'] / TARGET_VS_PIKA:.0f} us per message"
                )
            for i, (theirs_run, mine_run) in enumerate(_pairs(bare, single), 1):
                print(
                    f"    pair {i} ({'bare pika' if i % 2 else 'fmn'} first): fmn "
                    f"{mine_run.total_rate:,.0f} / bare {theirs_run.total_rate:,.0f} messages/s "
                    f"= {mine_run.total_rate / theirs_run.total_rate:.2f}x"
                )
            met &= ok
    print(f"  (load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    if args.json:
        figures = {
            "messages": n,
            "users": args.users,
            "baselines": {k: _figures(v) for k, v in baselines.items()},
            "runs": [_figures(o) for o in runs],
            "pairs": [
                {"bare": bare_run.total_rate, "fmn": fmn_run.total_rate}
                for bare_run, fmn_run in _pairs(baselines.get("bare pika consume+ack"), single)
            ],
            "profile": [{"area": a, "cpu_s": t, "share": f} for a, t, f in profile_rows],
        }
        Path(args.json).write_text(json.dumps(figures, indent=1), encoding="utf-8")
        print(f"  figures written to {args.json}")
    print(f"\nall targets and checks met: {'yes' if met else 'NO'}")
    return 0


def _pairs(bare: Outcome | None, single: Outcome | None) -> list[tuple[Outcome, Outcome]]:
    """The (bare pika, fmn) runs that ran side by side, when both were pooled."""
    if bare is None or single is None:
        return []
    bares, singles = bare.parts or [bare], single.parts or [single]
    return list(zip(bares, singles, strict=True)) if len(bares) == len(singles) else []


def _figures(outcome: Outcome) -> dict[str, Any]:
    return {
        "name": outcome.name,
        "processes": outcome.processes,
        "total_rate": outcome.total_rate,
        "rates": outcome.rates(),
        "cpu_rates": outcome.cpu_rates(),
        "postgres_cpu": outcome.postgres_cpu,
        "per_message_us": per_message_us(outcome),
        "load": list(outcome.load),
        "checks_ok": all(c.ok for c in outcome.checks),
    }


if __name__ == "__main__":
    sys.exit(main())
