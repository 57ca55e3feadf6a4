"""A batched AMQP consumer: many messages per transaction, acked only after the commit.

It reads fedora-messaging's own configuration (``fmn_daemon.broker``: ``amqp_url``,
``tls``, ``queues``, ``exchanges``, ``bindings``, ``qos``), declares what it declares, and decodes
deliveries into fedora-messaging message classes through ``fmn_core.messages``
(one validator per schema, built once). fedora-messaging's own consumer handles
one message per callback and re-checks the schema each time; this one takes up
to ``ingest.batch_size`` messages (whatever has arrived when a writer is
free, else what arrived within ``batch_wait`` seconds; while deliveries come
close together, what arrives within ``linger`` seconds), and for the whole batch
runs one transaction: match, store, outbox rows, commit — then one
``basic_ack(multiple=True)``, once every older batch is committed too.

Failures, sorted the way STYLE rule 10 asks; one delivery can only ever cost itself:

- bounds come first (``ingest.*``): a body longer than ``max_body_bytes`` is let
  go as soon as it arrives, unread; headers nested too deeply are cut by pika's
  decoder itself (``fmn_daemon.frames``), so they cannot kill the connection;
  a body nested deeper than ``max_depth`` is refused before it is decoded;
- a malformed delivery (any exception while decoding it, not only the expected
  ones) gets one log line with its id and reason, is counted and acked with its
  batch (dropped);
- a database that cannot be reached (``is_transient``) leaves the batch unacked
  and is retried with exponential backoff, for as long as it takes (the broker
  redelivers whatever was unacked if this process dies meanwhile); while
  waiting, the AMQP connection keeps sending heartbeats;
- any other failure of a batch (a value the database refuses, a ``RecursionError``,
  a bug) is retried one message at a time, so the others are stored; a message
  that still fails after ``ingest.max_attempts`` tries is put aside as a dead
  message (``fmn_daemon.dead_messages``) with one log line, and acked;
- a lost broker connection is reopened with exponential backoff; deliveries not
  yet committed are simply redelivered, and already-committed ones are not
  stored twice (the message id is the primary key; outbox rows are unique).

The broker connection is served by one thread (pika's ``BlockingConnection`` is
not thread-safe), the database work by ``ingest.writers`` writer threads on
PostgreSQL (one on SQLite); the service starts it and stops it through a
``threading.Event``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.channel
import pika.exceptions
import pika.spec
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from fmn_core.db import Database
from fmn_core.errors import MalformedMessage
from fmn_core.matcher import Matcher
from fmn_core.messages import MessageFacts, facts_of, prepare_validators
from fmn_core.ownership import OwnershipCache
from fmn_core.text import for_log

from .broker import BrokerSettings, BrokerUnavailable, load_broker_settings
from .dead_messages import bury, delivery_line
from .failures import describe as _describe
from .failures import is_transient
from .frames import bound_header_depth, read_frames_lean
from .ingest import IngestResult, json_safe, match_batch, read_delivery, store_batch
from .metrics import Metrics

__all__ = [
    "AmqpDelivery",
    "BrokerSettings",
    "BrokerUnavailable",
    "Consumer",
    "is_transient",
    "load_broker_settings",
    "prefetch_for",
    "writers_for",
]

log = logging.getLogger(__name__)

#: How long deliveries arriving close together are held to gather into one batch
#: (seconds): one arriving within a quarter of this of the previous hand-over
#: (at more than 200 a second) waits up to this long for others; one arriving
#: later goes to an idle writer at once (at 50 a second, one every 20 ms, each does).
LINGER = 0.02


@dataclass(slots=True)
class AmqpDelivery:
    """One AMQP delivery not yet acked."""

    tag: int
    routing_key: str
    properties: pika.spec.BasicProperties
    body: bytes
    #: Why the delivery was refused on arrival (its body was then let go).
    refused: str | None = None

    @property
    def message_id(self) -> str:
        """The id for log lines: escaped and cut (it comes from anyone on the bus)."""
        value = self.properties.message_id
        return for_log(value, limit=120) if isinstance(value, str) and value else "(no id)"

    def raw_line(self) -> bytes:
        """The delivery as a message-file line, for the dead messages."""
        value = self.properties.message_id
        try:
            headers = json_safe(self.properties.headers or {})
        except RecursionError:
            headers = {}
        body: bytes | str = self.body
        # A message file is UTF-8, whatever the delivery's own encoding was.
        with contextlib.suppress(LookupError, UnicodeDecodeError):
            body = self.body.decode(self.properties.content_encoding or "utf-8")
        message_id = value if isinstance(value, str) else ""
        return delivery_line(message_id, self.routing_key, headers, body)


class _Stopping(Exception):
    """Raised inside a consumer thread to leave a retry loop when asked to stop."""


@dataclass(slots=True)
class _Batch:
    """Deliveries decoded by the AMQP thread, for the writer thread to commit."""

    generation: int
    deliveries: list[AmqpDelivery]
    #: The deliveries that decoded, with their message's facts (body text included).
    decoded: list[tuple[AmqpDelivery, MessageFacts]]
    #: Set on the AMQP thread once committed (or put aside): acked with those before it.
    done: bool = False
    #: The deliveries' body bytes, held until the batch is acked.
    size: int = 0


class Consumer:
    """Consumes the configured queues in batches; ``run`` it in its own thread.

    The threads share the work, so that decoding the next batch overlaps with
    committing the previous ones:

    - the AMQP thread (the one calling ``run``) owns the pika connection: it
      receives deliveries, decodes them, hands batches to the writers, and sends
      the acks they ask for (pika is not thread-safe; the writers reach it only
      through ``add_callback_threadsafe``);
    - each writer thread takes a batch, matches it, then stores it, writes its
      outbox rows and commits on a database connection of its own, and asks for
      the ack; while one waits for the database, another matches or sends its
      own batch. The writers share one matcher: matching, and every change to
      it (preference changes and ownership, applied between batches; the rare
      refresh after a filter changed or a one-shot filter fired), hold
      ``_matcher_lock``.

    Writers may commit batches out of their order of arrival; a batch is acked
    (``basic_ack(multiple=True)``, covering every delivery before it) once every
    older batch is committed too, so an ack never covers an uncommitted delivery.
    ``on_ownership_change`` is called (from a writer) when a stored message
    changes package ownership; ``reload_ownership`` may be set from any thread
    to load the ownership table into the matcher again.
    """

    def __init__(
        self,
        db: Database,
        broker: BrokerSettings,
        metrics: Metrics,
        *,
        matcher: Matcher | None = None,
        batch_size: int | None = None,
        batch_wait: float = 0.05,
        linger: float = LINGER,
        writers: int | None = None,
        changes_interval: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        on_ownership_change: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.limits = db.config.ingest
        bound_header_depth(self.limits.max_header_depth)
        self.broker = broker
        self.metrics = metrics
        self.matcher = matcher
        self.batch_size = batch_size or db.config.ingest.batch_size
        self.batch_wait = batch_wait
        self.linger = linger
        self.writers = writers or writers_for(db)
        self.prefetch_count = prefetch_for(broker, self.batch_size, self.writers)
        self.changes_interval = changes_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.on_ownership_change = on_ownership_change
        self.reload_ownership = threading.Event()
        #: Whether the broker connection is open and consuming.
        self.connected = False
        self._db_ok = True
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._generation = 0
        self._consumer_tags: list[str] = []
        self._queue_names: list[str] = []
        #: Body bytes received and not yet acked (AMQP thread only); past
        #: ``ingest.max_inflight_bytes`` the consumers are paused (``_pause``, ``_resume``).
        self._inflight = 0
        self._paused = False
        self._pending: list[AmqpDelivery] = []
        self._pending_since = 0.0
        #: When the last batch was handed over, and until when the pending ones are held.
        self._handed_over = -math.inf
        self._hold_until = 0.0
        self._work: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
        self._writer_threads: list[threading.Thread] = []
        self._writer_error: BaseException | None = None
        #: Per writer: whether it waits for a batch (read by the AMQP thread).
        self._idle = [False] * self.writers
        #: Batches handed over and not yet acked, oldest first (AMQP thread only).
        self._unacked: deque[_Batch] = deque()
        #: Held while matching or changing the matcher (writers share one).
        self._matcher_lock = threading.Lock()
        self._amqp_beat = time.monotonic()
        self._writer_beats = [time.monotonic()] * self.writers
        self._last_changes = 0.0
        #: Users refreshed from state a rolled-back batch wrote; refreshed again later.
        self._stale_users: set[int] = set()
        self._stop: threading.Event | None = None
        #: When the AMQP thread's timer fires (monotonic), and its id (``_arm_tick``).
        self._tick: tuple[float, object | None] = (math.inf, None)

    @property
    def heartbeat(self) -> float:
        """Monotonic time when every thread last looped; the watchdog checks it."""
        return min(self._amqp_beat, *self._writer_beats)

    @property
    def _writer_idle(self) -> bool:
        """Whether a writer waits for a batch."""
        return any(self._idle)

    def _set_ready(self) -> None:
        self.metrics.ready = self.connected and self._db_ok

    # -- set-up -------------------------------------------------------------------

    def load_matcher(self) -> Matcher:
        """Compile every user's preferences (and package ownership) from the database."""
        with self.db.begin() as session:
            # The preferences' queries start first (on PostgreSQL, on connections
            # of their own): the database sorts their rows while the ownership
            # is read, and sends them while the users are compiled.
            self.matcher = Matcher.load(session, load_ownership=_load_ownership, concurrent=True)
        # What is loaded now lives as long as the process: the cyclic collector
        # need not scan it again on every full collection while consuming.
        gc.freeze()
        self._last_changes = time.monotonic()
        stats = self.matcher.stats()
        log.info(
            "matcher loaded: %d users, %d filters (%d indexed, %d checked on every message)",
            stats.users,
            stats.filters,
            stats.indexed,
            stats.always,
        )
        return self.matcher

    def connect(self, *, attempts: int | None = None, timeout: float | None = None) -> None:
        """Open the connection, declare exchanges, queues and bindings, start consuming."""
        self.close()
        try:
            connection = pika.BlockingConnection(
                self.broker.parameters(attempts=attempts, timeout=timeout)
            )
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(
                f"cannot connect to the broker at {self.broker.masked_url()}: {_describe(exc)}"
            ) from exc
        # Deliveries arrive as three frames each: they are read with less work
        # per frame (same decoding, same checks; ``fmn_daemon.frames``).
        read_frames_lean(connection._impl)
        try:
            channel = connection.channel()
            names = self._declare(channel)
            channel.basic_qos(prefetch_count=self.prefetch_count)
            tags = [channel.basic_consume(name, self._on_message) for name in names]
        except (pika.exceptions.AMQPError, OSError) as exc:
            _close_quietly(connection)
            raise BrokerUnavailable(
                f"the broker at {self.broker.masked_url()} refused the declarations: "
                f"{_describe(exc)}"
            ) from exc
        self._generation += 1
        self._connection, self._channel, self._consumer_tags = connection, channel, tags
        self._queue_names = names
        self._pending = []
        self.connected = True
        self._set_ready()
        log.info("consuming %s from %s", ", ".join(names), self.broker.masked_url())

    def _declare(self, channel: Any) -> list[str]:
        passive = self.broker.passive_declares
        for name, settings in self.broker.exchanges.items():
            if name.startswith("amq."):
                continue  # predeclared by the broker; redeclaring is refused
            channel.exchange_declare(
                name,
                exchange_type=settings.get("type", "topic"),
                passive=passive,
                durable=bool(settings.get("durable", True)),
                auto_delete=bool(settings.get("auto_delete", False)),
                arguments=dict(settings.get("arguments") or {}),
            )
        actual: dict[str, str] = {}
        for name, settings in self.broker.queues.items():
            frame = channel.queue_declare(
                name,
                passive=passive,
                durable=bool(settings.get("durable", False)),
                exclusive=bool(settings.get("exclusive", False)),
                auto_delete=bool(settings.get("auto_delete", False)),
                arguments=dict(settings.get("arguments") or {}),
            )
            actual[name] = frame.method.queue
        for binding in self.broker.bindings:
            queue_name = actual.get(binding.get("queue", ""), binding.get("queue", ""))
            for key in binding.get("routing_keys", ()):
                channel.queue_bind(queue_name, binding["exchange"], routing_key=key)
        return list(actual.values())

    def close(self) -> None:
        """Close the broker connection; whatever was not acked goes back to the queue."""
        connection, self._connection, self._channel = self._connection, None, None
        self.connected = False
        self._set_ready()
        self._pending = []
        self._unacked.clear()
        # What was not acked goes back to the broker: nothing is held for it any more.
        self._inflight = 0
        self._paused = False
        if connection is not None:
            _close_quietly(connection)

    # -- the AMQP thread ----------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; then finish the batches in hand and close.

        Never returns because of a broker or database outage: it reconnects and
        retries with backoff until asked to stop. Raises if the writer thread
        fails on a bug, so the service notices.
        """
        self._stop = stop
        self._amqp_beat = time.monotonic()
        self._writer_beats = [self._amqp_beat] * self.writers
        _tune_collector()
        self._writer_threads = [
            threading.Thread(
                target=self._write_loop, args=(n,), name=f"fmn-writer-{n}", daemon=True
            )
            for n in range(self.writers)
        ]
        try:
            # Every schema's validator now, so that no delivery waits for one.
            prepare_validators()
            if self.matcher is None:
                self._with_retry(self.load_matcher, "loading the matcher")
            for writer in self._writer_threads:
                writer.start()
            self._consume(stop)
        except _Stopping:
            pass
        finally:
            if any(w.is_alive() for w in self._writer_threads):
                self._finish_writers()
            self.close()
        if self._writer_error is not None:
            raise RuntimeError("the consumer's writer thread failed") from self._writer_error

    def _finish_writers(self) -> None:
        """Let the writers commit what they hold, sending their acks meanwhile."""
        for _ in self._writer_threads:
            while any(w.is_alive() for w in self._writer_threads):
                try:
                    self._work.put(None, timeout=0.05)
                    break
                except queue.Full:
                    self._events(0.0)
        for writer in self._writer_threads:
            while writer.is_alive():
                self._events(0.05)
                writer.join(0.0)
        self._events(0.0)  # the last acks

    def _events(self, seconds: float) -> None:
        """Serve the connection (heartbeats, acks) for up to ``seconds``."""
        self._amqp_beat = time.monotonic()
        if self._connection is not None:
            try:
                self._connection.process_data_events(time_limit=seconds)
                return
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("lost the broker connection (%s)", _describe(exc))
                self.close()
        if seconds:
            time.sleep(seconds)

    def _consume(self, stop: threading.Event) -> None:
        delay = self.backoff_initial
        while not stop.is_set():
            self._amqp_beat = time.monotonic()
            if self._connection is None:
                try:
                    self.connect()
                    delay = self.backoff_initial
                except BrokerUnavailable as exc:
                    log.warning("%s; retrying in %.1fs", exc, delay)
                    self._wait(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
            try:
                self._pump(stop)
            except _Stopping:
                raise
            except Exception as exc:  # AMQP and socket errors, and whatever pika raises
                lost = len(self._pending)
                log.warning(
                    "lost the broker connection (%s); %d uncommitted deliveries will be "
                    "redelivered; reconnecting in %.1fs",
                    _describe(exc),
                    lost,
                    delay,
                )
                self.close()
                self._wait(delay)
                delay = min(delay * 2, self.backoff_max)

    def _pump(self, stop: threading.Event) -> None:
        connection = self._connection
        assert connection is not None
        self._tick = (math.inf, None)
        while not stop.is_set():
            now = time.monotonic()
            self._amqp_beat = now
            self._check_writer()
            holding = bool(self._pending) and now < self._hold_until
            if holding and self._writer_idle and self._work.empty():
                # Deliveries come close together and the writer waits for them: let
                # the next ones gather in the socket, then read them in one go and
                # hand them over as one batch. Waiting here, not in the connection's
                # loop, where every delivery would end the wait (a wake-up and a
                # batch each). A busy writer makes batches by itself: no waiting then.
                time.sleep(self._hold_until - now)
                now = time.monotonic()
                due = now
            elif not self._pending:
                due = now + 0.25
            else:
                if (due := self._pending_since + self.batch_wait) <= now:
                    due = now + self.batch_wait  # the writer has batches enough in hand
                if holding:
                    due = min(due, self._hold_until)
            self._arm_tick(connection, due, now)
            connection.process_data_events(time_limit=None)
            now = time.monotonic()
            if (
                self._pending
                and not self._work.full()
                and (
                    len(self._pending) >= self.batch_size
                    # An idle writer takes what is here now: a batch waits only
                    # while the previous one is being written, so batches grow
                    # with the load and a lone message is not held back.
                    or (self._writer_idle and self._work.empty() and now >= self._hold_until)
                    or now - self._pending_since >= self.batch_wait
                )
            ):
                self._hand_over(block=False)
            if self._paused and self._inflight <= self.limits.max_inflight_bytes // 2:
                self._resume()
        # Stop taking messages, then hand over the ones received.
        channel = self._channel
        for tag in self._consumer_tags:
            channel.basic_cancel(tag)
        self._consumer_tags = []
        while self._pending:
            self._hand_over(block=True)

    def _pause(self) -> None:
        """Take no more deliveries: the bodies held are past ``ingest.max_inflight_bytes``.

        The prefetch bounds how many deliveries are held, not how large they
        are. Called from the delivery that crossed the bound, so that the ones
        pika has already read behind it go back to the broker (its
        ``basic_cancel`` nacks them) instead of being handed on as well. The
        broker keeps the rest of the queue; the acks of what is held go on, and
        ``_resume`` consumes again once the writers have committed half of it.
        """
        channel = self._channel
        tags, self._consumer_tags = self._consumer_tags, []
        self._paused = True
        for tag in tags:
            channel.basic_cancel(tag)
        self.metrics.inc("ingest_pauses")
        log.info(
            "%.1f MiB of message bodies received and not yet committed "
            "(ingest.max_inflight_bytes: %.1f MiB): taking no more until the writers "
            "have committed half of them",
            self._inflight / 2**20,
            self.limits.max_inflight_bytes / 2**20,
        )

    def _resume(self) -> None:
        """Consume again after ``_pause``, once half of the bound is free."""
        channel = self._channel
        self._consumer_tags = [
            channel.basic_consume(name, self._on_message) for name in self._queue_names
        ]
        self._paused = False
        log.info("taking deliveries again (%.1f MiB held)", self._inflight / 2**20)

    def _arm_tick(self, connection: pika.BlockingConnection, due: float, now: float) -> None:
        """Have the connection's loop return by ``due`` (monotonic), whatever else happens.

        One timer, set again only when it has fired or must fire sooner: a time
        limit on ``process_data_events`` sets and cancels a timer of its own on
        every call, and at a steady rate every delivery is a call of its own.
        """
        armed, timer = self._tick
        if due >= armed:
            return
        if timer is not None:
            connection.remove_timeout(timer)
        self._tick = (due, connection.call_later(max(0.0, due - now), self._on_tick))

    def _on_tick(self) -> None:
        self._tick = (math.inf, None)

    def _check_writer(self) -> None:
        stop = self._stop
        if (
            stop is not None
            and not stop.is_set()
            and any(not w.is_alive() for w in self._writer_threads)
        ):
            raise _Stopping  # a writer died on a bug: ``run`` raises it

    def _on_message(
        self,
        _channel: Any,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        if not self._pending:
            now = self._pending_since = time.monotonic()
            # Close behind the previous batch: the rate is high enough that holding
            # this one for ``linger`` gathers others with it (fewer batches, fewer
            # wake-ups, less CPU per message). After a quieter spell it goes at once.
            close = now - self._handed_over < self.linger / 4
            self._hold_until = now + self.linger if close else now
        delivery = AmqpDelivery(method.delivery_tag, method.routing_key, properties, body)
        if len(body) > self.limits.max_body_bytes:
            # Let the body go now: nothing reads it, and a batch of them must not pile up.
            delivery.refused = (
                f"the body is {len(body)} bytes long; at most {self.limits.max_body_bytes} "
                "are accepted (ingest.max_body_bytes)"
            )
            delivery.body = b""
        self._inflight += len(delivery.body)
        self._pending.append(delivery)
        if self._inflight > self.limits.max_inflight_bytes and not self._paused:
            self._pause()

    def _hand_over(self, *, block: bool) -> None:
        """Decode the oldest pending deliveries and queue them for the writer."""
        batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size :]
        self._pending_since = self._handed_over = time.monotonic()
        # Counted per batch (one lock, not one per delivery); still before any ack.
        self.metrics.inc("messages_in", len(batch))
        decoded: list[tuple[AmqpDelivery, MessageFacts]] = []
        for delivery in batch:
            if delivery.refused is not None:
                log.warning(
                    "message %s: malformed, dropped: %s", delivery.message_id, delivery.refused
                )
                self.metrics.inc("messages_malformed")
                continue
            try:
                message, body_json = read_delivery(
                    delivery.routing_key, delivery.properties, delivery.body, self.limits
                )
                facts = facts_of(message, body_json=body_json)
            except MalformedMessage as exc:
                log.warning(
                    "message %s: malformed, dropped: %s",
                    delivery.message_id,
                    for_log(str(exc), limit=300),
                )
                self.metrics.inc("messages_malformed")
                continue
            except Exception as exc:  # any failure to read one delivery costs only it
                log.warning(
                    "message %s: malformed, dropped: it cannot be read (%s)",
                    delivery.message_id,
                    for_log(_describe(exc), limit=300),
                )
                self.metrics.inc("messages_malformed")
                continue
            decoded.append((delivery, facts))
        item = _Batch(self._generation, batch, decoded, size=sum(len(d.body) for d in batch))
        self._unacked.append(item)
        if not block:
            self._work.put_nowait(item)
            return
        while True:
            try:
                self._work.put(item, timeout=0.05)
                return
            except queue.Full:
                self._check_writer()
                if not all(w.is_alive() for w in self._writer_threads):
                    raise _Stopping from None
                assert self._connection is not None
                self._connection.process_data_events(time_limit=0)

    def _ack(self, item: _Batch, first: str, last: str) -> int | None:
        """Runs on the AMQP thread: ack a committed batch with every one before it.

        Writers commit side by side, so a batch may be committed before an older
        one: it is acked (``multiple``) when every older batch is. Returns the
        delivery tag acked up to, if any.
        """
        if item.generation != self._generation or self._channel is None:
            log.info(
                "messages %s … %s: committed but their connection is gone; their "
                "redelivery will be recognised and skipped",
                first,
                last,
            )
            return None
        item.done = True
        unacked = self._unacked
        tag = None
        while unacked and unacked[0].done:
            acked = unacked.popleft()
            tag = acked.deliveries[-1].tag
            self._inflight -= acked.size
        if tag is not None:
            self._channel.basic_ack(delivery_tag=tag, multiple=True)
        return tag

    # -- the writer thread --------------------------------------------------------

    def _write_loop(self, n: int = 0) -> None:
        try:
            while True:
                self._writer_beats[n] = time.monotonic()
                with self._matcher_lock:
                    self._housekeeping()
                self._idle[n] = True
                try:
                    item = self._work.get(timeout=0.1)
                except queue.Empty:
                    continue
                finally:
                    self._idle[n] = False
                if item is None:
                    return
                try:
                    self._write(item)
                except _Stopping:
                    raise
                except Exception:
                    # A bug outside any one message (``_write`` isolates those): the
                    # batch is logged and left, and acked, or no later batch could be.
                    log.exception(
                        "messages %s … %s: internal error while writing their batch",
                        item.deliveries[0].message_id,
                        item.deliveries[-1].message_id,
                    )
                    self._ask_ack(item)
        except _Stopping:
            return
        except BaseException as exc:
            log.exception("the consumer's writer thread failed")
            self._writer_error = exc

    def _write(self, item: _Batch) -> None:
        if item.decoded:
            result = self._ingest([facts for _, facts in item.decoded])
            if not isinstance(result, IngestResult):
                # Something in the batch fails on its own: find it, one message at a time.
                log.info(
                    "a batch of %d messages failed (%s); storing them one at a time",
                    len(item.decoded),
                    for_log(result, limit=300),
                )
                for delivery, facts in item.decoded:
                    self._ingest_alone(delivery, facts)
        # Everything up to the batch's last tag is committed or put aside on purpose.
        self._ask_ack(item)
        self.metrics.inc("batches")
        log.debug(
            "batch of %d committed (messages %s … %s)",
            len(item.deliveries),
            item.deliveries[0].message_id,
            item.deliveries[-1].message_id,
        )

    def _ask_ack(self, item: _Batch) -> None:
        """Have the AMQP thread ack ``item`` (with every older batch, once they are done)."""
        first, last = item.deliveries[0].message_id, item.deliveries[-1].message_id
        connection = self._connection
        try:
            if connection is None:
                raise pika.exceptions.ConnectionWrongStateError("no connection")
            connection.add_callback_threadsafe(functools.partial(self._ack, item, first, last))
        except (pika.exceptions.AMQPError, OSError, RuntimeError):
            log.info(
                "messages %s … %s: committed but their connection is gone; their redelivery "
                "will be recognised and skipped",
                first,
                last,
            )

    def _ingest_alone(self, delivery: AmqpDelivery, message: MessageFacts) -> None:
        """Store one message, ``ingest.max_attempts`` tries; then put it aside as dead."""
        reason = ""
        for _attempt in range(self.limits.max_attempts):
            result = self._ingest([message])
            if isinstance(result, IngestResult):
                return
            reason = result
        attempts = self.limits.max_attempts
        self._bury(delivery, reason, attempts)
        self.metrics.inc("messages_dead")
        log.error(
            "message %s: failed %d times (%s); put aside as a dead message "
            "(see fmn-daemon messages dead)",
            delivery.message_id,
            attempts,
            for_log(reason, limit=300),
        )

    def _bury(self, delivery: AmqpDelivery, reason: str, attempts: int) -> None:
        """Record a dead message; a database that can't take it is waited for (never lost)."""
        value = delivery.properties.message_id
        raw = delivery.raw_line()
        delay = self.backoff_initial
        while True:
            try:
                with self.db.begin() as session:
                    bury(
                        session,
                        message_id=value if isinstance(value, str) else "",
                        topic=delivery.routing_key,
                        reason=reason,
                        attempts=attempts,
                        raw=raw,
                        limits=self.limits,
                    )
                return
            except Exception as exc:
                # What is stored is escaped and bounded: a refusal here is the database's.
                self.metrics.inc("db_errors")
                log.error(
                    "message %s: cannot record it as dead (%s); not acked, retrying in %.1fs",
                    delivery.message_id,
                    _describe(exc),
                    delay,
                )
                self._wait(delay)
                delay = min(delay * 2, self.backoff_max)

    def _ingest(self, messages: list[MessageFacts]) -> IngestResult | str:
        """Run one transaction for ``messages``, retrying while the database is unreachable.

        Returns the reason (a string) when the batch failed for any other reason
        (the data refused, an exception while encoding it, a bug), after the
        transaction rolled back.
        """
        assert self.matcher is not None
        delay = self.backoff_initial
        lock = self._matcher_lock
        while True:
            refreshed: set[int] = set()
            try:
                with lock:
                    matched = match_batch(self.matcher, messages)
                with self.db.begin() as session:
                    result = store_batch(
                        session,
                        self.matcher,
                        matched,
                        self.metrics,
                        refreshed=refreshed,
                        matcher_lock=lock,
                    )
            except Exception as exc:
                with lock:
                    self._stale_users |= refreshed
                self.metrics.inc("db_errors")
                if not is_transient(exc):
                    with lock:
                        if self._stale_users:
                            self._refresh_stale()
                    return _describe(exc)
                self._db_ok = False
                self._set_ready()
                log.error(
                    "messages %s … %s (%d): database unavailable (%s); not acked, "
                    "retrying in %.1fs",
                    for_log(messages[0].id),
                    for_log(messages[-1].id),
                    len(messages),
                    _describe(exc),
                    delay,
                    exc_info=not isinstance(exc, sa_exc.DBAPIError),
                )
                self._wait(delay)
                delay = min(delay * 2, self.backoff_max)
                with lock:
                    if self._stale_users:
                        self._refresh_stale()
                continue
            if not self._db_ok:
                log.info(
                    "messages %s … %s: the database is back",
                    for_log(messages[0].id),
                    for_log(messages[-1].id),
                )
            self._db_ok = True
            self._set_ready()
            if result.ownership_changed and self.on_ownership_change is not None:
                log.info(
                    "messages %s … %s: package ownership changed; asking for a refresh",
                    for_log(messages[0].id),
                    for_log(messages[-1].id),
                )
                self.on_ownership_change()
            return result

    # -- housekeeping (writer thread) ---------------------------------------------

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self.reload_ownership.is_set():
            self.reload_ownership.clear()
            self._reload_ownership()
        if self._stale_users:
            self._refresh_stale()
        if now - self._last_changes >= self.changes_interval:
            self._last_changes = now
            self._apply_changes()

    def _apply_changes(self) -> None:
        assert self.matcher is not None
        try:
            with self.db.begin() as session:
                count = self.matcher.apply_changes(session)
        except Exception as exc:
            self.metrics.inc("db_errors")
            log.warning("cannot read preference changes (%s); trying again shortly", _describe(exc))
            return
        if count:
            log.info("applied preference changes of %d user(s)", count)

    def _refresh_stale(self) -> None:
        assert self.matcher is not None
        users = set(self._stale_users)
        try:
            with self.db.begin() as session:
                self.matcher.refresh_users(session, users)
        except Exception as exc:
            log.warning("cannot refresh %d user(s) yet (%s)", len(users), _describe(exc))
            return
        self._stale_users -= users

    def _reload_ownership(self) -> None:
        assert self.matcher is not None
        try:
            with self.db.begin() as session:
                self.matcher.set_ownership(_load_ownership(session), session)
        except sa_exc.SQLAlchemyError as exc:
            self.metrics.inc("db_errors")
            self.reload_ownership.set()
            log.warning(
                "cannot reload package ownership (%s); trying again shortly", _describe(exc)
            )
            return
        log.info("package ownership reloaded into the matcher")

    # -- waiting ------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        """Sleep (jittered); raise ``_Stopping`` as soon as ``stop`` is set."""
        deadline = time.monotonic() + seconds * (0.8 + 0.4 * random.random())
        while True:
            now = time.monotonic()
            current = threading.current_thread()
            if current in self._writer_threads:
                self._writer_beats[self._writer_threads.index(current)] = now
            else:
                self._amqp_beat = now
            if self._stop is not None and self._stop.is_set():
                raise _Stopping
            left = deadline - now
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def _with_retry(self, action: Callable[[], object], what: str) -> None:
        delay = self.backoff_initial
        while True:
            try:
                action()
                return
            except Exception as exc:
                self.metrics.inc("db_errors")
                log.error("%s failed (%s); retrying in %.1fs", what, _describe(exc), delay)
                self._wait(delay)
                delay = min(delay * 2, self.backoff_max)


