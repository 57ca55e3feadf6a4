"""The daemon's HTTP endpoints (aiohttp).

======================================  ==============================================
``GET /live``                           liveness: 200 while the main loop ticks
``GET /ready``                          readiness: 200 once database and broker answered
``GET /metrics``                        counters, Prometheus text format
``GET /feeds/<token>.atom`` / ``.rss``  a user's feed (newest 50 sent ``rss`` rows)
``GET /feeds/<token>.atom?before=<c>``  the next 50 older ones (RFC 5005 archive page)
``GET /live/ws/<token>``                the live feed over WebSocket
``GET /live/sse/<token>``               the live feed as Server-Sent Events
``GET /unsubscribe/<token>``            a page with a one-click unsubscribe form
``POST /unsubscribe/<token>``           RFC 8058 one-click unsubscribe
``GET /act/<token>``                    what a notification's action link would change
``POST /act/<token>``                   apply it ("mute this package", ...)
======================================  ==============================================

Feed and live tokens are the user's confirmed ``rss``/``live`` destination: an
unknown token is a 404, the same as a wrong URL. A feed document links to the next
older page (``prev-archive``, RFC 5005), down to the oldest row retention kept, so a
reader that polls less often than 50 notifications arrive misses none; the cursor
(:func:`fmn_core.feeds.feed_cursor`) is a place in send order, and reads only the
token owner's rows. A feed entry's action links name the token whose feed carried
them, and stop working once the user removes that token. Unsubscribe tokens are signed
(:class:`fmn_core.rendering.Links`); a forged or altered one is a 404 and changes
nothing. Unsubscribing turns the context off through the preference service,
like the user doing it themselves. Action links (:mod:`fmn_core.actions`) work the
same way: signed, bound to one user, one notification and one action; the GET page
only shows what would change, the POST applies it through the preference service and
says what it wrote. An expired or withdrawn link is refused with a page saying so (410).

Live clients get notifications this process delivers at once (``LiveHub``),
and every ``LIVE_POLL_SECONDS`` the ones other daemons delivered, from the
database. ``?since=<id>`` (or SSE's ``Last-Event-ID``) first replays what was
sent after that notification was sent (in the order rows were sent, not by id: a
digest sends lower ids after higher ones), every page of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fmn_core import actions, feeds, outbox, preferences
from fmn_core.config import Config
from fmn_core.db import Database
from fmn_core.errors import ActionLinkRefused, InvalidArgument, UserError
from fmn_core.feeds import SentEntry
from fmn_core.models import User
from fmn_core.rendering import ActionClaim, Links

from .concurrency import in_thread, in_unit_of_work
from .limits import (
    ACCEPT_BACKLOG,
    AcceptErrorLog,
    ConnectionGuard,
    LiveSlots,
    ServerErrorLog,
    connection_cap,
)
from .metrics import Metrics
from .transports.feed import FEED_LIMIT, FeedPage, build_feed
from .transports.live import LIVE_POLL_SECONDS, LiveHub, LiveStream

__all__ = [
    "LIVENESS_MAX_AGE",
    "LIVE_POLL_SECONDS",
    "HttpServer",
    "build_app",
    "parse_since",
    "start_http",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: ``/live`` fails when the main loop has not ticked for this long.
LIVENESS_MAX_AGE = 60.0
#: A comment line keeps idle SSE connections open through proxies.
SSE_HEARTBEAT_SECONDS = 15.0
_REPLAY_LIMIT = 50

_DB: web.AppKey[Database] = web.AppKey("db", Database)
_CONFIG: web.AppKey[Config] = web.AppKey("config", Config)
_METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
_LIVE: web.AppKey[LiveHub] = web.AppKey("live", LiveHub)
_LINKS: web.AppKey[Links] = web.AppKey("links", Links)
_STREAMS: web.AppKey[set[LiveStream]] = web.AppKey("streams")
_GUARD: web.AppKey[ConnectionGuard] = web.AppKey("guard", ConnectionGuard)
_SLOTS: web.AppKey[LiveSlots] = web.AppKey("live_slots", LiveSlots)

#: The most digits a notification id has (a 64-bit integer).
_ID_MAX_DIGITS = 19
_ID_MAX = 2**63 - 1


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
    guard = request.app[_GUARD]
    lines += [
        "# TYPE fmn_http_connections gauge",
        f"fmn_http_connections {guard.open}",
        "# TYPE fmn_http_connections_refused_total counter",
        f"fmn_http_connections_refused_total {guard.refused.total}",
        "# TYPE fmn_http_slow_heads_closed_total counter",
        f"fmn_http_slow_heads_closed_total {guard.slow_heads.total}",
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


@dataclass(frozen=True)
class _FeedRead:
    user: str
    nonce: int
    entries: list[SentEntry]
    older: feeds.Position | None


def _feed(session: Session, token: str, before: feeds.Position | None) -> _FeedRead | None:
    owner = feeds.owner_of_address(session, "rss", token)
    if owner is None:
        return None
    user_id, user = owner
    # Entries carry action links signed with the user's current nonce.
    nonce = session.scalar(select(User.link_nonce).where(User.id == user_id)) or 0
    entries, older = feeds.sent_page(session, user_id, "rss", before=before, limit=FEED_LIMIT)
    return _FeedRead(user, nonce, entries, older)


async def _feed_handler(request: web.Request) -> web.Response:
    token, _, suffix = request.match_info["name"].rpartition(".")
    if suffix not in _FEED_TYPES or not token:
        return _not_found()
    kind: Literal["atom", "rss"] = "atom" if suffix == "atom" else "rss"
    cursor = request.query.get("before")
    before: feeds.Position | None = None
    if cursor is not None:
        try:
            before = feeds.parse_feed_cursor(cursor)
        except InvalidArgument as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
    found = await _core(request, _feed, token, before)
    if found is None:
        return _not_found()
    config = request.app[_CONFIG]
    feed_url = f"{config.http.public_url.rstrip('/')}/feeds/{token}.{suffix}"
    page = FeedPage(
        self_url=feed_url if before is None else f"{feed_url}?before={feeds.feed_cursor(before)}",
        prev_archive=(
            f"{feed_url}?before={feeds.feed_cursor(found.older)}"
            if found.older is not None
            else None
        ),
        archive=before is not None,
    )
    links = request.app[_LINKS]
    # The links name the token that carries them: removing it (it leaked) withdraws them.
    via = feeds.token_fingerprint(token)

    def offered(entry: SentEntry) -> list[tuple[str, str]]:
        # A feed row keeps no package list: the page asks which package, if any.
        return links.action_links(
            found.user, "rss", entry.message_id, found.nonce, has_packages=True, via=via
        )

    document = await in_thread(
        build_feed,
        found.user,
        found.entries,
        feed_url=feed_url,
        kind=kind,
        actions=offered,
        page=page,
    )
    return web.Response(
        body=document,
        headers={
            "Content-Type": f"{_FEED_TYPES[suffix]}; charset=utf-8",
            "Cache-Control": "private, max-age=60",
            "Referrer-Policy": "no-referrer",
        },
    )


# -- the live feed -------------------------------------------------------------------


def parse_since(value: str | None, name: str) -> int | None:
    """A ``since`` or ``Last-Event-ID`` value: a notification id, or None when absent.

    Only ASCII digits, at most 19 of them, no sign and no white space: anything
    else is refused with a 400 that says what is expected (``int()`` would
    accept ``²``-free Unicode digits, white space and signs, and fail with a
    traceback on 5,000 digits).
    """
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= _ID_MAX_DIGITS):
        raise web.HTTPBadRequest(
            text=f"{name} must be a notification id: 1 to {_ID_MAX_DIGITS} digits 0-9, "
            "with no sign or spaces\n"
        )
    number = int(value)
    if number > _ID_MAX:
        raise web.HTTPBadRequest(text=f"{name} is larger than any notification id\n")
    return number


async def _read_live(
    request: web.Request, token: str, user_id: int, **kwargs: Any
) -> tuple[list[SentEntry], feeds.Position | None] | None:
    """A live client's rows from the outbox (catch-up and the poll for other daemons');
    None once its token is no longer the user's."""
    try:
        return await _core(
            request, feeds.token_entries, "live", token, user_id, limit=_REPLAY_LIMIT, **kwargs
        )
    except SQLAlchemyError:
        log.warning("live: could not read the outbox", exc_info=True)
        return [], None


