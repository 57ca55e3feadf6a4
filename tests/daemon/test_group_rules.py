"""Group rules follow memberships as Fedora Accounts announces them on the bus.

The daemon's ingest runs against a FASJSON-compatible server on loopback whose
answers are cached for an hour: only the bus's account and group messages make
the matcher see a membership change.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fasjson_server import FasjsonServer, running_fasjson
from fedora_messaging import message as fm_message
from koschei_messages.package import PackageStateChange
from noggin_messages import MemberRemovedV1, MemberSponsorV1
from sqlalchemy import func, select

from fmn_core.config import AccountsConfig, Config
from fmn_core.db import Database
from fmn_core.fasjson import FasjsonDirectory
from fmn_core.matcher import Matcher
from fmn_core.models import Notification, StoredMessage, User
from fmn_core.ownership import OwnershipCache
from fmn_core.schema import upgrade
from fmn_daemon.consumer import Consumer, load_broker_settings
from fmn_daemon.ingest import ingest_batch
from fmn_daemon.metrics import Metrics

from .conftest import RabbitMQ, publish
from .test_ingest import add_filter

PROD = "org.fedoraproject.prod."


@pytest.fixture
def fasjson() -> Iterator[FasjsonServer]:
    with running_fasjson() as server:
        for name in ("alice", "bob", "carol", "admin"):
            server.add_user(name)
        server.set_groups("python-sig", ["carol"])
        yield server


def _sponsored(user: str, group: str) -> fm_message.Message:
    return _ident(
        MemberSponsorV1(
            topic=PROD + "fas.group.member.sponsor",
            body={"msg": {"agent": "admin", "user": user, "group": group}},
        )
    )


def _removed(user: str, group: str) -> fm_message.Message:
    return _ident(
        MemberRemovedV1(
            topic=PROD + "fas.group.member.removed",
            body={"msg": {"agent": "admin", "user": user, "group": group}},
        )
    )


def _koschei(package: str) -> fm_message.Message:
    return _ident(
        PackageStateChange(
            topic=PROD + "koschei.package.state.change",
            body={
                "collection": "f40",
                "collection_name": "Fedora 40",
                "groups": [],
                "koji_instance": "primary",
                "name": package,
                "new": "failing",
                "old": "ok",
                "repo": "f40",
            },
        )
    )


def _ident(message: fm_message.Message) -> fm_message.Message:
    message.id = str(uuid.uuid4())
    return message


def _received(db: Database, user: str, messages: list[fm_message.Message]) -> list[str]:
    """Which of these messages reached ``user``'s outbox (their ids)."""
    ids = [m.id for m in messages]
    with db.begin() as session:
        found = set(
            session.scalars(
                select(Notification.message_id)
                .join(User, User.id == Notification.user_id)
                .where(User.name == user, Notification.message_id.in_(ids))
            )
        )
    return [i for i in ids if i in found]


def test_group_rules_follow_membership_messages(db: Database, fasjson: FasjsonServer) -> None:
    directory = FasjsonDirectory(fasjson.url, auth="none", cache_seconds=3600)
    with db.begin() as session:
        add_filter(session, "alice", [("member_of_group_involved", {})], name="groups")
        add_filter(session, "bob", [("package_owned_by_my_groups", {})], name="packages")
    ownership = OwnershipCache(
        [("rpms", "python-requests", "@python-sig"), ("rpms", "kernel", "@kernel-maint")]
    )
    with db.begin() as session:
        matcher = Matcher.load(session, ownership=ownership, membership=directory)

    def ingest(*messages: fm_message.Message) -> list[fm_message.Message]:
        with db.begin() as session:
            ingest_batch(session, matcher, list(messages))
        return list(messages)

    before = ingest(_sponsored("carol", "python-sig"), _koschei("python-requests"))
    assert _received(db, "alice", before) == []
    assert _received(db, "bob", before) == []

    # Fedora Accounts changes, but nothing is announced: the cached answer holds.
    fasjson.set_groups("python-sig", ["carol", "alice", "bob"])
    quiet = ingest(_koschei("python-requests"), _sponsored("carol", "python-sig"))
    assert _received(db, "alice", quiet) == []
    assert _received(db, "bob", quiet) == []

    # The announcements: alice's own message already names the group she is now in.
    announced = ingest(_sponsored("alice", "python-sig"), _sponsored("bob", "python-sig"))
    assert _received(db, "alice", announced) == [m.id for m in announced]
    after = ingest(_koschei("python-requests"), _koschei("kernel"), _sponsored("carol", "qa"))
    assert _received(db, "bob", after) == [after[0].id]  # python-sig's package, not kernel's
    assert _received(db, "alice", after) == []  # koschei names no group; qa isn't hers

    fasjson.set_groups("python-sig", ["carol"])
    gone = ingest(_removed("bob", "python-sig"), _koschei("python-requests"))
    assert _received(db, "bob", gone) == []
    assert (
        _received(
            db, "alice", ingest(_removed("alice", "python-sig"), _sponsored("carol", "python-sig"))
        )
        == []
    )


