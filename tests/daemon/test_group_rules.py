"""Group rules follow memberships as Fedora Accounts announces them on the bus.

The daemon's ingest runs against a FASJSON-compatible server on loopback whose
answers are cached for an hour: only the bus's account and group messages make
the matcher see a membership change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fasjson_server import FasjsonServer, running_fasjson
from fedora_messaging import message as fm_message
from koschei_messages.package import PackageStateChange
from noggin_messages import MemberRemovedV1, MemberSponsorV1
from sqlalchemy import select

from fmn_core.db import Database
from fmn_core.fasjson import FasjsonDirectory
from fmn_core.matcher import Matcher
from fmn_core.models import Notification, User
from fmn_core.ownership import OwnershipCache
from fmn_daemon.ingest import ingest_batch

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
    return _ident(MemberSponsorV1(
        topic=PROD + "fas.group.member.sponsor",
        body={"msg": {"agent": "admin", "user": user, "group": group}},
    ))


def _removed(user: str, group: str) -> fm_message.Message:
    return _ident(MemberRemovedV1(
        topic=PROD + "fas.group.member.removed",
        body={"msg": {"agent": "admin", "user": user, "group": group}},
    ))


def _koschei(package: str) -> fm_message.Message:
    return _ident(PackageStateChange(
        topic=PROD + "koschei.package.state.change",
        body={"collection": "f40", "collection_name": "Fedora 40", "groups": [],
              "koji_instance": "primary", "name": package, "new": "failing", "old": "ok",
              "repo": "f40"},
    ))


def _ident(message: fm_message.Message) -> fm_message.Message:
    message.id = str(uuid.uuid4())
    return message


def _received(db: Database, user: str, messages: list[fm_message.Message]) -> list[str]:
    """Which of these messages reached ``user``'s outbox (their ids)."""
    ids = [m.id for m in messages]
    with db.begin() as session:
        found = set(session.scalars(
            select(Notification.message_id).join(User, User.id == Notification.user_id)
            .where(User.name == user, Notification.message_id.in_(ids))
        ))
    return [i for i in ids if i in found]


def test_group_rules_follow_membership_messages(db: Database, fasjson: FasjsonServer) -> None:
    directory = FasjsonDirectory(fasjson.url, auth="none", cache_seconds=3600)
    with db.begin() as session:
        add_filter(session, "alice", [("member_of_group_involved", {})], name="groups")
        add_filter(session, "bob", [("package_owned_by_my_groups", {})], name="packages")
    ownership = OwnershipCache([("rpms", "python-requests", "@python-sig"),
                                ("rpms", "kernel", "@kernel-maint")])
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
    assert _received(db, "alice", ingest(_removed("alice", "python-sig"),
                                         _sponsored("carol", "python-sig"))) == []