def _live_stream(request: web.Request, user_id: int, since: int | None) -> LiveStream:
    token = request.match_info["token"]

    async def read(**kwargs: Any) -> tuple[list[SentEntry], feeds.Position | None] | None:
        return await _read_live(request, token, user_id, **kwargs)

    return LiveStream(
        request.app[_LIVE], read, token, since, request.app[_STREAMS], page_size=_REPLAY_LIMIT
    )


async def _live_owner(request: web.Request) -> tuple[int, str] | None:
    return await _core(request, feeds.owner_of_address, "live", request.match_info["token"])


def _live_refused(reason: str, status: int) -> web.Response:
    headers = {"Retry-After": "30", "Cache-Control": "no-store"}
    return web.Response(text=reason + "\n", status=status, headers=headers)


@contextlib.asynccontextmanager
async def _live_client(request: web.Request) -> AsyncIterator[int | web.Response]:
    """The user id behind the request's live token, holding a live-client seat while the
    block runs; or the response that refuses the client (an unknown token, no seat)."""
    owner = await _live_owner(request)
    if owner is None:
        yield _not_found()
        return
    slots = request.app[_SLOTS]
    token = request.match_info["token"]
    reason = slots.take(token)
    if reason is not None:
        # 503 when the server is full (try later), 429 when this token holds its share.
        full = slots.in_use() >= slots.total
        log.info("live: refused a client: %s", reason)
        yield _live_refused(reason, 503 if full else 429)
        return
    try:
        yield owner[0]
    finally:
        slots.give_back(token)


