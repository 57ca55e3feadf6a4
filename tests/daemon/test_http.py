"""The daemon's HTTP endpoints, on a real aiohttp server with a real client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from core.test_outbox import add_notification, add_user

from daemon.conftest import SmtpServer, free_port
from fmn_core import preferences
from fmn_core.config import Config, HttpConfig, SmtpConfig
from fmn_core.db import Database, make_engine
from fmn_core.models import Base
from fmn_core.rendering import Links
from fmn_daemon.delivery import Senders
from fmn_daemon.http import start_http
from fmn_daemon.metrics import Metrics
from fmn_daemon.transports.live import LiveHub


def sqlite_database(tmp_path: Path) -> Database:
    """A SQLite file database: the HTTP server's handlers may use it from several threads."""
    url = f"sqlite:///{tmp_path / 'fmn.sqlite'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    return Database(Config(database_url=url, http=HttpConfig(secret_key="test-key")), engine)


@pytest.fixture
def web_db(tmp_path: Path) -> Database:
    return sqlite_database(tmp_path)


def http_config(db: Database, **smtp: Any) -> Config:
    port = free_port()
    return db.config.replace(
        http=HttpConfig(
            host="127.0.0.1",
            port=port,
            public_url=f"http://127.0.0.1:{port}",
            secret_key="test-key",
        ),
        smtp=SmtpConfig(**smtp) if smtp else db.config.smtp,
    )


@asynccontextmanager
async def serving(
    config: Config, db: Database, metrics: Metrics | None = None, live: LiveHub | None = None
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """The endpoints running on loopback, and a client session for them."""
    runner = await start_http(config, db, metrics or Metrics(), live or LiveHub())
    try:
        async with aiohttp.ClientSession() as client:
            yield f"http://127.0.0.1:{config.http.port}", client
    finally:
        await runner.cleanup()


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


# -- health ---------------------------------------------------------------------------


def test_http_liveness_follows_the_main_loop_tick(web_db: Database) -> None:
    metrics = Metrics()

    async def scenario() -> list[int]:
        statuses = []
        async with serving(http_config(web_db), web_db, metrics) as (base, client):
            metrics.tick()
            async with client.get(f"{base}/live") as response:
                statuses.append(response.status)
            metrics.last_tick = time.monotonic() - 3600
            async with client.get(f"{base}/live") as response:
                statuses.append(response.status)
        return statuses

    assert run(scenario) == [200, 503]


def test_http_readiness_follows_metrics_ready(web_db: Database) -> None:
    metrics = Metrics()

    async def scenario() -> list[int]:
        statuses = []
        async with serving(http_config(web_db), web_db, metrics) as (base, client):
            async with client.get(f"{base}/ready") as response:
                statuses.append(response.status)
            metrics.ready = True
            async with client.get(f"{base}/ready") as response:
                statuses.append(response.status)
        return statuses

    assert run(scenario) == [503, 200]


def test_http_metrics_lists_counters_and_outbox_states(web_db: Database) -> None:
    metrics = Metrics()
    metrics.inc("notifications_sent", 3)
    with web_db.begin() as session:
        user = add_user(session, "jo")
        add_notification(session, user, state="dead")
        add_notification(session, user)

    async def scenario() -> str:
        async with (
            serving(http_config(web_db), web_db, metrics) as (base, client),
            client.get(f"{base}/metrics") as response,
        ):
            assert response.status == 200
            assert response.content_type == "text/plain"
            return await response.text()

    text = run(scenario)
    lines = set(text.splitlines())
    assert "fmn_notifications_sent_total 3" in lines
    assert "fmn_notifications_dead_total 0" in lines
    assert 'fmn_outbox_notifications{state="dead"} 1' in lines
    assert 'fmn_outbox_notifications{state="pending"} 1' in lines
    assert "fmn_ready 0" in lines


# -- one-click unsubscribe ------------------------------------------------------------


def email_enabled(db: Database, user: str) -> bool:
    with db.begin() as session:
        return preferences.get_context(session, preferences.Actor(user), "email").enabled


def test_http_unsubscribe_page_shows_a_post_form(web_db: Database) -> None:
    config = http_config(web_db)
    token = Links.from_config(config).unsubscribe_token("jo", "email")

    async def scenario() -> tuple[int, str]:
        async with (
            serving(config, web_db) as (base, client),
            client.get(f"{base}/unsubscribe/{token}") as response,
        ):
            return response.status, await response.text()

    status, page = run(scenario)
    assert status == 200
    assert "method='post'" in page and f"/unsubscribe/{token}" in page
    assert "jo" in page and "email" in page


def test_http_one_click_unsubscribe_turns_email_off(web_db: Database) -> None:
    with web_db.begin() as session:
        add_user(session, "jo")
        add_user(session, "al", addresses=("al@example.org",))
    config = http_config(web_db)
    token = Links.from_config(config).unsubscribe_token("jo", "email")

    async def scenario() -> int:
        async with (
            serving(config, web_db) as (base, client),
            client.post(
                f"{base}/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}
            ) as response,
        ):
            return response.status

    assert run(scenario) == 200
    assert not email_enabled(web_db, "jo")
    assert email_enabled(web_db, "al")


def test_http_tampered_unsubscribe_token_changes_nothing(web_db: Database) -> None:
    with web_db.begin() as session:
        add_user(session, "jo")
        add_user(session, "al", addresses=("al@example.org",))
    config = http_config(web_db)
    links = Links.from_config(config)
    jo_token = links.unsubscribe_token("jo", "email")
    al_name = links.unsubscribe_token("al", "email").split(".")[0]
    forged = [
        f"{al_name}.{jo_token.split('.')[1]}",  # al's name, jo's signature
        jo_token[:-3] + ("AAA" if not jo_token.endswith("AAA") else "BBB"),
        Links(public_url="x", secret=b"guessed").unsubscribe_token("al", "email"),
        "garbage",
    ]

    async def scenario() -> list[int]:
        statuses = []
        async with serving(config, web_db) as (base, client):
            for token in forged:
                async with client.post(f"{base}/unsubscribe/{token}") as response:
                    statuses.append(response.status)
                async with client.get(f"{base}/unsubscribe/{token}") as response:
                    statuses.append(response.status)
        return statuses

    assert run(scenario) == [404] * 8
    assert email_enabled(web_db, "jo") and email_enabled(web_db, "al")


def test_http_list_unsubscribe_from_a_delivered_mail_works(
    web_db: Database, smtp_server: SmtpServer
) -> None:
    with web_db.begin() as session:
        add_notification(session, add_user(session, "jo"))
    config = http_config(web_db, host=smtp_server.host, port=smtp_server.port, timeout_seconds=5)

    async def scenario() -> int:
        await Senders(web_db, config, Metrics(), LiveHub()).drain(10)
        (mail,) = smtp_server.wait_for(1)
        target = str(mail.message["List-Unsubscribe"]).strip("<> \n")
        assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        # What a mail client does for RFC 8058 one-click unsubscribe.
        async with (
            serving(config, web_db) as (_base, client),
            client.post(
                target,
                data="List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ) as response,
        ):
            return response.status

    assert run(scenario) == 200
    assert not email_enabled(web_db, "jo")
