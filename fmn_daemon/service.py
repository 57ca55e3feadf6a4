"""The daemon as a whole: start-up, main loop, shutdown (after uvicorn's ``Server``).

``Service.serve()`` is three steps in order:

1. ``start()`` — within ``startup_timeout``: the database answers and its schema
   is at the newest migration, the matcher is compiled, the broker answers and
   takes the declarations, the senders and the HTTP server are set up. Any
   failure is logged once, whatever was started is closed again, and ``serve``
   returns 1: the daemon never runs half-started. Then ``READY=1``.
2. ``run()`` — the consumer thread, the delivery task and the ownership refresher
   run; the main loop ticks (``WATCHDOG=1`` while the consumer thread is alive
   and looping) until a signal or a failed part asks it to stop.
3. ``stop()`` — ``STOPPING=1``; stop taking messages and finish the batch in
   hand (commit, ack); stop claiming outbox rows and wait for the sends in
   flight up to ``delivery.shutdown_grace_seconds``; cancel what is left;
   close the HTTP server; dispose of the engine.

The first SIGTERM or SIGINT asks for a graceful stop; a second SIGINT forces it
(no waiting for sends in flight). Signal handlers are installed by
``capture_signals`` and the previous ones restored afterwards; they reach the
event loop only through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from fmn_core.config import Config
from fmn_core.db import Database, driver_said, make_engine
from fmn_core.errors import ConfigError, FmnError, report_internal_error
from fmn_core.ownership import OwnershipProvider, ownership_provider, refresh_ownership
from fmn_core.schema import schema_problem

from .concurrency import in_thread, in_unit_of_work
from .consumer import BrokerSettings, BrokerUnavailable, Consumer, load_broker_settings
from .metrics import Metrics
from .systemd import Notifier, watchdog_interval

if TYPE_CHECKING:
    # Imported when start-up needs them, so ``fmn-daemon --help`` stays quick.
    from .delivery import Senders
    from .http import HttpServer
    from .transports.live import LiveHub

__all__ = ["Service", "StartupError"]

log = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Fewest seconds between two ownership refreshes that bus messages asked for.
OWNERSHIP_DEBOUNCE_SECONDS = 60.0
#: How often expired time-bound rules and ended pauses are cleared (the matcher already
#: ignores them from their time on; this deletes them and tells their users).
EXPIRY_SECONDS = 60.0
#: Between two of retention's transactions (``fmn_core.retention``).
PRUNE_PAUSE_SECONDS = 0.05


class StartupError(FmnError):
    """The daemon could not start; the message says what did not answer."""


@dataclass
class _Parts:
    db: Database | None = None
    consumer: Consumer | None = None
    delivery: Senders | None = None
    live: LiveHub | None = None
    http: HttpServer | None = None


class Service:
    """The fmn daemon: consumer, senders and HTTP endpoints in one process.

    ``consume``/``deliver``/``serve_http`` choose the parts (a deployment may
    run consumers and senders on different hosts); ``serve_http`` defaults to
    ``config.http.enabled``.
    """

    def __init__(
        self,
        config: Config,
        fm_config_path: str | os.PathLike[str] | None = None,
        *,
        consume: bool = True,
        deliver: bool = True,
        serve_http: bool | None = None,
        startup_timeout: float = 30.0,
        notifier: Notifier | None = None,
        broker: BrokerSettings | None = None,
    ) -> None:
        self.config = config
        self.fm_config_path = fm_config_path
        self.consume = consume
        self.deliver = deliver
        self.serve_http = config.http.enabled if serve_http is None else serve_http
        self.startup_timeout = startup_timeout
        self.notifier = notifier if notifier is not None else Notifier()
        self.broker = broker
        self.metrics = Metrics()
        self.should_exit = False
        self.force_exit = False
        #: Set when a part failed on its own; ``serve`` then returns 1.
        self.failed = False
        self.parts = _Parts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._consumer_stop = threading.Event()
        self._consumer_done: asyncio.Future[None] | None = None
        self._consumer_thread: threading.Thread | None = None
        self._delivery_stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._delivery_task: asyncio.Task[Any] | None = None
        self._ownership_now: asyncio.Event | None = None
        self._watchdog = watchdog_interval()

    # -- the whole life ------------------------------------------------------------

    async def serve(self) -> int:
        """Start, run until asked to stop, stop; return the process's exit code."""
        with self.capture_signals():
            try:
                await self.start()
            except StartupError as exc:
                log.error("start-up failed: %s", exc)
                return 1
            try:
                await self.run()
            finally:
                await self.stop()
        return 1 if self.failed else 0

    # -- start-up -----------------------------------------------------------------

    async def start(self) -> None:
        """Bring every part up within the start-up timeout, or raise ``StartupError``."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._delivery_stop = asyncio.Event()
        self._ownership_now = asyncio.Event()
        try:
            await asyncio.wait_for(self._start(), timeout=self.startup_timeout)
        except TimeoutError:
            await self._close_parts()
            raise StartupError(
                f"not ready within {self.startup_timeout:g}s; is the database or the broker slow "
                "to answer?"
            ) from None
        except StartupError:
            await self._close_parts()
            raise
        except (ConfigError, BrokerUnavailable) as exc:
            await self._close_parts()
            raise StartupError(str(exc)) from exc
        except Exception as exc:
            await self._close_parts()
            notice = report_internal_error(log, "starting the daemon", exc)
            raise StartupError(str(notice)) from exc
        self.metrics.ready = True
        self.metrics.tick()
        self.notifier.ready(self._status())
        log.info("fmn daemon ready (%s)", self._status())

    async def _start(self) -> None:
        if self.consume and self.broker is None:
            self.broker = load_broker_settings(self.fm_config_path)
        db = self.parts.db = Database(self.config, _engine_for(self.config.database_url))
        await in_thread(_check_database, db)
        if self.consume:
            assert self.broker is not None
            consumer = Consumer(
                db, self.broker, self.metrics, on_ownership_change=self._ownership_changed
            )
            self.parts.consumer = consumer
            await in_thread(consumer.load_matcher)
            _return_freed_memory()
            await in_thread(consumer.connect, attempts=1, timeout=min(10.0, self.startup_timeout))
        if self.deliver or self.serve_http:
            from .transports.live import LiveHub

            self.parts.live = LiveHub()
        if self.deliver:
            from .delivery import Senders

            self.parts.delivery = Senders(db, self.config, self.metrics, self.parts.live)
        if self.serve_http:
            from .http import start_http

            try:
                runner = start_http(self.config, db, self.metrics, self.parts.live)
                self.parts.http = await runner if inspect.isawaitable(runner) else runner
            except OSError as exc:
                raise StartupError(
                    f"cannot serve HTTP on {self.config.http.host}:{self.config.http.port}: "
                    f"{exc.strerror or exc}"
                ) from exc

    def _status(self) -> str:
        parts = [
            name
            for name, on in (
                ("consuming", self.consume),
                ("delivering", self.deliver),
                ("serving HTTP", self.serve_http),
            )
            if on
        ]
        return ", ".join(parts) or "idle"

    # -- running ------------------------------------------------------------------

    async def run(self) -> None:
        """Run the parts and tick until asked to stop (or a part fails)."""
        assert self._loop is not None and self._wakeup is not None
        loop = self._loop
        if self.parts.consumer is not None:
            self._consumer_done = loop.create_future()
            self._consumer_thread = threading.Thread(
                target=self._consumer_main, name="fmn-consumer", daemon=True
            )
            self._consumer_thread.start()
        if self.parts.delivery is not None:
            assert self._delivery_stop is not None
            self._delivery_task = self._spawn(
                self.parts.delivery.run(self._delivery_stop), "delivery"
            )
        provider = ownership_provider(self.config)
        if provider is not None and self.parts.consumer is not None:
            self._spawn(self._ownership_loop(provider), "ownership")
        if self.parts.consumer is not None:
            self._spawn(self._expiry_loop(), "expiry")
            if self.config.retention.days:
                self._spawn(self._retention_loop(), "retention")
        tick = min(1.0, self._watchdog) if self._watchdog else 1.0
        while not self.should_exit:
            self._on_tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=tick)
            self._wakeup.clear()

    def _on_tick(self) -> None:
        self.metrics.tick()
        if self._consumer_done is not None and self._consumer_done.done() and not self.should_exit:
            error = self._consumer_done.exception()
            log.error("the consumer stopped on its own (%s); shutting down", error or "no error")
            self._fail()
            return
        if self._delivery_task is not None and self._delivery_task.done() and not self.should_exit:
            error = None if self._delivery_task.cancelled() else self._delivery_task.exception()
            log.error("the senders stopped on their own (%s); shutting down", error or "no error")
            self._fail()
            return
        consumer = self.parts.consumer
        if self._watchdog and consumer is not None:
            stale = time.monotonic() - consumer.heartbeat
            if stale > 2 * self._watchdog:
                log.error(
                    "the consumer thread has not looped for %.0fs; not pinging the watchdog", stale
                )
                return
        self.notifier.watchdog()

    def _fail(self) -> None:
        self.failed = True
        self.should_exit = True

    def _spawn(self, coroutine: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(f"fmn-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: self._wake())
        return task

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _consumer_main(self) -> None:
        consumer = self.parts.consumer
        assert consumer is not None and self._loop is not None and self._consumer_done is not None
        loop, done = self._loop, self._consumer_done
        outcome: BaseException | None = None
        try:
            consumer.run(self._consumer_stop)
        except BaseException as exc:
            log.exception("the consumer thread crashed")
            outcome = exc
        try:
            loop.call_soon_threadsafe(_settle, done, outcome)
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:
            # The loop is closed: the service stopped without waiting for this thread
            # (it outlived the stop grace), so nobody is left to hear how it ended.
            log.info("the consumer thread ended after the service had stopped")

    # -- ownership ----------------------------------------------------------------

    def _ownership_changed(self) -> None:
        """Called from the consumer thread: a bus message changed package ownership."""
        if self._loop is not None and self._ownership_now is not None:
            self._loop.call_soon_threadsafe(self._ownership_now.set)

    async def _ownership_loop(self, provider: OwnershipProvider) -> None:
        assert self._ownership_now is not None and self.parts.db is not None
        db, consumer = self.parts.db, self.parts.consumer
        interval = max(60.0, self.config.ownership.refresh_minutes * 60.0)
        last = 0.0
        while True:
            wait = OWNERSHIP_DEBOUNCE_SECONDS - (time.monotonic() - last) if last else 0.0
            if wait > 0:
                await asyncio.sleep(wait)
            self._ownership_now.clear()
            last = time.monotonic()
            try:
                changed = await in_unit_of_work(db, refresh_ownership, provider)
            except FmnError as exc:
                log.warning("package ownership not refreshed: %s", exc)
            except Exception:
                self.metrics.inc("db_errors")
                log.warning("package ownership not refreshed", exc_info=True)
            else:
                if changed and consumer is not None:
                    consumer.reload_ownership.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ownership_now.wait(), timeout=interval)

    async def _expiry_loop(self) -> None:
        """Housekeeping: delete expired time-bound rules, end pauses, tell their users."""
        from fmn_core.expiry import expire_preferences

        assert self.parts.db is not None
        db = self.parts.db
        while True:
            try:
                ended = await in_unit_of_work(db, expire_preferences)
            except Exception:
                self.metrics.inc("db_errors")
                log.warning("expired rules and pauses not cleared", exc_info=True)
            else:
                if ended:
                    log.info("ended %d time-bound rules and pauses", ended)
            await asyncio.sleep(EXPIRY_SECONDS)

    async def _retention_loop(self) -> None:
        """Delete what is past ``retention.days`` (``fmn_core.retention``), a batch per
        transaction, once started and then every ``retention.interval_minutes``."""
        from fmn_core.retention import Pruning, cutoff_for

        assert self.parts.db is not None
        db = self.parts.db
        retention = self.config.retention
        while True:
            pruning = Pruning(
                cutoff_for(retention.days),
                retention.batch_rows,
                codes_counted_for=self.config.confirmation.counted_for,
            )
            try:
                # One batch per transaction, and a chance to stop between them: a first
                # pass over a large backlog never holds a lock, or the stop, for long.
                while step := await in_unit_of_work(db, pruning.step):
                    self.metrics.inc("rows_pruned", step.total)
                    # SQLite's writers queue on one lock: let the consumer's take it
                    # between two steps rather than behind a whole pass.
                    await asyncio.sleep(PRUNE_PAUSE_SECONDS)
            except Exception:
                self.metrics.inc("db_errors")
                log.warning(
                    "retention: pruning stopped after %s; trying again in %d minutes",
                    pruning.done.describe(),
                    retention.interval_minutes,
                    exc_info=True,
                )
            else:
                if pruning.done:
                    log.info(
                        "retention: pruned %s older than %d days",
                        pruning.done.describe(),
                        retention.days,
                    )
            await asyncio.sleep(retention.interval_minutes * 60)

    # -- stopping -----------------------------------------------------------------

    async def stop(self) -> None:
        """Stop in order: messages, the batch in hand, outbox claims, sends, the rest."""
        self.notifier.stopping()
        self.metrics.ready = False
        grace = self.config.delivery.shutdown_grace_seconds
        log.info("stopping%s", " now (forced)" if self.force_exit else f" (grace {grace:g}s)")
        self._consumer_stop.set()
        if self._consumer_done is not None and not self.force_exit:
            try:
                await asyncio.wait_for(asyncio.shield(self._consumer_done), timeout=grace)
            except TimeoutError:
                log.warning(
                    "the consumer did not finish its batch within %gs; its messages "
                    "will be redelivered",
                    grace,
                )
            except BaseException:
                pass
        if self._delivery_stop is not None:
            self._delivery_stop.set()
        if self._delivery_task is not None:
            await self._finish(self._delivery_task, grace + 5.0, "sends in flight")
        for task in list(self._tasks):
            task.cancel("fmn daemon stopping")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_parts()
        log.info("stopped")

    async def _finish(self, task: asyncio.Task[Any], limit: float, what: str) -> None:
        if not self.force_exit:
            done, _ = await asyncio.wait({task}, timeout=limit)
            if done:
                return
            log.warning("%s did not finish within %gs; cancelling them", what, limit)
        task.cancel(f"fmn daemon stopping: {what} cut short")
        await asyncio.gather(task, return_exceptions=True)

    async def _close_parts(self) -> None:
        parts, self.parts = self.parts, _Parts()
        if parts.http is not None:
            try:
                await parts.http.cleanup()
            except Exception:
                log.warning("closing the HTTP server failed", exc_info=True)
        if parts.consumer is not None and (
            self._consumer_thread is None or not self._consumer_thread.is_alive()
        ):
            parts.consumer.close()
        if parts.db is not None:
            parts.db.dispose()
        self.notifier.close()

    # -- signals ------------------------------------------------------------------

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install SIGTERM/SIGINT handlers for the duration; restore the old ones after."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signals can only be handled in the main thread
            return
        loop = asyncio.get_running_loop()

        def handler(sig: int, _frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.handle_exit, sig)

        previous = {sig: signal.signal(sig, handler) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def handle_exit(self, sig: int) -> None:
        """First signal: stop gracefully. A second SIGINT: stop now."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            log.warning("second interrupt: stopping without waiting for sends in flight")
            if self._delivery_task is not None:
                self._delivery_task.cancel("fmn daemon stopping: forced")
        else:
            log.info("received %s; stopping", signal.Signals(sig).name)
            self.should_exit = True
        self._wake()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _engine_for(url: str) -> Engine:
    # A bounded connect time, so start-up and retries notice an unreachable host.
    if make_url(url).get_backend_name() == "postgresql":
        return make_engine(url, connect_args={"connect_timeout": 10})
    return make_engine(url)


def _check_database(db: Database) -> None:
    """Raise ``StartupError`` unless the database answers with the newest schema."""
    masked = make_url(db.config.database_url).render_as_string(hide_password=True)
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        problem = schema_problem(db.engine)
    except FmnError:
        raise  # says what is wrong itself (scripts missing, several revisions at once)
    except Exception as exc:
        raise StartupError(f"the database {masked} does not answer: {driver_said(exc)}") from exc
    if problem is not None:
        raise StartupError(f"the database {masked} {problem}")


def _return_freed_memory() -> None:
    """Give the C library's free pages back to the system after the matcher's load.

    Loading 100k users frees its rows and snapshots among what stays; glibc
    keeps such pages for reuse unless asked (``malloc_trim``), which returns
    about 14 MB there. Where the C library has no ``malloc_trim``, nothing is done.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