async def _send(request: web.Request, write: Awaitable[None]) -> None:
    """One write to a live client, within ``http.send_timeout_seconds``."""
    # A client that stops reading fills its socket buffer, and the write then waits
    # forever, holding the connection and its seat: close it instead.
    await asyncio.wait_for(write, request.app[_CONFIG].http.send_timeout_seconds)


def _abort(request: web.Request) -> None:
    # The client stopped reading: drop the connection rather than wait for a
    # closing handshake or a final flush that would block just the same.
    log.info("live: closed a client that stopped reading")
    if request.transport is not None:
        request.transport.abort()


#: WebSocket handshake headers that aiohttp quotes or decodes when it refuses one.
_ASCII_HANDSHAKE_HEADERS = ("Upgrade", "Connection", "Sec-WebSocket-Version", "Sec-WebSocket-Key")


def _refuse_non_ascii_handshake(request: web.Request) -> None:
    """Answer a handshake header that is not ASCII with a 400 that quotes nothing.

    aiohttp's 400 for a bad handshake quotes the first three; a value that is not
    UTF-8 (the parser keeps such bytes as surrogates) then fails to encode, as with
    ``Expect`` (see :func:`_refuse_unknown_expectations`), and a key that is not
    ASCII fails its base64 decoding with an error aiohttp does not catch: the client
    got a 500 and the log a traceback. Valid values are ASCII tokens and base64.
    """
    for name in _ASCII_HANDSHAKE_HEADERS:
        value = request.headers.get(name)
        if value is not None and not value.isascii():
            raise web.HTTPBadRequest(
                text=f"The {name} header of a WebSocket handshake must be ASCII.\n"
            )


