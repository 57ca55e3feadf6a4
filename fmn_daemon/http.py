"""The daemon's HTTP endpoints (aiohttp).

======================================  ==============================================
``GET /live``                           liveness: 200 while the main loop ticks
``GET /ready``                          readiness: 200 once database and broker answered
``GET /metrics``                        counters, Prometheus text format
``GET /feeds/<token>.atom`` / ``.rss``  a user's feed (newest 50 sent ``rss`` rows)
``GET /live/ws/<token>``                the live feed over WebSocket
``GET /live/sse/<token>``               the live feed as Server-Sent Events
``GET /unsubscribe/<token>``            a page with a one-click unsubscribe form
``POST /unsubscribe/<token>``           RFC 8058 one-click unsubscribe
======================================  ==============================================

Feed and live tokens are the user's confirmed ``rss``/``live`` destination: an
unknown token is a 404, the same as a wrong URL. Unsubscribe tokens are signed
(:class:`fmn_core.rendering.Links`); a forged or altered one is a 404 and changes
nothing. Unsubscribing turns the context off through the preference service,
like the user doing it themselves.

Live clients get notifications this process delivers at once (``LiveHub``),
and every ``LIVE_POLL_SECONDS`` the ones other daemons delivered, from the
database. ``?since=<id>`` (or SSE's ``Last-Event-ID``) first replays what was
sent after that notification.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeVar

from aiohttp import WSMsgType, web
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fmn_core import outbox, preferences
from fmn_core.config import Config
from fmn_core.db import Database
from fmn_core.errors import UserError
from fmn_core.models import utcnow
from fmn_core.outbox import SentEntry
from fmn_core.rendering import Links

from .concurrency import in_thread, in_unit_of_work
from .metrics import Metrics
from .transports.feed import FEED_LIMIT, build_feed
from .transports.live import LiveHub, Subscription

__all__ = ["LIVENESS_MAX_AGE", "LIVE_POLL_SECONDS", "build_app", "start_http"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``/live`` fails when the main loop has not ticked for this long.
LIVENESS_MAX_AGE = 60.0
#: How often a live client's connection looks for rows other daemons sent.
LIVE_POLL_SECONDS = 2.0
#: A comment line keeps idle SSE connections open through proxies.
SSE_HEARTBEAT_SECONDS = 15.0
_REPLAY_LIMIT = 50

_DB: web.AppKey[Database] = web.AppKey("db", Database)
_CONFIG: web.AppKey[Config] = web.AppKey("config", Config)
_METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
_LIVE: web.AppKey[LiveHub] = web.AppKey("live", LiveHub)
_LINKS: web.AppKey[Links] = web.AppKey("links", Links)
_STREAMS: web.AppKey[set[_LiveStream]] = web.AppKey("streams")


async def _core(request: web.Request, function: Callable[..., T], /, *args: Any, **kw: Any) -> T:
    """Run ``function(session, ...)`` in one transaction, in a worker thread."""
    return await in_unit_of_work(request.app[_DB], function, *args, **kw)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    document = (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width'><title>{html.escape(title)}</title>"
        "</head><body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )
    return web.Response(
        text=document,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _not_found() -> web.Response:
    return _page("Not found", "<p>There is nothing here.</p>", status=404)


# -- health and metrics --------------------------------------------------------------


async def _liveness(request: web.Request) -> web.Response:
    alive = request.app[_METRICS].alive(LIVENESS_MAX_AGE)
    return web.Response(text="alive\n" if alive else "stuck\n", status=200 if alive else 503)


async def _readiness(request: web.Request) -> web.Response:
    ready = request.app[_METRICS].ready
    return web.Response(text="ready\n" if ready else "not ready\n", status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[_METRICS]
    lines: list[str] = []
    for name, value in metrics.snapshot().items():
        lines += [f"# TYPE fmn_{name}_total counter", f"fmn_{name}_total {value}"]
    lines += ["# TYPE fmn_ready gauge", f"fmn_ready {int(metrics.ready)}"]
    lines += [
        "# TYPE fmn_live_clients gauge",
        f"fmn_live_clients {request.app[_LIVE].subscribers()}",
    ]
    try:
        counts = await _core(request, outbox.counts_by_state)
    except SQLAlchemyError:
        log.warning("metrics: the outbox could not be counted", exc_info=True)
    else:
        lines.append("# TYPE fmn_outbox_notifications gauge")
        lines += [f'fmn_outbox_notifications{{state="{s}"}} {n}' for s, n in counts.items()]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


# -- feeds ---------------------------------------------------------------------------

_FEED_TYPES = {"atom": "application/atom+xml", "rss": "application/rss+xml"}


def _feed(session: Session, token: str) -> tuple[str, list[SentEntry]] | None:
    owner = outbox.owner_of_address(session, "rss", token)
    if owner is None:
        return None
    user_id, user = owner
    return user, outbox.sent_entries(session, user_id, "rss", limit=FEED_LIMIT)


async def _feed_handler(request: web.Request) -> web.Response:
    token, _, suffix = request.match_info["name"].rpartition(".")
    if suffix not in _FEED_TYPES or not token:
        return _not_found()
    kind: Literal["atom", "rss"] = "atom" if suffix == "atom" else "rss"
    found = await _core(request, _feed, token)
    if found is None:
        return _not_found()
    user, entries = found
    config = request.app[_CONFIG]
    feed_url = f"{config.http.public_url.rstrip('/')}/feeds/{token}.{suffix}"
    document = await in_thread(build_feed, user, entries, feed_url=feed_url, kind=kind)
    return web.Response(
        body=document,
        headers={
            "Content-Type": f"{_FEED_TYPES[suffix]}; charset=utf-8",
            "Cache-Control": "private, max-age=60",
            "Referrer-Policy": "no-referrer",
        },
    )


# -- the live feed -------------------------------------------------------------------


def _event(entry: SentEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "message_id": entry.message_id,
        "topic": entry.topic,
        "summary": entry.summary,
        "url": entry.url,
        "app": entry.app,
        "filter": entry.filter_name,
        "created": entry.created_at.isoformat(),
    }


def _since(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


_END: dict[str, Any] = {"_end": True}


class _LiveStream:
    """One live client: events from the hub, the database's catch-up, no repeats."""

    def __init__(self, request: web.Request, user_id: int, token: str, since: int | None) -> None:
        self.request = request
        self.user_id = user_id
        self.token = token
        self.since = since
        self.seen: set[int] = set()
        # Polls look for rows sent from a little before the last one seen: clocks
        # of several daemons differ, and a row's sent_at precedes its commit.
        self.poll_from = utcnow() - dt.timedelta(seconds=LIVE_POLL_SECONDS * 2)
        self.closed = False
        self._subscription: Subscription | None = None

    def close(self) -> None:
        """End :meth:`events` now (the client left, or the server is stopping)."""
        self.closed = True
        if self._subscription is not None:
            self._subscription.offer(_END)

    async def _from_database(self, **kwargs: Any) -> list[dict[str, Any]]:
        try:
            entries = await _core(
                self.request,
                outbox.sent_entries,
                self.user_id,
                "live",
                limit=_REPLAY_LIMIT,
                **kwargs,
            )
        except SQLAlchemyError:
            log.warning("live: could not read the outbox", exc_info=True)
            return []
        if entries:
            newest = max(e.sent_at for e in entries)
            self.poll_from = max(
                self.poll_from, newest - dt.timedelta(seconds=LIVE_POLL_SECONDS * 2)
            )
        return [_event(e) for e in reversed(entries)]

    def _fresh(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fresh = [e for e in events if e["id"] not in self.seen]
        self.seen.update(e["id"] for e in fresh)
        if len(self.seen) > 10_000:
            self.seen = set(sorted(self.seen)[-5_000:])
        return fresh

    async def events(self) -> AsyncIterator[list[dict[str, Any]]]:
        """Batches of new events until closed; an empty batch is a quiet interval."""
        app = self.request.app
        streams = app[_STREAMS]
        loop = asyncio.get_running_loop()
        with app[_LIVE].subscribe(self.token) as subscription:
            self._subscription = subscription
            streams.add(self)
            try:
                if self.since is not None:
                    yield self._fresh(await self._from_database(after_id=self.since))
                last_poll = loop.time()
                while not self.closed:
                    try:
                        first = await asyncio.wait_for(subscription.queue.get(), LIVE_POLL_SECONDS)
                    except TimeoutError:
                        first = None
                    batch = [] if first is None else [first]
                    while not subscription.queue.empty():
                        batch.append(subscription.queue.get_nowait())
                    if self.closed or any(event is _END for event in batch):
                        return
                    if loop.time() - last_poll >= LIVE_POLL_SECONDS:
                        last_poll = loop.time()
                        # Rows other daemons sent to this user meanwhile.
                        batch += await self._from_database(since=self.poll_from)
                    yield self._fresh(batch)
            finally:
                streams.discard(self)
                self._subscription = None


async def _live_owner(request: web.Request) -> tuple[int, str] | None:
    return await _core(request, outbox.owner_of_address, "live", request.match_info["token"])


async def _live_ws(request: web.Request) -> web.StreamResponse:
    owner = await _live_owner(request)
    if owner is None:
        return _not_found()
    socket = web.WebSocketResponse(heartbeat=30.0)
    await socket.prepare(request)
    stream = _LiveStream(
        request, owner[0], request.match_info["token"], _since(request.query.get("since"))
    )
    reader = asyncio.create_task(_drain_client(socket), name="live-ws-reader")
    reader.add_done_callback(lambda _: stream.close())
    try:
        async for batch in stream.events():
            if reader.done() or socket.closed:
                break
            for event in batch:
                await socket.send_json(event)
    except ConnectionResetError:
        pass
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await socket.close()
    return socket


async def _drain_client(socket: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, so a close is noticed."""
    async for message in socket:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


async def _live_sse(request: web.Request) -> web.StreamResponse:
    owner = await _live_owner(request)
    if owner is None:
        return _not_found()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    since = _since(request.headers.get("Last-Event-ID") or request.query.get("since"))
    stream = _LiveStream(request, owner[0], request.match_info["token"], since)
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    try:
        await response.write(b"retry: 5000\n\n")
        async for batch in stream.events():
            for event in batch:
                payload = json.dumps(event, separators=(",", ":"))
                await response.write(
                    f"id: {event['id']}\nevent: notification\ndata: {payload}\n\n".encode()
                )
            if batch:
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= SSE_HEARTBEAT_SECONDS:
                quiet_since = loop.time()
                await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, ConnectionError):
        pass
    return response


# -- one-click unsubscribe -------------------------------------------------------------


def _unsubscribe(session: Session, user: str, context: str) -> None:
    preferences.set_context_enabled(session, preferences.Actor(user), context, False)


async def _unsubscribe_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    named = request.app[_LINKS].verify_unsubscribe_token(token)
    if named is None:
        return _not_found()
    user, context = named
    body = (
        f"<p>Stop all <b>{html.escape(context)}</b> notifications from fmn for "
        f"<b>{html.escape(user)}</b>? Filters and addresses are kept; turn the context on "
        "again in the fmn TUI or with the fmn bot.</p>"
        f"<form method='post' action='/unsubscribe/{html.escape(token, quote=True)}'>"
        "<input type='hidden' name='List-Unsubscribe' value='One-Click'>"
        "<button type='submit'>Unsubscribe</button></form>"
    )
    return _page("Unsubscribe", body)


async def _unsubscribe_post(request: web.Request) -> web.Response:
    named = request.app[_LINKS].verify_unsubscribe_token(request.match_info["token"])
    if named is None:
        return _not_found()
    user, context = named
    try:
        await _core(request, _unsubscribe, user, context)
    except UserError as exc:
        return _page("Not unsubscribed", f"<p>{html.escape(str(exc))}</p>", status=400)
    log.info("user %s unsubscribed from %s with a one-click link", user, context)
    return _page(
        "Unsubscribed",
        f"<p>fmn sends no more {html.escape(context)} notifications to {html.escape(user)}.</p>",
    )


# -- the application -------------------------------------------------------------------


def build_app(
    config: Config,
    db: Database,
    metrics: Metrics,
    live: LiveHub | None = None,
    *,
    links: Links | None = None,
) -> web.Application:
    """The aiohttp application with every endpoint."""
    app = web.Application()
    app[_CONFIG] = config
    app[_DB] = db
    app[_METRICS] = metrics
    app[_LIVE] = live if live is not None else LiveHub()
    app[_LINKS] = links if links is not None else Links.from_config(config)
    streams: set[_LiveStream] = set()
    app[_STREAMS] = streams

    async def closing(app: web.Application) -> None:
        # Ends live streams so shutdown does not wait for their clients.
        open_streams: set[_LiveStream] = app[_STREAMS]
        for stream in list(open_streams):
            stream.close()

    app.on_shutdown.append(closing)
    app.router.add_get("/live", _liveness)
    app.router.add_get("/ready", _readiness)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/feeds/{name}", _feed_handler)
    app.router.add_get("/live/ws/{token}", _live_ws)
    app.router.add_get("/live/sse/{token}", _live_sse)
    app.router.add_get("/unsubscribe/{token}", _unsubscribe_page)
    app.router.add_post("/unsubscribe/{token}", _unsubscribe_post)
    return app


async def start_http(
    config: Config,
    db: Database,
    metrics: Metrics,
    live: LiveHub | None = None,
    *,
    links: Links | None = None,
) -> web.AppRunner:
    """Serve the endpoints on ``http.host``:``http.port``; ``await runner.cleanup()`` stops."""
    runner = web.AppRunner(
        build_app(config, db, metrics, live, links=links), access_log=None, shutdown_timeout=5.0
    )
    await runner.setup()
    site = web.TCPSite(runner, config.http.host, config.http.port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("HTTP endpoints on http://%s:%d", config.http.host, config.http.port)
    return runner