def writers_for(db: Database) -> int:
    """How many writer threads the consumer runs: ``ingest.writers`` on PostgreSQL, else 1.

    SQLite takes one writing transaction at a time: a second writer would only
    wait for the first.
    """
    return db.config.ingest.writers if db.engine.dialect.name == "postgresql" else 1


def prefetch_for(broker: BrokerSettings, batch_size: int, writers: int) -> int:
    """The prefetch the consumer asks the broker for: the configured one, or more.

    Each writer needs two batches unacked, the one it writes and the next one
    gathering, or the AMQP thread has nothing to read while the writers commit.
    """
    return max(broker.prefetch_count, 2 * batch_size * writers)


#: The cyclic collector's young-generation threshold while consuming (Python's is 700).
YOUNG_GC_THRESHOLD = 100_000


def _tune_collector() -> None:
    """Let the collector's youngest generation grow to ``YOUNG_GC_THRESHOLD`` objects.

    Each batch holds a few hundred decoded messages (thousands of small dicts
    and lists) until it is committed: at Python's default threshold the
    collector scans them several times per batch and promotes them to older
    generations, scanned again later. The count that triggers a collection is
    the young objects allocated less those freed, and while consuming it
    rises by a batch or two in flight (tens of thousands of objects) and falls
    again when they are committed and freed: at 10,000 that still meant a
    collection for most batches, each scanning 10,000 live objects and freeing
    none (~5 µs of CPU per message); at 100,000 none happens in steady ingest.
    Garbage cycles, if any, are still collected once they add up to that many
    objects. Process-wide, and only ever raised.
    """
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_GC_THRESHOLD:  # 0: the collector is switched off; left so
        gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


def _load_ownership(session: Session) -> OwnershipCache:
    return OwnershipCache.load(session)


def _close_quietly(connection: pika.BlockingConnection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except (pika.exceptions.AMQPError, OSError):
        pass