def test_a_redelivered_membership_message_is_followed_again(
    db: Database, fasjson: FasjsonServer
) -> None:
    """A redelivery's first delivery was committed, perhaps by another process whose
    matcher followed it: this one reads the accounts it names again all the same."""
    with db.begin() as session:
        add_filter(session, "bob", [("package_owned_by_my_groups", {})], name="packages")
    ownership = OwnershipCache([("rpms", "python-requests", "@python-sig")])
    with db.begin() as session:
        matcher, other = (
            Matcher.load(
                session,
                ownership=ownership,
                membership=FasjsonDirectory(fasjson.url, auth="none", cache_seconds=3600),
            )
            for _ in range(2)
        )
    before = [_koschei("python-requests")]
    with db.begin() as session:
        ingest_batch(session, matcher, before)
    assert _received(db, "bob", before) == []

    fasjson.set_groups("python-sig", ["carol", "bob"])
    sponsored = _sponsored("bob", "python-sig")
    with db.begin() as session:  # stored by the other process, which then lost its ack
        ingest_batch(session, other, [sponsored])
    package = _koschei("python-requests")
    with db.begin() as session:
        result = ingest_batch(session, matcher, [sponsored, package])
    assert (result.stored, result.duplicates) == (1, 1)
    assert _received(db, "bob", [package]) == [package.id]


@pytest.mark.rabbitmq
def test_consumer_follows_membership_announced_on_the_bus(
    tmp_path: Path, rabbitmq: RabbitMQ, fasjson: FasjsonServer
) -> None:
    """The running consumer, RabbitMQ and FASJSON: a sponsorship on the bus makes the
    next message about the group reach the new member; a removal stops it."""
    url = f"sqlite:///{tmp_path / 'consumer.sqlite'}"
    upgrade(url)
    accounts = AccountsConfig(
        provider="fasjson", fasjson_url=fasjson.url, fasjson_auth="none", cache_seconds=3600
    )
    database = Database(Config(database_url=url, accounts=accounts))
    with database.begin() as session:
        add_filter(session, "alice", [("member_of_group_involved", {})], name="groups")
    consumer = Consumer(
        database,
        load_broker_settings(rabbitmq.config_path),
        Metrics(),
        backoff_initial=0.1,
        backoff_max=0.5,
    )
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    try:
        consumer.load_matcher()
        consumer.connect()
        thread.start()

        def settle(*messages: fm_message.Message) -> list[fm_message.Message]:
            publish(rabbitmq, list(messages))
            _wait(lambda: _stored(database, messages))
            return list(messages)

        fasjson.set_groups("python-sig", ["carol", "alice"])  # not announced yet
        quiet = settle(_sponsored("carol", "python-sig"))
        assert _received(database, "alice", quiet) == []
        announced = settle(_sponsored("alice", "python-sig"))
        later = settle(_sponsored("bob", "python-sig"))
        assert _received(database, "alice", announced + later) == [announced[0].id, later[0].id]
        fasjson.set_groups("python-sig", ["carol", "bob"])
        settle(_removed("alice", "python-sig"))
        after = settle(_sponsored("dave", "python-sig"))
        assert _received(database, "alice", after) == []
    finally:
        stop.set()
        thread.join(15)
        database.dispose()
    assert not thread.is_alive()


def _stored(database: Database, messages: tuple[fm_message.Message, ...]) -> bool:
    with database.begin() as session:
        found = session.scalar(
            select(func.count())
            .select_from(StoredMessage)
            .where(StoredMessage.id.in_([m.id for m in messages]))
        )
    return bool(found == len(messages))


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