async def _live_ws(request: web.Request) -> web.StreamResponse:
    since = parse_since(request.query.get("since"), "since")
    _refuse_non_ascii_handshake(request)
    async with _live_client(request) as client:
        if isinstance(client, web.Response):
            return client
        # Clients have nothing to say but close: a small message limit.
        socket = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
        await socket.prepare(request)
        stream = _live_stream(request, client, since)
        reader = asyncio.create_task(_drain_client(socket), name="live-ws-reader")
        reader.add_done_callback(lambda _: stream.close())
        try:
            async with contextlib.aclosing(stream.events()) as batches:
                async for batch in batches:
                    if reader.done() or socket.closed:
                        break
                    for event in batch:
                        await _send(request, socket.send_json(event))
        except TimeoutError:
            _abort(request)
        except ConnectionError:
            pass
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if stream.revoked:
                # 1008: the client should not reconnect with this token.
                await socket.close(
                    code=WSCloseCode.POLICY_VIOLATION, message=b"this live token was removed"
                )
            else:
                await socket.close()
        return socket


async def _drain_client(socket: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, so a close is noticed."""
    async for message in socket:
        if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break


async def _live_sse(request: web.Request) -> web.StreamResponse:
    header = request.headers.get("Last-Event-ID")
    since = (
        parse_since(header, "Last-Event-ID")
        if header is not None
        else parse_since(request.query.get("since"), "since")
    )
    async with _live_client(request) as client:
        if isinstance(client, web.Response):
            return client
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        stream = _live_stream(request, client, since)
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        try:
            await _send(request, response.write(b"retry: 5000\n\n"))
            async with contextlib.aclosing(stream.events()) as batches:
                async for batch in batches:
                    for event in batch:
                        payload = json.dumps(event, separators=(",", ":"))
                        frame = f"id: {event['id']}\nevent: notification\ndata: {payload}\n\n"
                        await _send(request, response.write(frame.encode()))
                    if batch:
                        quiet_since = loop.time()
                    elif loop.time() - quiet_since >= SSE_HEARTBEAT_SECONDS:
                        quiet_since = loop.time()
                        await _send(request, response.write(b": keep-alive\n\n"))
        except TimeoutError:
            _abort(request)
        except ConnectionError:
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


async def _read_form(request: web.Request) -> Mapping[str, object] | None:
    """The POST's form within the body deadline; None for a garbled form (bad
    multipart boundary, bad encoding), which each caller refuses in its own words."""
    timeout = request.app[_CONFIG].http.body_timeout_seconds
    try:
        return await asyncio.wait_for(request.post(), timeout)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the request body did not arrive in time\n") from None
    except web.RequestPayloadError:
        # A body that does not follow its own Content-Encoding (gzip that isn't):
        # the client's mistake, said as such, not a server error.
        raise web.HTTPBadRequest(
            text="the request body could not be decoded as its Content-Encoding says; "
            "send it again unencoded or encoded as it says\n"
        ) from None
    except ValueError:
        return None


async def _one_click_body(request: web.Request) -> bool:
    """Whether the POST's body is RFC 8058's ``List-Unsubscribe=One-Click``."""
    form = await _read_form(request)
    return form is not None and form.get("List-Unsubscribe") == "One-Click"


async def _unsubscribe_post(request: web.Request) -> web.Response:
    named = request.app[_LINKS].verify_unsubscribe_token(request.match_info["token"])
    if named is None:
        return _not_found()
    # RFC 8058: the one-click POST carries this body. Without it, a POST is not a
    # mail client's one-click unsubscribe (a link prefetcher or a stray form).
    if not await _one_click_body(request):
        return _page(
            "Not unsubscribed",
            "<p>A one-click unsubscribe POST must carry the form body "
            "<code>List-Unsubscribe=One-Click</code> (RFC 8058). Open this link in a browser "
            "to use the form instead.</p>",
            status=400,
        )
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


# -- action links ----------------------------------------------------------------------


def _plan(session: Session, claim: ActionClaim) -> actions.ActionPlan:
    actor = actions.check_claim(session, claim)
    return actions.plan_action(
        session, actor, claim.message_id, claim.action, context=claim.context
    )


def _act(session: Session, claim: ActionClaim, choice: str | None, days: int | None) -> list[str]:
    actor = actions.check_claim(session, claim)
    return actions.act_on_notification(
        session,
        actor,
        claim.message_id,
        claim.action,
        context=claim.context,
        choice=choice,
        days=days,
    )


def _refused(exc: UserError) -> web.Response:
    status = 410 if isinstance(exc, ActionLinkRefused) else 400
    return _page("Nothing was changed", f"<p>{html.escape(str(exc))}</p>", status=status)


def _list(items: list[str] | tuple[str, ...]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>"


async def _action_page(request: web.Request) -> web.Response:
    token = request.match_info["token"]
    claim = request.app[_LINKS].verify_action_token(token)
    if claim is None:
        return _not_found()
    try:
        plan = await _core(request, _plan, claim)
    except UserError as exc:
        return _refused(exc)
    if plan.unavailable:
        return _page(plan.title, f"<p>Not available: {html.escape(plan.unavailable)}</p>")
    action = html.escape(f"/act/{token}", quote=True)
    if actions.describe_choices(plan):
        buttons = "".join(
            f"<button type='submit' name='choice' value='{html.escape(c, quote=True)}'>"
            f"Mute {html.escape(c)}</button> "
            for c in plan.choices
        )
    else:
        buttons = "<button type='submit'>Apply</button>"
    mute = plan.action in ("mute-package", "mute-app")
    duration = (
        "<p><label>For <select name='days'><option value=''>good</option>"
        "<option value='7'>7 days</option><option value='30'>30 days</option>"
        "<option value='90'>90 days</option></select></label></p>"
        if mute
        else ""
    )
    body = (
        f"<p>For <b>{html.escape(plan.user)}</b>, this will make these changes:</p>"
        f"{_list(plan.changes)}"
        f"<form method='post' action='{action}'>{duration}{buttons}</form>"
        "<p>Undo them any time in the fmn TUI or with the fmn bot.</p>"
    )
    return _page(plan.title, body)


async def _action_post(request: web.Request) -> web.Response:
    claim = request.app[_LINKS].verify_action_token(request.match_info["token"])
    if claim is None:
        return _not_found()
    form = await _read_form(request)
    if form is None:
        return _page("Nothing was changed", "<p>The form could not be read.</p>", status=400)
    choice = form.get("choice")
    days_text = form.get("days")
    days: int | None = None
    if isinstance(days_text, str) and days_text.strip():
        typed = days_text.strip()
        # ASCII digits only: "²" is a digit to str.isdigit(), and int() refuses it.
        if not (typed.isascii() and typed.isdigit()) or len(typed) > 3:
            return _page("Nothing was changed", "<p>days must be a whole number.</p>", status=400)
        days = int(typed)
    try:
        written = await _core(
            request, _act, claim, choice if isinstance(choice, str) and choice else None, days
        )
    except UserError as exc:
        return _refused(exc)
    log.info("user %s used a %s link", claim.user, claim.action)
    return _page("Done", f"<p>fmn wrote:</p>{_list(written)}")


# -- the application -------------------------------------------------------------------


def _refuse_unknown_expectations(router: web.UrlDispatcher) -> None:
    """Answer an ``Expect`` header other than ``100-continue`` with a 417 that quotes nothing.

    aiohttp runs its own expectation handler before any middleware, and its 417 quotes
    the header; a value that is not UTF-8 (the parser keeps such bytes as surrogates)
    then fails to encode and the client gets a 500 with an error in the log. The check
    runs where the route is resolved, before aiohttp's handler, on every path.
    """
    resolve = router.resolve

    async def resolve_checked(request: web.Request) -> web.UrlMappingMatchInfo:
        expect = request.headers.get("Expect")
        # aiohttp honours expectations on HTTP/1.1 only, and so does this.
        if expect and request.version == (1, 1) and expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(
                text="The only expectation this server meets is 100-continue.\n"
            )
        return await resolve(request)

    router.resolve = resolve_checked  # type: ignore[method-assign]


@web.middleware
async def _report_request(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # A request head arrived whole: its connection's header deadline is met.
    request.app[_GUARD].request_started(request.protocol)
    return await handler(request)


def build_app(
    config: Config,
    db: Database,
    metrics: Metrics,
    live: LiveHub | None = None,
    *,
    links: Links | None = None,
) -> web.Application:
    """The aiohttp application with every endpoint."""
    app = web.Application(middlewares=[_report_request], client_max_size=config.http.max_body_bytes)
    app[_CONFIG] = config
    app[_DB] = db
    app[_METRICS] = metrics
    app[_LIVE] = live if live is not None else LiveHub()
    app[_LINKS] = links if links is not None else Links.from_config(config)
    app[_GUARD] = ConnectionGuard(config.http)
    app[_SLOTS] = LiveSlots(config.http.max_live_clients, config.http.max_live_clients_per_token)
    streams: set[LiveStream] = set()
    app[_STREAMS] = streams

    async def closing(app: web.Application) -> None:
        # Ends live streams so shutdown does not wait for their clients.
        open_streams: set[LiveStream] = app[_STREAMS]
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
    app.router.add_get("/act/{token}", _action_page)
    app.router.add_post("/act/{token}", _action_post)
    _refuse_unknown_expectations(app.router)
    return app


class HttpServer:
    """The running endpoints: ``await server.cleanup()`` stops them."""

    def __init__(
        self,
        runner: web.AppRunner,
        server: asyncio.Server,
        guard: ConnectionGuard,
        accept_errors: AcceptErrorLog,
    ) -> None:
        self.runner = runner
        self.server = server
        self.guard = guard
        self.accept_errors = accept_errors

    @property
    def port(self) -> int:
        """The port the server listens on (useful with ``http.port = 0``)."""
        return int(self.server.sockets[0].getsockname()[1])

    async def cleanup(self) -> None:
        """Stop accepting, end live streams and open requests, restore the loop's handler."""
        self.server.close()
        try:
            await self.runner.cleanup()
        finally:
            self.accept_errors.uninstall()


