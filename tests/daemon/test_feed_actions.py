"""A feed's action links go with its token: removing the token (it leaked) withdraws them.

The feed is read and its links followed over real HTTP against the daemon's server;
the token is removed and made again through the preference service, as the TUI and
the bot do. Links sent by mail are not tied to a token and keep working.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import feedparser
import pytest
from core.test_outbox import add_message, add_notification
from sqlalchemy import select

from daemon.test_feed_paging import feed_database
from daemon.test_http import http_config, run, serving
from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.models import Rule, User, utcnow
from fmn_core.preferences import Actor
from fmn_core.rendering import Links


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with feed_database(request.param, tmp_path) as db:
        yield db


def _setup(db: Database, tokens: int) -> tuple[list[tuple[int, str]], str]:
    """Jo, with ``tokens`` feed tokens and an ``updates`` filter in rss and in email, and a
    message both sent; the (id, token) of each feed destination and the message id."""
    with db.begin() as session:
        jo = Actor("jo")
        for context in ("rss", "email"):
            preferences.add_filter(session, jo, context, "updates")
        made = [preferences.set_destination(session, jo, "rss", None) for _ in range(tokens)]
        user = session.scalars(select(User).where(User.name == "jo")).one()
        message = add_message(session)
        for context in ("rss", "email"):
            add_notification(
                session,
                user,
                context,
                message,
                state="sent",
                sent_at=utcnow(),
                filter_name="updates",
            )
        return [(m.destination.id, m.destination.address) for m in made], message.id


def _feed_links(body: bytes) -> list[str]:
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.bozo_exception
    links: list[str] = re.findall(r"https?://\S+/act/[\w.-]+", parsed.entries[0].summary)
    assert len(links) == 4
    return links


def _negated_rules(db: Database) -> int:
    with db.begin() as session:
        return len(session.scalars(select(Rule).where(Rule.negated.is_(True))).all())


def test_feed_action_links_stop_working_once_their_token_is_removed(
    any_db: Database,
) -> None:
    config = http_config(any_db)
    ((destination, token),), message_id = _setup(any_db, 1)
    mail = Links.from_config(config).action_links("jo", "email", message_id, 0, has_packages=True)
    mute_app_by_mail = next(url for title, url in mail if title == "Mute this application")

    async def scenario() -> list[int]:
        statuses = []
        async with serving(config, any_db) as (base, client):
            async with client.get(f"{base}/feeds/{token}.atom") as response:
                old_links = _feed_links(await response.read())
            async with client.get(old_links[1]) as response:
                statuses.append(response.status)
            # Jo rotates the token: removes the one that leaked, makes a new one.
            with any_db.begin() as session:
                preferences.remove_destination(session, Actor("jo"), "rss", destination)
                new = preferences.set_destination(session, Actor("jo"), "rss", None)
            for link in old_links:
                async with client.get(link) as response:
                    statuses.append(response.status)
                    assert "feed whose address you have since removed" in await response.text()
                async with client.post(link, data={"days": "7"}) as response:
                    statuses.append(response.status)
            # What the new address's feed carries works, and so do the mailed links.
            async with client.get(f"{base}/feeds/{new.destination.address}.atom") as response:
                new_links = _feed_links(await response.read())
            async with client.get(new_links[1]) as response:
                statuses.append(response.status)
            async with client.get(mute_app_by_mail) as response:
                statuses.append(response.status)
            async with client.post(mute_app_by_mail) as response:
                statuses.append(response.status)
        return statuses

    assert run(scenario) == [200] + [410] * 8 + [200, 200, 200]
    assert _negated_rules(any_db) == 1  # only the mailed link wrote


def test_feed_action_links_hold_while_their_own_token_is_kept(
    any_db: Database,
) -> None:
    config = http_config(any_db)
    (kept, (other, _)), _ = _setup(any_db, 2)

    async def scenario() -> list[int]:
        statuses = []
        async with serving(config, any_db) as (base, client):
            async with client.get(f"{base}/feeds/{kept[1]}.rss") as response:
                links = _feed_links(await response.read())
            with any_db.begin() as session:
                preferences.remove_destination(session, Actor("jo"), "rss", other)
            async with client.get(links[1]) as response:
                statuses.append(response.status)
            with any_db.begin() as session:
                preferences.remove_destination(session, Actor("jo"), "rss", kept[0])
            async with client.get(links[1]) as response:
                statuses.append(response.status)
        return statuses

    assert run(scenario) == [200, 410]
