"""Identity in the preference service: accounts must exist, profile addresses need no code."""

from __future__ import annotations

import pytest
from fasjson_server import FasjsonServer
from sqlalchemy import select

from fmn_core import preferences
from fmn_core.db import Database
from fmn_core.errors import PermissionDenied, RateLimited, UnknownAccount
from fmn_core.fasjson import FasjsonDirectory
from fmn_core.models import User
from fmn_core.preferences import Actor


@pytest.fixture
def directory(fasjson: FasjsonServer) -> FasjsonDirectory:
    fasjson.add_user("alice", emails=["alice@example.org"], ircnicks=["irc:/Alice_W"])
    fasjson.add_user("root-admin")
    return FasjsonDirectory(fasjson.url, auth="none")


def test_preferences_are_made_only_for_accounts_that_exist(
    db: Database, directory: FasjsonDirectory
) -> None:
    admin = Actor("root-admin", is_admin=True)
    with db.begin() as session:
        session.info["directory"] = directory
        with pytest.raises(UnknownAccount, match="no Fedora account named 'ghost'"):
            preferences.add_filter(session, admin, "email", "f", user="ghost")
        with pytest.raises(UnknownAccount):
            preferences.set_destination(session, Actor("ghost"), "email", "g@example.org")
        preferences.add_filter(session, admin, "email", "f", user="alice")
    with db.begin() as session:
        assert list(session.scalars(select(User.name))) == ["alice"]


def test_profile_email_needs_no_code_other_addresses_do(
    db: Database, directory: FasjsonDirectory
) -> None:
    alice = Actor("alice", irc_account="Alice_W")
    with db.begin() as session:
        session.info["directory"] = directory
        assert preferences.profile_addresses(session, alice) == {
            "email": ("alice@example.org",),
            "irc": ("Alice_W",),
        }
        profile = preferences.set_destination(session, alice, "email", "alice@example.org")
        other = preferences.set_destination(session, alice, "email", "else@example.org")
        own_nick = preferences.set_destination(session, alice, "irc", "alice_w")
        # A nick in the profile that isn't the account alice is identified as: a code.
        stranger = preferences.set_destination(session, Actor("alice"), "irc", "alice_w2")
    assert (profile.destination.confirmed, profile.code) == (True, None)
    assert not other.destination.confirmed and other.code
    assert (own_nick.destination.confirmed, own_nick.code) == (True, None)
    assert not stranger.destination.confirmed and stranger.code


def test_a_pending_profile_email_is_confirmed_when_set_again(
    db: Database, directory: FasjsonDirectory, fasjson: FasjsonServer
) -> None:
    alice = Actor("alice")
    with db.begin() as session:
        session.info["directory"] = directory
        first = preferences.set_destination(session, alice, "email", "new@example.org")
    assert first.code
    fasjson.add_user("alice", emails=["alice@example.org", "new@example.org"])
    directory.forget(accounts=["alice"])
    with db.begin() as session:
        session.info["directory"] = directory
        again = preferences.set_destination(session, alice, "email", "new@example.org")
    assert (again.destination.confirmed, again.code) == (True, None)


def test_an_admin_sees_the_targets_profile_not_their_own(
    db: Database, directory: FasjsonDirectory
) -> None:
    admin = Actor("root-admin", is_admin=True, irc_account="rootadmin")
    with db.begin() as session:
        session.info["directory"] = directory
        assert preferences.profile_addresses(session, admin, user="alice") == {
            "email": ("alice@example.org",)
        }
        with pytest.raises(PermissionDenied):
            preferences.profile_addresses(session, Actor("root-admin"), user="alice")


def test_profile_email_is_set_even_with_codes_pending(
    db: Database, directory: FasjsonDirectory
) -> None:
    alice = Actor("alice")
    with db.begin() as session:
        session.info["directory"] = directory
        for n in range(preferences.MAX_PENDING_PER_CONTEXT):
            preferences.set_destination(session, alice, "email", f"p{n}@example.org")
        with pytest.raises(RateLimited):
            preferences.set_destination(session, alice, "email", "one-more@example.org")
        verified = preferences.set_destination(session, alice, "email", "alice@example.org")
    assert verified.destination.confirmed


def test_directory_outage_means_a_code_not_a_failure(
    db: Database, directory: FasjsonDirectory, fasjson: FasjsonServer
) -> None:
    alice = Actor("alice")
    with db.begin() as session:
        session.info["directory"] = directory
        preferences.add_filter(session, alice, "email", "f")  # alice's row exists
    fasjson.failing = 503
    fresh = FasjsonDirectory(fasjson.url, auth="none")  # nothing remembered
    with db.begin() as session:
        session.info["directory"] = fresh
        pending = preferences.set_destination(session, alice, "email", "alice@example.org")
    assert not pending.destination.confirmed and pending.code


def test_preview_knows_my_groups(
    db: Database, directory: FasjsonDirectory, fasjson: FasjsonServer
) -> None:
    from noggin_messages import MemberSponsorV1

    from fmn_core.models import StoredMessage, utcnow

    fasjson.set_groups("python-sig", ["alice"])
    sponsor = MemberSponsorV1(
        topic="org.fedoraproject.prod.fas.group.member.sponsor",
        body={"msg": {"agent": "admin", "user": "carol", "group": "python-sig"}},
    )
    alice = Actor("alice")
    with db.begin() as session:
        session.info["directory"] = directory
        session.add(
            StoredMessage(
                id=sponsor.id,
                topic=sponsor.topic,
                body=sponsor.body,
                headers=sponsor._headers,
                received_at=utcnow(),
            )
        )
        preferences.add_filter(session, alice, "email", "mine")
        preferences.add_rule(session, alice, "email", "mine", "member_of_group_involved", {})
        hits = preferences.preview(session, alice, "email", "mine")
    assert [hit.message_id for hit in hits] == [sponsor.id]