async def start_http(
    config: Config,
    db: Database,
    metrics: Metrics,
    live: LiveHub | None = None,
    *,
    links: Links | None = None,
) -> HttpServer:
    """Serve the endpoints on ``http.host``:``http.port``; ``await server.cleanup()`` stops.

    The listening socket is made here rather than by aiohttp's ``TCPSite``: its
    protocol factory is the :class:`~fmn_daemon.limits.ConnectionGuard` around
    aiohttp's, which caps connections and closes slow request heads (see
    :mod:`fmn_daemon.limits` for why there).
    """
    settings = config.http
    app = build_app(config, db, metrics, live, links=links)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=5.0,
        keepalive_timeout=settings.keepalive_timeout_seconds,
        # How long to read and drop a body no handler wanted before closing.
        lingering_time=min(settings.body_timeout_seconds, 5.0),
        logger=ServerErrorLog(
            logging.getLogger("aiohttp.server"), settings.accept_error_log_seconds
        ),
    )
    await runner.setup()
    guard = app[_GUARD]
    guard.max_connections = connection_cap(settings.max_connections)
    if guard.max_connections < settings.max_connections:
        log.warning(
            "HTTP: serving at most %d connections, not http.max_connections = %d: the "
            "descriptor limit (LimitNOFILE) leaves no more beside the broker and database",
            guard.max_connections,
            settings.max_connections,
        )
    assert runner.server is not None
    guard.server = runner.server
    accept_errors = AcceptErrorLog(settings.accept_error_log_seconds)
    loop = asyncio.get_running_loop()
    try:
        # asyncio accepts up to ``backlog`` connections per pass of the loop before the
        # refused ones are closed: 128 keeps that burst inside DESCRIPTOR_RESERVE.
        server = await loop.create_server(
            guard, settings.host, settings.port, backlog=ACCEPT_BACKLOG
        )
    except BaseException:
        await runner.cleanup()
        raise
    accept_errors.install(loop)
    log.info("HTTP endpoints on http://%s:%d", settings.host, settings.port)
    return HttpServer(runner, server, guard, accept_errors)
